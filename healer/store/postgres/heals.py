"""Heals and their timelines (events) in PostgreSQL: their tables, the writes of a heal's
life and the history reads. The same columns, names and value types as the SQLite store
(timestamps are float epoch seconds, JSON columns are JSON text), so that callers see
identical dicts from either store.

Across processes: ``created_at`` (the history's unique, increasing page cursor) is taken
under one transaction-level advisory lock; a timeline entry first updates its heal's row
(a row lock), so that two processes appending to one timeline get consecutive ``seq``."""

from __future__ import annotations

import json
import math
from typing import Any

import asyncpg

from healer.outcomes import Outcome, Phase
from healer.redact import redact_data
from healer.store.postgres.pool import Conn, lock
from healer.store.types import HealPlan, ReceivedAlert, dumps, new_heal_id

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

_CREATED = ("heals", "created_at")


async def insert_heal(db: Conn, plan: HealPlan, alert: ReceivedAlert | None, source: str,
                      now: float, labels: dict[str, str] | None = None,
                      annotations: dict[str, str] | None = None,
                      received_at: float | None = None) -> str:
    """A new pending heal with its first timeline entry (``matched`` or ``manual_trigger``)."""
    heal_id = new_heal_id()
    if alert is not None:
        labels, annotations = dict(alert.labels), dict(alert.annotations)
    await lock(db, _CREATED)
    last = await db.fetchval("SELECT MAX(created_at) FROM heals")
    created = now if last is None or now > last else math.nextafter(last, math.inf)
    await db.execute(
        "INSERT INTO heals (id, created_at, updated_at, source, rule, handler, fingerprint,"
        " alert_starts_at, labels, annotations, params, verify, dry_run, phase)"
        " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,'pending')",
        heal_id, created, now, source, plan.rule, plan.handler,
        alert.fingerprint if alert else None,
        alert.starts_at.isoformat() if alert else None,
        dumps(labels or {}), dumps(annotations or {}),
        dumps(plan.params), dumps(plan.verify), int(plan.dry_run))
    data: dict[str, Any] = {"rule": plan.rule, "handler": plan.handler,
                            "dry_run": plan.dry_run}
    if received_at is not None:
        data["received_at"] = received_at
    await event(db, heal_id, Phase.PENDING, "matched" if alert else "manual_trigger", data, now)
    return heal_id


async def event(db: Conn, heal_id: str, phase: str, kind: str, data: dict[str, Any],
                now: float) -> None:
    """The heal's next timeline entry (``seq`` one more than its last)."""
    await db.execute("UPDATE heals SET updated_at=$1 WHERE id=$2", now, heal_id)
    await db.execute(
        "INSERT INTO events (heal_id, seq, at, phase, kind, data) VALUES"
        " ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE heal_id=$1), $2, $3, $4,"
        " $5)", heal_id, now, str(phase), kind, dumps(redact_data(data)))


async def set_phase(db: Conn, heal_id: str, phase: Phase, targets: list[str] | None) -> None:
    if targets is None:
        await db.execute("UPDATE heals SET phase=$1 WHERE id=$2", str(phase), heal_id)
    else:
        await db.execute("UPDATE heals SET phase=$1, targets=$2 WHERE id=$3",
                         str(phase), dumps(targets), heal_id)


async def interrupt(db: Conn, heal_id: str, phase: Phase, reason: str,
                    durations: dict[str, float], now: float) -> None:
    await db.execute(
        "UPDATE heals SET phase=$1, outcome=$2, reason=$3, finished_at=$4, durations=$5"
        " WHERE id=$6", str(phase), str(Outcome.INTERRUPTED), reason, now,
        dumps(durations), heal_id)
    await event(db, heal_id, phase, "interrupted",
                {"reason": reason, "durations": durations}, now)


async def finish(db: Conn, heal_id: str, outcome: Outcome, reason: str,
                 durations: dict[str, float], now: float) -> None:
    await db.execute(
        "UPDATE heals SET phase='done', outcome=$1, reason=$2, finished_at=$3, durations=$4"
        " WHERE id=$5", str(outcome), reason, now, dumps(durations), heal_id)
    await event(db, heal_id, Phase.DONE, "outcome",
                {"outcome": str(outcome), "reason": reason, "durations": durations}, now)


# ---- reads -----------------------------------------------------------------------------


def heal_dict(row: asyncpg.Record) -> dict[str, Any]:
    heal = dict(row)
    for key in ("labels", "annotations", "params", "verify", "targets", "durations"):
        heal[key] = json.loads(heal[key])
    heal["dry_run"] = bool(heal["dry_run"])
    return heal


async def get_heal(db: Conn, heal_id: str) -> dict[str, Any] | None:
    row = await db.fetchrow("SELECT * FROM heals WHERE id=$1", heal_id)
    if row is None:
        return None
    heal = heal_dict(row)
    heal["timeline"] = [
        {"seq": e["seq"], "at": e["at"], "phase": e["phase"], "kind": e["kind"],
         "data": json.loads(e["data"])}
        for e in await db.fetch("SELECT * FROM events WHERE heal_id=$1 ORDER BY seq", heal_id)
    ]
    return heal


_FILTERS = ("rule = ${}", "outcome = ${}",
            "EXISTS (SELECT 1 FROM jsonb_array_elements_text(heals.targets::jsonb) t"
            " WHERE t = ${})", "created_at < ${}")


async def list_heals(db: Conn, *, rule: str | None, outcome: str | None, target: str | None,
                     limit: int, before: float | None) -> list[dict[str, Any]]:
    """Newest first; page with ``before=<created_at of the last row>``. The SQL text is
    built from the fixed clauses above only; every value is a parameter."""
    clauses: list[str] = []
    args: list[Any] = []
    for sql, value in zip(_FILTERS, (rule, outcome, target, before), strict=True):
        if value is not None:
            args.append(value)
            clauses.append(sql.format(len(args)))
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    sql = f"SELECT * FROM heals {where} ORDER BY created_at DESC LIMIT ${len(args) + 1}"
    return [heal_dict(r) for r in await db.fetch(sql, *args, limit)]


async def unfinished(db: Conn) -> list[dict[str, Any]]:
    return [heal_dict(r) for r in await db.fetch(
        "SELECT * FROM heals WHERE phase != 'done' ORDER BY created_at")]
