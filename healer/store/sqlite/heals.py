"""Heals and their timelines (events) in SQLite: their tables, the writes of a heal's
life (created, events, phase, interrupted, finished) and the history reads.

Every function takes the store's connection and runs on its writer thread
(:mod:`healer.store.sqlite.writer`), inside the caller's write or read."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Collection, Sequence
from typing import Any

from healer.errors import LeaseLost
from healer.outcomes import Outcome, Phase
from healer.redact import redact_data
from healer.store import rows
from healer.store.types import (
    HealDetail,
    HealPlan,
    HealRow,
    ReceivedAlert,
    Replica,
    TakenHeal,
    dumps,
    new_heal_id,
)

DDL = (
    """CREATE TABLE IF NOT EXISTS heals (
    id           TEXT PRIMARY KEY,
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL,
    source       TEXT NOT NULL,
    rule         TEXT,
    handler      TEXT NOT NULL,
    fingerprint  TEXT,
    alert_starts_at TEXT,
    labels       TEXT NOT NULL,
    annotations  TEXT NOT NULL,
    params       TEXT NOT NULL,
    verify       TEXT NOT NULL,
    dry_run      INTEGER NOT NULL,
    targets      TEXT NOT NULL DEFAULT '[]',
    phase        TEXT NOT NULL,
    outcome      TEXT,
    reason       TEXT,
    finished_at  REAL,
    durations    TEXT NOT NULL DEFAULT '{}'
)""",
    "CREATE INDEX IF NOT EXISTS heals_by_time ON heals (created_at DESC)",
    "CREATE INDEX IF NOT EXISTS heals_open ON heals (phase) WHERE phase != 'done'",
    """CREATE TABLE IF NOT EXISTS events (
    heal_id TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    at      REAL NOT NULL,
    phase   TEXT NOT NULL,
    kind    TEXT NOT NULL,
    data    TEXT NOT NULL,
    PRIMARY KEY (heal_id, seq)
)""",
)

# Version 3: replicas. Each unfinished heal is leased to one store (``lease_token``, of the
# replica ``owner``) until ``lease_until``; each timeline entry names the replica that
# wrote it (NULL: written before version 3); a target lock is held by a heal, as long as
# that heal's lease.
LEASES_DDL = (
    "ALTER TABLE heals ADD COLUMN owner TEXT",
    "ALTER TABLE heals ADD COLUMN lease_token TEXT",
    "ALTER TABLE heals ADD COLUMN lease_until REAL",
    "ALTER TABLE events ADD COLUMN replica TEXT",
    """CREATE TABLE IF NOT EXISTS target_locks (
    target  TEXT PRIMARY KEY,
    heal_id TEXT NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS target_locks_by_heal ON target_locks (heal_id)",
)


def _live(live: Collection[str]) -> tuple[str, list[str]]:
    """SQL true of a heals row (alias ``h``) whose lease another live store holds, and its
    arguments (``now`` first). SQLite is one process: a store object of it that is not
    open in this process is dead, whatever its lease says."""
    marks = ",".join("?" * len(live)) or "NULL"
    return (f"(h.lease_until >= ? AND h.lease_token IN ({marks}))", list(live))


def fence(db: sqlite3.Connection, heal_id: str, me: Replica) -> None:
    """Raise LeaseLost unless this store holds the heal's lease (in the caller's
    transaction, so that the write it guards is refused atomically)."""
    row = db.execute("SELECT lease_token FROM heals WHERE id=?", (heal_id,)).fetchone()
    if row is None or row[0] != me.token:
        raise LeaseLost(heal_id)


def renew(db: sqlite3.Connection, heal_ids: Sequence[str], me: Replica, now: float) -> set[str]:
    held: set[str] = set()
    for i in range(0, len(heal_ids), 500):
        chunk = list(heal_ids[i : i + 500])
        marks = ",".join("?" * len(chunk))
        db.execute(
            f"UPDATE heals SET lease_until=? WHERE lease_token=? AND id IN ({marks})",
            (now + me.lease_ttl, me.token, *chunk),
        )
        held.update(
            r[0]
            for r in db.execute(
                f"SELECT id FROM heals WHERE lease_token=? AND id IN ({marks})", (me.token, *chunk)
            )
        )
    return held


