"""The safety gates' state in SQLite: action history (cooldowns, budgets), circuits (open /
closed, escalated by which heal) and the pause. Nothing of it lives only in memory, so a
restart forgets no cooldown, no open circuit, no escalation and no pause.

Every function here takes the store's connection and runs on its single writer thread
(:mod:`healer.store.sqlite.writer`), so :func:`admit` reads and writes in one
transaction: two heals can never both pass a cooldown or a budget that only one fits.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from healer.store import rows
from healer.store.sqlite import alerts
from healer.store.types import AlertKey, CircuitRow, Decision, Limits, PauseRow
from healer.timefmt import format_seconds

DDL = (
    # What the gates decide from, kept here so that a restart forgets no cooldown,
    # budget, open circuit, escalation or pause.
    """CREATE TABLE IF NOT EXISTS safety_actions (
    rule    TEXT NOT NULL,
    target  TEXT NOT NULL,
    at      REAL NOT NULL,
    heal_id TEXT NOT NULL,
    PRIMARY KEY (rule, target, heal_id)
)""",
    "CREATE INDEX IF NOT EXISTS safety_actions_by_time ON safety_actions (rule, target, at)",
    """CREATE TABLE IF NOT EXISTS safety_circuits (
    rule          TEXT NOT NULL,
    target        TEXT NOT NULL,
    state         TEXT NOT NULL,
    opened_at     REAL NOT NULL,
    opened_by     TEXT NOT NULL,
    reason        TEXT NOT NULL,
    last_alert_at REAL NOT NULL,
    suppressed    INTEGER NOT NULL DEFAULT 0,
    escalated_by  TEXT,
    escalation    TEXT,
    closed_at     REAL,
    closed_by     TEXT,
    PRIMARY KEY (rule, target)
)""",
    """CREATE TABLE IF NOT EXISTS safety_pause (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    since  REAL NOT NULL,
    until  REAL NOT NULL,
    reason TEXT NOT NULL
)""",
)

# Action history older than the longest budget window (30 days) is of no use to any gate.
_KEEP_ACTIONS = 31 * 86400.0


# ---- pause ---------------------------------------------------------------------------


def get_pause(db: sqlite3.Connection, now: float) -> PauseRow | None:
    """The active pause, or None (an expired one counts as none)."""
    return rows.pause_row(
        db.execute("SELECT since, until, reason FROM safety_pause WHERE id=1").fetchone(), now
    )


def set_pause(db: sqlite3.Connection, now: float, until: float, reason: str) -> PauseRow:
    """Pause until ``until``; a new pause replaces the current one (extends or shortens)."""
    db.execute(
        "INSERT INTO safety_pause (id, since, until, reason) VALUES (1, ?, ?, ?)"
        " ON CONFLICT (id) DO UPDATE SET since=excluded.since, until=excluded.until,"
        " reason=excluded.reason",
        (now, until, reason),
    )
    return {"since": now, "until": until, "reason": reason}


def clear_pause(db: sqlite3.Connection, now: float) -> PauseRow | None:
    """End the pause; returns the pause that was active, if any."""
    active = get_pause(db, now)
    db.execute("DELETE FROM safety_pause")
    return active


# ---- circuits ------------------------------------------------------------------------


_circuit = rows.circuit_row


def open_rules(db: sqlite3.Connection) -> set[str]:
    return {
        r[0] for r in db.execute("SELECT DISTINCT rule FROM safety_circuits WHERE state='open'")
    }


def list_circuits(db: sqlite3.Connection, *, include_closed: bool = False) -> list[CircuitRow]:
    where = "" if include_closed else "WHERE state='open'"
    return [
        _circuit(r)
        for r in db.execute(f"SELECT * FROM safety_circuits {where} ORDER BY opened_at DESC")
    ]


def close_circuits(
    db: sqlite3.Connection, rule: str, target: str | None, now: float, by: str
) -> list[CircuitRow]:
    """Close the rule's open circuits (one target, or all). Closing also starts the budget
    afresh: actions before ``closed_at`` no longer count."""
    args: list[Any] = [now, by, rule]
    sql = (
        "UPDATE safety_circuits SET state='closed', closed_at=?, closed_by=?"
        " WHERE rule=? AND state='open'"
    )
    if target is not None:
        sql += " AND target=?"
        args.append(target)
    return [_circuit(r) for r in db.execute(sql + " RETURNING *", args)]


def sweep(db: sqlite3.Connection, now: float, quiet: float) -> list[CircuitRow]:
    """Close circuits that had no new alert for ``quiet`` seconds; drop old history."""
    closed = [
        _circuit(r)
        for r in db.execute(
            "UPDATE safety_circuits SET state='closed', closed_at=?, closed_by='quiet period'"
            " WHERE state='open' AND last_alert_at <= ? RETURNING *",
            (now, now - quiet),
        )
    ]
    db.execute("DELETE FROM safety_actions WHERE at < ?", (now - _KEEP_ACTIONS,))
    return closed


def record_escalation(
    db: sqlite3.Connection, rule: str, target: str, heal_id: str, deliveries: list[dict[str, Any]]
) -> None:
    db.execute(
        "UPDATE safety_circuits SET escalation=? WHERE rule=? AND target=? AND escalated_by=?",
        (json.dumps(deliveries), rule, target, heal_id),
    )


# ---- admission -----------------------------------------------------------------------


def admit(
    db: sqlite3.Connection,
    heal_id: str,
    rule: str | None,
    targets: Sequence[str],
    limits: Limits | None,
    now: float,
    alert: AlertKey | None = None,
) -> Decision:
    """Decide, and record, whether ``heal_id`` may act on ``targets`` now.

    In order: the heal's alert already resolved (in the same transaction as the
    admission, so a resolve journaled before it can never be followed by the action);
    pause; an open circuit on any target (the first heal to meet it since it
    opened escalates, later ones are suppressed); the cooldown; the budget (spent: the
    circuit opens and this heal escalates). Admitted, one action per target is recorded
    before the heal acts, so a crash mid-act still counts it. A heal resumed after a
    restart never meets its own earlier records (it never acted: it would have ended
    ``interrupted``)."""
    if alert is not None and (resolved := alerts.resolved_at(db, alert)) is not None:
        return Decision("resolved", resolved_at=resolved)
    pause = get_pause(db, now)
    if pause is not None:
        return Decision("paused", left=pause["until"] - now, pause=pause)
    if rule is None or limits is None:
        return Decision("act")  # manual trigger by handler: only pause and the lock apply
    keys = sorted(set(targets))
    sweep_targets(db, rule, keys, now, limits.quiet)
    for key in keys:
        row = db.execute(
            "SELECT * FROM safety_circuits WHERE rule=? AND target=? AND state='open'", (rule, key)
        ).fetchone()
        if row is None:
            continue
        db.execute(
            "UPDATE safety_circuits SET last_alert_at=?, suppressed=suppressed+1"
            " WHERE rule=? AND target=?",
            (now, rule, key),
        )
        if row["escalated_by"] is None or row["escalated_by"] == heal_id:
            db.execute(
                "UPDATE safety_circuits SET escalated_by=? WHERE rule=? AND target=?",
                (heal_id, rule, key),
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
        last = db.execute(
            "SELECT MAX(at) FROM safety_actions WHERE rule=? AND target=? AND heal_id != ?",
            (rule, key, heal_id),
        ).fetchone()[0]
        if last is not None and now - last < limits.cooldown:
            return Decision("cooldown", key, left=limits.cooldown - (now - last))
    for key in keys:
        closed = db.execute(
            "SELECT closed_at FROM safety_circuits WHERE rule=? AND target=?", (rule, key)
        ).fetchone()
        since = max(now - limits.window, closed["closed_at"] if closed else float("-inf"))
        count = db.execute(
            "SELECT COUNT(*) FROM safety_actions WHERE rule=? AND target=?"
            " AND at > ? AND heal_id != ?",
            (rule, key, since, heal_id),
        ).fetchone()[0]
        if count >= limits.max_actions:
            reason = (
                f"budget spent: {count} actions by {rule} on {key} within the last "
                f"{format_seconds(limits.window)} (max {limits.max_actions})"
            )
            row = db.execute(
                "INSERT INTO safety_circuits (rule, target, state, opened_at, opened_by,"
                " reason, last_alert_at, suppressed, escalated_by, escalation, closed_at,"
                " closed_by) VALUES (?,?,'open',?,?,?,?,0,?,NULL,NULL,NULL)"
                " ON CONFLICT (rule, target) DO UPDATE SET state='open',"
                " opened_at=excluded.opened_at, opened_by=excluded.opened_by,"
                " reason=excluded.reason, last_alert_at=excluded.last_alert_at, suppressed=0,"
                " escalated_by=excluded.escalated_by, escalation=NULL, closed_at=NULL,"
                " closed_by=NULL RETURNING *",
                (rule, key, now, heal_id, reason, now, heal_id),
            ).fetchone()
            return Decision("escalate", key, actions=count, circuit=_circuit(row))
    db.executemany(
        "INSERT OR REPLACE INTO safety_actions (rule, target, at, heal_id) VALUES (?,?,?,?)",
        [(rule, key, now, heal_id) for key in keys],
    )
    return Decision("act")


def sweep_targets(
    db: sqlite3.Connection, rule: str, keys: Sequence[str], now: float, quiet: float
) -> None:
    """The quiet-period close for the circuits one heal is about to meet, so that the
    answer never depends on when the background sweep last ran."""
    for key in keys:
        db.execute(
            "UPDATE safety_circuits SET state='closed', closed_at=?,"
            " closed_by='quiet period' WHERE rule=? AND target=? AND state='open'"
            " AND last_alert_at <= ?",
            (now, rule, key, now - quiet),
        )


def last_action_at(db: sqlite3.Connection, rule: str, targets: Sequence[str]) -> float | None:
    """When ``rule`` last acted on any of ``targets`` (None: never, or forgotten)."""
    last: float | None = db.execute(
        f"SELECT MAX(at) FROM safety_actions WHERE rule=? AND target IN"
        f" ({','.join('?' * len(targets))})",
        (rule, *targets),
    ).fetchone()[0]
    return last
