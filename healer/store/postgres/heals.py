"""Heals and their timelines (events) in PostgreSQL: their tables, the writes of a heal's
life and the history reads. The same columns, names and value types as the SQLite store
(timestamps are float epoch seconds, JSON columns are JSON text), so that callers see
identical dicts from either store.

Across processes: ``created_at`` (the history's unique, increasing page cursor) is taken
under one transaction-level advisory lock; a timeline entry first updates its heal's row
(a row lock), so that two processes appending to one timeline get consecutive ``seq``.

Leases (schema version 2): each unfinished heal is leased to one store (``lease_token``,
of the replica ``owner``) until ``lease_until``, by expiry only: there is no "holder
still alive" rule as on SQLite, so a restarted replica (same id, new token) takes over
its own old heals only once their lease expired (at most ``lease_ttl`` after it died).
Fencing locks the heal's row (``SELECT ... FOR UPDATE``) in the guarded write's own
transaction; :func:`take_over` claims rows ``FOR UPDATE SKIP LOCKED`` in one statement, so
a fenced write and a takeover of one heal are serialised and racing takeovers get
disjoint heals. Every timestamp compared with a lease is the ``now`` the caller passes
(the SQLite store's convention)."""

from __future__ import annotations

import math
from typing import Any

from healer.errors import LeaseLost
from healer.outcomes import Outcome, Phase
from healer.redact import redact_data
from healer.store import rows
from healer.store.postgres.pool import Conn, lock
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
    created_at   DOUBLE PRECISION NOT NULL,
    updated_at   DOUBLE PRECISION NOT NULL,
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
    finished_at  DOUBLE PRECISION,
    durations    TEXT NOT NULL DEFAULT '{}'
)""",
    "CREATE INDEX IF NOT EXISTS heals_by_time ON heals (created_at DESC)",
    "CREATE INDEX IF NOT EXISTS heals_open ON heals (phase) WHERE phase != 'done'",
    "CREATE INDEX IF NOT EXISTS heals_by_fingerprint ON heals (fingerprint)",
    """CREATE TABLE IF NOT EXISTS events (
    heal_id TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    at      DOUBLE PRECISION NOT NULL,
    phase   TEXT NOT NULL,
    kind    TEXT NOT NULL,
    data    TEXT NOT NULL,
    PRIMARY KEY (heal_id, seq)
)""",
)

# Version 2: replicas (the SQLite schema's version 3): leases on heals, the replica on
# each timeline entry (NULL: written before version 2), target locks held by a heal for
# as long as that heal's lease. Columns added in place: version-1 rows are kept, their
# heals unleased (the first take_over of any replica gets them).
LEASES_DDL = (
    "ALTER TABLE heals ADD COLUMN IF NOT EXISTS owner TEXT",
    "ALTER TABLE heals ADD COLUMN IF NOT EXISTS lease_token TEXT",
    "ALTER TABLE heals ADD COLUMN IF NOT EXISTS lease_until DOUBLE PRECISION",
    "ALTER TABLE events ADD COLUMN IF NOT EXISTS replica TEXT",
    """CREATE TABLE IF NOT EXISTS target_locks (
    target  TEXT PRIMARY KEY,
    heal_id TEXT NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS target_locks_by_heal ON target_locks (heal_id)",
)

_CREATED = ("heals", "created_at")


async def fence(db: Conn, heal_id: str, me: Replica) -> None:
    """Raise LeaseLost unless this store holds the heal's lease; the heal's row stays
    locked until the caller's transaction ends (a takeover skips it meanwhile)."""
    token = await db.fetchval("SELECT lease_token FROM heals WHERE id=$1 FOR UPDATE", heal_id)
    if token is None or token != me.token:
        raise LeaseLost(heal_id)


async def renew(db: Conn, heal_ids: list[str], me: Replica, now: float) -> set[str]:
    return {
        r[0]
        for r in await db.fetch(
            "UPDATE heals SET lease_until=$1 WHERE lease_token=$2 AND id = ANY($3::text[])"
            " RETURNING id",
            now + me.lease_ttl,
            me.token,
            heal_ids,
        )
    }


