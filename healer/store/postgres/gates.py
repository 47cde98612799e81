"""The safety gates' state in PostgreSQL: action history (cooldowns, budgets), circuits and
the pause, shared by every process using the store.

:func:`admit` is atomic across processes: it takes a transaction-level advisory lock on
each (rule, target) it decides about, in one sorted order, plus the pause's lock (shared
with :func:`set_pause` / :func:`clear_pause`), then reads and writes as the SQLite store
does, so cooldowns, budgets, circuits, escalate-once and the pause are fleet-wide and
race-free.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from healer.store import rows
from healer.store.postgres import alerts
from healer.store.postgres.pool import Conn, lock, lock_shared
from healer.store.types import AlertKey, CircuitRow, Decision, Limits, PauseRow
from healer.timefmt import format_seconds

DDL = (
    """CREATE TABLE IF NOT EXISTS safety_actions (
    rule    TEXT NOT NULL,
    target  TEXT NOT NULL,
    at      DOUBLE PRECISION NOT NULL,
    heal_id TEXT NOT NULL,
    PRIMARY KEY (rule, target, heal_id)
)""",
    "CREATE INDEX IF NOT EXISTS safety_actions_by_time ON safety_actions (rule, target, at)",
    """CREATE TABLE IF NOT EXISTS safety_circuits (
    rule          TEXT NOT NULL,
    target        TEXT NOT NULL,
    state         TEXT NOT NULL,
    opened_at     DOUBLE PRECISION NOT NULL,
    opened_by     TEXT NOT NULL,
    reason        TEXT NOT NULL,
    last_alert_at DOUBLE PRECISION NOT NULL,
    suppressed    INTEGER NOT NULL DEFAULT 0,
    escalated_by  TEXT,
    escalation    TEXT,
    closed_at     DOUBLE PRECISION,
    closed_by     TEXT,
    PRIMARY KEY (rule, target)
)""",
    """CREATE TABLE IF NOT EXISTS safety_pause (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    since  DOUBLE PRECISION NOT NULL,
    until  DOUBLE PRECISION NOT NULL,
    reason TEXT NOT NULL
)""",
)

_KEEP_ACTIONS = 31 * 86400.0
_PAUSE = ("safety", "pause")


def _target_lock(rule: str, target: str) -> tuple[str, ...]:
    return ("safety", rule, target)


# ---- pause ---------------------------------------------------------------------------


async def get_pause(db: Conn, now: float) -> PauseRow | None:
    row = await db.fetchrow("SELECT since, until, reason FROM safety_pause WHERE id=1")
    return rows.pause_row(row, now)


async def set_pause(db: Conn, now: float, until: float, reason: str) -> PauseRow:
    await lock(db, _PAUSE)
    await db.execute(
        "INSERT INTO safety_pause (id, since, until, reason) VALUES (1,$1,$2,$3)"
        " ON CONFLICT (id) DO UPDATE SET since=excluded.since,"
        " until=excluded.until, reason=excluded.reason",
        now,
        until,
        reason,
    )
    return {"since": now, "until": until, "reason": reason}


async def clear_pause(db: Conn, now: float) -> PauseRow | None:
    await lock(db, _PAUSE)
    active = await get_pause(db, now)
    await db.execute("DELETE FROM safety_pause")
    return active


# ---- circuits ------------------------------------------------------------------------


_circuit = rows.circuit_row


async def open_rules(db: Conn) -> set[str]:
    return {
        r[0] for r in await db.fetch("SELECT DISTINCT rule FROM safety_circuits WHERE state='open'")
    }


async def list_circuits(db: Conn, *, include_closed: bool = False) -> list[CircuitRow]:
    sql = "SELECT * FROM safety_circuits WHERE state='open' OR $1 ORDER BY opened_at DESC"
    return [_circuit(r) for r in await db.fetch(sql, include_closed)]


async def close_circuits(
    db: Conn, rule: str, target: str | None, now: float, by: str
) -> list[CircuitRow]:
    return [
        _circuit(r)
        for r in await db.fetch(
            "UPDATE safety_circuits SET state='closed', closed_at=$1, closed_by=$2"
            " WHERE rule=$3 AND state='open' AND ($4::text IS NULL OR target=$4) RETURNING *",
            now,
            by,
            rule,
            target,
        )
    ]


async def sweep(db: Conn, now: float, quiet: float) -> list[CircuitRow]:
    closed = [
        _circuit(r)
        for r in await db.fetch(
            "UPDATE safety_circuits SET state='closed', closed_at=$1, closed_by='quiet period'"
            " WHERE state='open' AND last_alert_at <= $2 RETURNING *",
            now,
            now - quiet,
        )
    ]
    await db.execute("DELETE FROM safety_actions WHERE at < $1", now - _KEEP_ACTIONS)
    return closed


async def record_escalation(
    db: Conn, rule: str, target: str, heal_id: str, deliveries: list[dict[str, Any]]
) -> None:
    await db.execute(
        "UPDATE safety_circuits SET escalation=$1 WHERE rule=$2 AND target=$3 AND escalated_by=$4",
        json.dumps(deliveries),
        rule,
        target,
        heal_id,
    )


# ---- admission -----------------------------------------------------------------------


async def admit(
    db: Conn,
    heal_id: str,
    rule: str | None,
    targets: Sequence[str],
    limits: Limits | None,
    now: float,
    alert: AlertKey | None = None,
) -> Decision:
    """Decide, and record, whether ``heal_id`` may act on ``targets`` now (see
    :meth:`healer.store.contract.Store.admit`), holding the locks of the alert, the pause
    and every (rule, target) until the transaction commits."""
    keys = sorted(set(targets))
    await lock_shared(db, _PAUSE)  # a pause being set waits for this decision, or is seen
    held: list[tuple[str, ...]] = []
    if alert is not None:
        held.append(alerts.alert_lock(*alert))
    if rule is not None and limits is not None:
        held += [_target_lock(rule, key) for key in keys]
    await lock(db, *held)
    if alert is not None and (resolved := await alerts.resolved_at(db, alert)) is not None:
        return Decision("resolved", resolved_at=resolved)
    pause = await get_pause(db, now)
    if pause is not None:
        return Decision("paused", left=pause["until"] - now, pause=pause)
    if rule is None or limits is None:
        return Decision("act")
    for key in keys:
        await db.execute(
            "UPDATE safety_circuits SET state='closed', closed_at=$1,"
            " closed_by='quiet period' WHERE rule=$2 AND target=$3 AND"
            " state='open' AND last_alert_at <= $4",
            now,
            rule,
            key,
            now - limits.quiet,
        )
    for key in keys:
        row = await db.fetchrow(
            "SELECT * FROM safety_circuits WHERE rule=$1 AND target=$2 AND state='open'", rule, key
        )
        if row is None:
            continue
        await db.execute(
            "UPDATE safety_circuits SET last_alert_at=$1,"
            " suppressed=suppressed+1 WHERE rule=$2 AND target=$3",
            now,
            rule,
            key,
        )
        if row["escalated_by"] is None or row["escalated_by"] == heal_id:
            await db.execute(
                "UPDATE safety_circuits SET escalated_by=$1 WHERE rule=$2 AND target=$3",
                heal_id,
                rule,
                key,
            )
            circuit = _circuit(row)
            circuit["escalated_by"] = heal_id
            return Decision(
                "escalate",
                key,
                circuit=circuit,
                deliver=row["escalated_by"] is None or row["escalation"] is None,
            )
        return Decision("circuit_open", key, circuit=_circuit(row))
    for key in keys:
        last = await db.fetchval(
            "SELECT MAX(at) FROM safety_actions WHERE rule=$1 AND target=$2 AND heal_id != $3",
            rule,
            key,
            heal_id,
        )
        if last is not None and now - last < limits.cooldown:
            return Decision("cooldown", key, left=limits.cooldown - (now - last))
    for key in keys:
        closed = await db.fetchval(
            "SELECT closed_at FROM safety_circuits WHERE rule=$1 AND target=$2", rule, key
        )
        since = max(now - limits.window, closed if closed is not None else float("-inf"))
        count = await db.fetchval(
            "SELECT COUNT(*)::int FROM safety_actions WHERE rule=$1"
            " AND target=$2 AND at > $3 AND heal_id != $4",
            rule,
            key,
            since,
            heal_id,
        )
        if count >= limits.max_actions:
            reason = (
                f"budget spent: {count} actions by {rule} on {key} within the last "
                f"{format_seconds(limits.window)} (max {limits.max_actions})"
            )
            row = await db.fetchrow(
                "INSERT INTO safety_circuits (rule, target, state, opened_at, opened_by,"
                " reason, last_alert_at, suppressed, escalated_by, escalation, closed_at,"
                " closed_by) VALUES ($1,$2,'open',$3,$4,$5,$3,0,$4,NULL,NULL,NULL)"
                " ON CONFLICT (rule, target) DO UPDATE SET state='open',"
                " opened_at=excluded.opened_at, opened_by=excluded.opened_by,"
                " reason=excluded.reason, last_alert_at=excluded.last_alert_at, suppressed=0,"
                " escalated_by=excluded.escalated_by, escalation=NULL, closed_at=NULL,"
                " closed_by=NULL RETURNING *",
                rule,
                key,
                now,
                heal_id,
                reason,
            )
            return Decision("escalate", key, actions=count, circuit=_circuit(row))
    await db.executemany(
        "INSERT INTO safety_actions (rule, target, at, heal_id) VALUES ($1,$2,$3,$4)"
        " ON CONFLICT (rule, target, heal_id) DO UPDATE SET at=excluded.at",
        [(rule, key, now, heal_id) for key in keys],
    )
    return Decision("act")


async def last_action_at(db: Conn, rule: str, targets: Sequence[str]) -> float | None:
    value = await db.fetchval(
        "SELECT MAX(at) FROM safety_actions WHERE rule=$1 AND target = ANY($2::text[])",
        rule,
        list(targets),
    )
    return None if value is None else float(value)