def orphans(
    db: sqlite3.Connection, me: Replica, running: list[str], before: float
) -> list[TakenHeal]:
    """Unfinished heals leased to ``me``, created before ``before``, not in ``running``
    (filtered here: ``running`` may hold more ids than SQLite takes parameters)."""
    skip = set(running)
    ids = [
        heal_id
        for (heal_id,) in db.execute(
            "SELECT id FROM heals WHERE phase != 'done' AND lease_token = ? AND created_at < ?"
            " ORDER BY created_at",
            (me.token, before),
        )
        if heal_id not in skip
    ][:500]
    found = (db.execute("SELECT * FROM heals WHERE id=?", (i,)).fetchone() for i in ids)
    return [rows.taken_heal(r, me.id) for r in found if r is not None]


def take_over(
    db: sqlite3.Connection, me: Replica, live: Collection[str], now: float, limit: int
) -> list[TakenHeal]:
    held, args = _live(live)
    found = db.execute(
        f"SELECT h.id, h.owner FROM heals h WHERE h.phase != 'done' AND h.lease_token IS NOT"
        f" ? AND NOT COALESCE({held}, 0) ORDER BY h.created_at LIMIT ?",
        (me.token, now, *args, limit),
    ).fetchall()
    taken = []
    for heal_id, owner in found:
        db.execute(
            "UPDATE heals SET owner=?, lease_token=?, lease_until=? WHERE id=?",
            (me.id, me.token, now + me.lease_ttl, heal_id),
        )
        row = db.execute("SELECT * FROM heals WHERE id=?", (heal_id,)).fetchone()
        taken.append(rows.taken_heal(row, owner))
    return taken


def lock_target(
    db: sqlite3.Connection,
    target: str,
    heal_id: str,
    me: Replica,
    live: Collection[str],
    now: float,
) -> bool:
    fence(db, heal_id, me)
    held, args = _live(live)
    busy = db.execute(
        f"SELECT 1 FROM target_locks l JOIN heals h ON h.id = l.heal_id WHERE l.target=?"
        f" AND l.heal_id != ? AND h.phase != 'done' AND {held}",
        (target, heal_id, now, *args),
    ).fetchone()
    if busy is not None:
        return False
    db.execute(
        "INSERT INTO target_locks (target, heal_id) VALUES (?, ?) ON CONFLICT"
        " (target) DO UPDATE SET heal_id = excluded.heal_id",
        (target, heal_id),
    )
    return True


def unlock_target(db: sqlite3.Connection, target: str, heal_id: str, me: Replica) -> None:
    db.execute(
        "DELETE FROM target_locks WHERE target=? AND heal_id=? AND EXISTS (SELECT 1"
        " FROM heals WHERE id=? AND lease_token=?)",
        (target, heal_id, heal_id, me.token),
    )


_PLACEHOLDERS = ",".join("?" * len(rows.HEAL_COLUMNS))
_INSERT_HEAL = f"INSERT INTO heals ({', '.join(rows.HEAL_COLUMNS)}) VALUES ({_PLACEHOLDERS})"


def insert_heal(
    db: sqlite3.Connection,
    plan: HealPlan,
    alert: ReceivedAlert | None,
    source: str,
    now: float,
    me: Replica,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    received_at: float | None = None,
) -> str:
    """A new pending heal (of ``alert``, or manual with ``labels``), leased to ``me``,
    with its first timeline entry (``matched`` or ``manual_trigger``)."""
    heal_id = new_heal_id()
    if alert is not None:
        labels, annotations = dict(alert.labels), dict(alert.annotations)
    # created_at is the history's page cursor (before=<created_at>): keep it unique and
    # increasing, or heals created in one instant (one webhook POST) fall between pages.
    last = db.execute("SELECT MAX(created_at) FROM heals").fetchone()[0]
    created = now if last is None or now > last else math.nextafter(last, math.inf)
    values = rows.new_heal_values(
        heal_id, created, now, source, plan, alert, labels, annotations, me
    )
    db.execute(
        _INSERT_HEAL,
        values,
    )
    data: dict[str, Any] = {"rule": plan.rule, "handler": plan.handler, "dry_run": plan.dry_run}
    if received_at is not None:
        data["received_at"] = received_at
    event(db, heal_id, Phase.PENDING, "matched" if alert else "manual_trigger", data, now, me)
    return heal_id