async def orphans(db: Conn, me: Replica, running: list[str], before: float) -> list[TakenHeal]:
    """Unfinished heals leased to ``me``, created before ``before``, not in ``running``."""
    found = await db.fetch(
        "SELECT * FROM heals WHERE phase <> 'done' AND lease_token = $1 AND created_at < $2"
        " AND NOT (id = ANY($3::text[])) ORDER BY created_at LIMIT 500",
        me.token,
        before,
        running,
    )
    return [rows.taken_heal(r, me.id) for r in found]


async def take_over(db: Conn, me: Replica, now: float, limit: int) -> list[TakenHeal]:
    """One statement: the oldest unfinished heals with an expired (or no) lease not held
    by this store, locked (skipping rows another transaction holds), leased to ``me``."""
    found = await db.fetch(
        "WITH picked AS (SELECT id, owner FROM heals WHERE phase <> 'done'"
        " AND lease_token IS DISTINCT FROM $1 AND (lease_until IS NULL OR lease_until < $2)"
        " ORDER BY created_at LIMIT $3 FOR UPDATE SKIP LOCKED)"
        " UPDATE heals h SET owner=$4, lease_token=$1, lease_until=$5 FROM picked p"
        " WHERE h.id = p.id RETURNING h.*, p.owner AS taken_from",
        me.token,
        now,
        limit,
        me.id,
        now + me.lease_ttl,
    )
    taken = (rows.taken_heal(r, r["taken_from"]) for r in found)
    return sorted(taken, key=lambda h: float(h["created_at"]))


async def lock_target(db: Conn, target: str, heal_id: str, me: Replica, now: float) -> bool:
    """Fenced on ``heal_id``'s lease; then one upsert, taking the lock only if it is free,
    already this heal's, or its holder is done or its lease expired at ``now``."""
    await fence(db, heal_id, me)
    held = await db.fetchval(
        "INSERT INTO target_locks AS l (target, heal_id) VALUES ($1, $2) ON CONFLICT (target)"
        " DO UPDATE SET heal_id = excluded.heal_id WHERE l.heal_id = excluded.heal_id OR NOT"
        " EXISTS (SELECT 1 FROM heals h WHERE h.id = l.heal_id AND h.phase <> 'done' AND"
        " h.lease_until >= $3) RETURNING heal_id",
        target,
        heal_id,
        now,
    )
    return held is not None


async def unlock_target(db: Conn, target: str, heal_id: str, me: Replica) -> None:
    await db.execute(
        "DELETE FROM target_locks WHERE target=$1 AND heal_id=$2 AND EXISTS"
        " (SELECT 1 FROM heals WHERE id=$2 AND lease_token=$3)",
        target,
        heal_id,
        me.token,
    )


_PLACEHOLDERS = ",".join(f"${i}" for i in range(1, len(rows.HEAL_COLUMNS) + 1))
_INSERT_HEAL = f"INSERT INTO heals ({', '.join(rows.HEAL_COLUMNS)}) VALUES ({_PLACEHOLDERS})"


async def insert_heal(
    db: Conn,
    plan: HealPlan,
    alert: ReceivedAlert | None,
    source: str,
    now: float,
    me: Replica,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    received_at: float | None = None,
) -> str:
    """A new pending heal, leased to ``me``, with its first timeline entry (``matched``
    or ``manual_trigger``)."""
    heal_id = new_heal_id()
    if alert is not None:
        labels, annotations = dict(alert.labels), dict(alert.annotations)
    await lock(db, _CREATED)
    last = await db.fetchval("SELECT MAX(created_at) FROM heals")
    created = now if last is None or now > last else math.nextafter(last, math.inf)
    values = rows.new_heal_values(
        heal_id, created, now, source, plan, alert, labels, annotations, me
    )
    await db.execute(
        _INSERT_HEAL,
        *values,
    )
    data: dict[str, Any] = {"rule": plan.rule, "handler": plan.handler, "dry_run": plan.dry_run}
    if received_at is not None:
        data["received_at"] = received_at
    await event(db, heal_id, Phase.PENDING, "matched" if alert else "manual_trigger", data, now, me)
    return heal_id


