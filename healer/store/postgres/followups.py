"""Follow-ups in PostgreSQL: the ``follow_ups`` table and the claim. A claim takes the
transaction-level advisory lock of the heal's alert identity (the lock ingest takes for
that alert), so of racing claims from any process at most one escalates or retries, and
a re-send being ingested meanwhile sees the retry heal it must follow."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from healer.outcomes import Outcome, Phase
from healer.store import rows
from healer.store.postgres import alerts, gates, heals
from healer.store.postgres.pool import Conn, lock
from healer.store.sqlite.followups import heal_alert
from healer.store.types import (
    FollowUpClaim,
    FollowUpHeal,
    FollowUpPolicy,
    Replica,
    alert_key_time,
)

DDL = (
    """CREATE TABLE IF NOT EXISTS follow_ups (
    heal_id     TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    starts_at   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    at          DOUBLE PRECISION NOT NULL,
    run_id      TEXT NOT NULL,
    retry_id    TEXT,
    deliveries  TEXT
)""",
    "CREATE INDEX IF NOT EXISTS follow_ups_by_alert ON follow_ups (fingerprint, starts_at)",
)


async def _read_heal(db: Conn, heal_id: str) -> FollowUpHeal | None:
    row = await db.fetchrow(
        "SELECT id, rule, fingerprint, alert_starts_at, labels, annotations, targets, phase,"
        " outcome, reason, finished_at FROM heals WHERE id=$1",
        heal_id,
    )
    return rows.follow_up_heal(row)


async def claim(
    db: Conn, heal_id: str, *, run_id: str, now: float, policy: FollowUpPolicy, me: Replica
) -> FollowUpClaim:
    heal = await _read_heal(db, heal_id)
    if heal is None:  # no such heal, or a manual one
        return FollowUpClaim("none")
    starts = alert_key_time(datetime.fromisoformat(heal["alert_starts_at"]))
    await lock(db, alerts.alert_lock(heal["fingerprint"], starts))
    heal = await _read_heal(db, heal_id) or heal  # as of the lock
    if heal["phase"] != "done":
        return FollowUpClaim("none", settled=False)
    if heal["outcome"] != Outcome.NOT_RECOVERED:
        return FollowUpClaim("none")
    if await alerts.resolved_at(db, (heal["fingerprint"], starts)) is not None:
        return FollowUpClaim("none")
    row = await db.fetchrow(
        "SELECT kind, run_id, deliveries FROM follow_ups WHERE heal_id=$1", heal_id
    )
    if row is not None:
        if row["kind"] == "escalate" and row["deliveries"] is None and row["run_id"] != run_id:
            await db.execute(
                "UPDATE follow_ups SET run_id=$1, at=$2 WHERE heal_id=$3", run_id, now, heal_id
            )
            return FollowUpClaim("escalate", heal)
        return FollowUpClaim("none")
    if policy.mode(heal["rule"]) == "escalate":
        told = await db.fetchval(
            "SELECT 1 FROM follow_ups WHERE fingerprint=$1 AND starts_at=$2 AND kind='escalate'",
            heal["fingerprint"],
            starts,
        )
        if told is not None:
            return FollowUpClaim("none")
        await _insert(db, heal, starts, "escalate", run_id, now)
        await heals.event(
            db,
            heal_id,
            Phase.DONE,
            "not_recovered_escalation",
            {
                "on_not_recovered": "escalate",
                "reason": "the alert still fires after the heal ended not_recovered",
            },
            now,
            me,
        )
        return FollowUpClaim("escalate", heal)
    rule_plan = policy.plan(heal["rule"])
    if rule_plan is None:
        return FollowUpClaim("none")
    targets = list(heal["targets"])
    last = await gates.last_action_at(db, heal["rule"], targets) if targets else None
    left = 0.0 if last is None else max(policy.cooldown(heal["rule"]) - (now - last), 0.0)
    if left > 0:
        return FollowUpClaim("wait", heal, left=left, settled=False)
    alert = heal_alert(heal)
    retry_id = await heals.insert_heal(db, rule_plan, alert, "retry", now, me)
    await _insert(db, heal, starts, "retry", run_id, now, retry_id=retry_id)
    await db.execute(
        "UPDATE alerts SET heal_id=$1 WHERE fingerprint=$2 AND starts_at=$3 AND status='firing'",
        retry_id,
        heal["fingerprint"],
        starts,
    )
    await heals.event(db, heal_id, Phase.DONE, "retried", {"retry_heal_id": retry_id}, now, me)
    await heals.event(
        db,
        retry_id,
        Phase.PENDING,
        "retry_of",
        {"heal_id": heal_id, "outcome": heal["outcome"], "reason": heal["reason"]},
        now,
        me,
    )
    return FollowUpClaim("retry", heal, retry_id=retry_id, retry_plan=rule_plan, retry_alert=alert)


async def _insert(
    db: Conn,
    heal: FollowUpHeal,
    starts: str,
    kind: str,
    run_id: str,
    now: float,
    retry_id: str | None = None,
) -> None:
    await db.execute(
        "INSERT INTO follow_ups (heal_id, fingerprint, starts_at, kind, at,"
        " run_id, retry_id) VALUES ($1,$2,$3,$4,$5,$6,$7)",
        heal["id"],
        heal["fingerprint"],
        starts,
        kind,
        now,
        run_id,
        retry_id,
    )


async def record_deliveries(
    db: Conn, heal_id: str, deliveries: list[dict[str, Any]], now: float, me: Replica
) -> None:
    for delivery in deliveries:
        await heals.event(db, heal_id, Phase.DONE, "escalation", delivery, now, me)
    await db.execute(
        "UPDATE follow_ups SET deliveries=$1 WHERE heal_id=$2", json.dumps(deliveries), heal_id
    )


async def candidates(db: Conn) -> list[str]:
    return [
        r[0]
        for r in await db.fetch(
            "SELECT h.id FROM heals h LEFT JOIN follow_ups f ON f.heal_id = h.id"
            " WHERE h.outcome = 'not_recovered' AND h.phase = 'done' AND h.fingerprint IS NOT NULL"
            " AND (f.heal_id IS NULL OR (f.kind = 'escalate' AND f.deliveries IS NULL))"
            " ORDER BY h.created_at"
        )
    ]