def event(
    db: sqlite3.Connection,
    heal_id: str,
    phase: str,
    kind: str,
    data: dict[str, Any],
    now: float,
    me: Replica,
) -> None:
    """The heal's next timeline entry (``seq`` one more than its last), by ``me``."""
    db.execute(
        "INSERT INTO events (heal_id, seq, at, phase, kind, data, replica) VALUES"
        " (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE heal_id=?), ?, ?, ?, ?, ?)",
        # Timeline data quotes handler output and errors: no password lands on disk.
        (heal_id, heal_id, now, str(phase), kind, dumps(redact_data(data)), me.id),
    )
    db.execute("UPDATE heals SET updated_at=? WHERE id=?", (now, heal_id))


def set_phase(
    db: sqlite3.Connection, heal_id: str, phase: Phase, targets: list[str] | None, me: Replica
) -> None:
    fence(db, heal_id, me)
    if targets is None:
        db.execute("UPDATE heals SET phase=? WHERE id=?", (str(phase), heal_id))
    else:
        db.execute(
            "UPDATE heals SET phase=?, targets=? WHERE id=?", (str(phase), dumps(targets), heal_id)
        )


def interrupt(
    db: sqlite3.Connection,
    heal_id: str,
    phase: Phase,
    reason: str,
    durations: dict[str, float],
    now: float,
    me: Replica,
) -> None:
    fence(db, heal_id, me)
    db.execute(
        "UPDATE heals SET phase=?, outcome=?, reason=?, finished_at=?, durations=? WHERE id=?",
        (str(phase), str(Outcome.INTERRUPTED), reason, now, dumps(durations), heal_id),
    )
    event(db, heal_id, phase, "interrupted", {"reason": reason, "durations": durations}, now, me)


def finish(
    db: sqlite3.Connection,
    heal_id: str,
    outcome: Outcome,
    reason: str,
    durations: dict[str, float],
    now: float,
    me: Replica,
) -> None:
    fence(db, heal_id, me)
    db.execute("DELETE FROM target_locks WHERE heal_id=?", (heal_id,))
    db.execute(
        "UPDATE heals SET phase='done', outcome=?, reason=?, finished_at=?, durations=? WHERE id=?",
        (str(outcome), reason, now, dumps(durations), heal_id),
    )
    event(
        db,
        heal_id,
        Phase.DONE,
        "outcome",
        {"outcome": str(outcome), "reason": reason, "durations": durations},
        now,
        me,
    )


# ---- reads -----------------------------------------------------------------------------


def get_heal(db: sqlite3.Connection, heal_id: str) -> HealDetail | None:
    row = db.execute("SELECT * FROM heals WHERE id=?", (heal_id,)).fetchone()
    if row is None:
        return None
    events = db.execute("SELECT * FROM events WHERE heal_id=? ORDER BY seq", (heal_id,))
    return rows.heal_detail(row, events)


def list_heals(
    db: sqlite3.Connection,
    *,
    rule: str | None,
    outcome: str | None,
    target: str | None,
    limit: int,
    before: float | None,
    phase: str | None = None,
    since: float | None = None,
) -> list[HealRow]:
    """Newest first; page with ``before=<created_at of the last row>``."""
    filters: tuple[tuple[str, str | float | None], ...] = (
        ("rule = ?", rule),
        ("outcome = ?", outcome),
        ("phase = ?", phase),
        ("EXISTS (SELECT 1 FROM json_each(heals.targets) WHERE value = ?)", target),
        ("created_at < ?", before),
        ("created_at >= ?", since),
    )
    clauses = [sql for sql, value in filters if value is not None]
    args = [value for _, value in filters if value is not None]
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    sql = f"SELECT * FROM heals {where} ORDER BY created_at DESC LIMIT ?"
    return [rows.heal_row(r) for r in db.execute(sql, (*args, limit))]


def unfinished(db: sqlite3.Connection) -> list[HealRow]:
    return [
        rows.heal_row(r)
        for r in db.execute("SELECT * FROM heals WHERE phase != 'done' ORDER BY created_at")
    ]