async def event(
    db: Conn, heal_id: str, phase: str, kind: str, data: dict[str, Any], now: float, me: Replica
) -> None:
    """The heal's next timeline entry (``seq`` one more than its last), by ``me``."""
    await db.execute("UPDATE heals SET updated_at=$1 WHERE id=$2", now, heal_id)
    await db.execute(
        "INSERT INTO events (heal_id, seq, at, phase, kind, data, replica) VALUES"
        " ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE heal_id=$1), $2, $3, $4,"
        " $5, $6)",
        heal_id,
        now,
        str(phase),
        kind,
        dumps(redact_data(data)),
        me.id,
    )


async def set_phase(
    db: Conn, heal_id: str, phase: Phase, targets: list[str] | None, me: Replica
) -> None:
    await fence(db, heal_id, me)
    if targets is None:
        await db.execute("UPDATE heals SET phase=$1 WHERE id=$2", str(phase), heal_id)
    else:
        await db.execute(
            "UPDATE heals SET phase=$1, targets=$2 WHERE id=$3", str(phase), dumps(targets), heal_id
        )


async def interrupt(
    db: Conn,
    heal_id: str,
    phase: Phase,
    reason: str,
    durations: dict[str, float],
    now: float,
    me: Replica,
) -> None:
    await fence(db, heal_id, me)
    await db.execute(
        "UPDATE heals SET phase=$1, outcome=$2, reason=$3, finished_at=$4, durations=$5"
        " WHERE id=$6",
        str(phase),
        str(Outcome.INTERRUPTED),
        reason,
        now,
        dumps(durations),
        heal_id,
    )
    await event(
        db, heal_id, phase, "interrupted", {"reason": reason, "durations": durations}, now, me
    )


async def finish(
    db: Conn,
    heal_id: str,
    outcome: Outcome,
    reason: str,
    durations: dict[str, float],
    now: float,
    me: Replica,
) -> None:
    await fence(db, heal_id, me)
    await db.execute("DELETE FROM target_locks WHERE heal_id=$1", heal_id)
    await db.execute(
        "UPDATE heals SET phase='done', outcome=$1, reason=$2, finished_at=$3, durations=$4"
        " WHERE id=$5",
        str(outcome),
        reason,
        now,
        dumps(durations),
        heal_id,
    )
    await event(
        db,
        heal_id,
        Phase.DONE,
        "outcome",
        {"outcome": str(outcome), "reason": reason, "durations": durations},
        now,
        me,
    )


# ---- reads -----------------------------------------------------------------------------


async def get_heal(db: Conn, heal_id: str) -> HealDetail | None:
    row = await db.fetchrow("SELECT * FROM heals WHERE id=$1", heal_id)
    if row is None:
        return None
    events = await db.fetch("SELECT * FROM events WHERE heal_id=$1 ORDER BY seq", heal_id)
    return rows.heal_detail(row, events)


_FILTERS = (
    "rule = ${}",
    "outcome = ${}",
    "phase = ${}",
    "EXISTS (SELECT 1 FROM jsonb_array_elements_text(heals.targets::jsonb) t WHERE t = ${})",
    "created_at < ${}",
    "created_at >= ${}",
)


async def list_heals(
    db: Conn,
    *,
    rule: str | None,
    outcome: str | None,
    target: str | None,
    limit: int,
    before: float | None,
    phase: str | None = None,
    since: float | None = None,
) -> list[HealRow]:
    """Newest first; page with ``before=<created_at of the last row>``. The SQL text is
    built from the fixed clauses above only; every value is a parameter."""
    clauses: list[str] = []
    args: list[Any] = []
    for sql, value in zip(_FILTERS, (rule, outcome, phase, target, before, since), strict=True):
        if value is not None:
            args.append(value)
            clauses.append(sql.format(len(args)))
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    sql = f"SELECT * FROM heals {where} ORDER BY created_at DESC LIMIT ${len(args) + 1}"
    return [rows.heal_row(r) for r in await db.fetch(sql, *args, limit)]


async def unfinished(db: Conn) -> list[HealRow]:
    return [
        rows.heal_row(r)
        for r in await db.fetch("SELECT * FROM heals WHERE phase != 'done' ORDER BY created_at")
    ]
