"""Follow-ups in SQLite: the ``follow_ups`` table (what followed a heal that ended
``not_recovered`` while its alert kept firing; one row per such heal, written once,
whoever races for it) and the SQL of the claim. The policy and the loop are
:mod:`healer.followup`'s.

Every function takes the store's connection and runs on its single writer thread
(:mod:`healer.store.sqlite.writer`): a claim reads the heal and writes its decision in
one transaction, so racing re-sends find it and a restart keeps it."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from typing import Any

from healer.api import Alert
from healer.outcomes import Outcome, Phase
from healer.store import rows
from healer.store.sqlite import alerts, gates, heals
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
    at          REAL NOT NULL,
    run_id      TEXT NOT NULL,
    retry_id    TEXT,
    deliveries  TEXT
)""",
    "CREATE INDEX IF NOT EXISTS follow_ups_by_alert ON follow_ups (fingerprint, starts_at)",
)


def heal_alert(heal: FollowUpHeal) -> Alert:
    """The firing alert of a heal (what a retry of it heals)."""
    return Alert(
        fingerprint=heal["fingerprint"],
        status="firing",
        labels=heal["labels"],
        annotations=heal["annotations"],
        starts_at=datetime.fromisoformat(heal["alert_starts_at"]),
    )


def _read_heal(db: sqlite3.Connection, heal_id: str) -> FollowUpHeal | None:
    row = db.execute(
        "SELECT id, rule, fingerprint, alert_starts_at, labels, annotations,"
        " targets, phase, outcome, reason, finished_at FROM heals WHERE id=?",
        (heal_id,),
    ).fetchone()
    return rows.follow_up_heal(row)


def claim(
    db: sqlite3.Connection,
    heal_id: str,
    *,
    run_id: str,
    now: float,
    policy: FollowUpPolicy,
    me: Replica,
) -> FollowUpClaim:
    """Decide, and record, what follows ``heal_id`` now that its alert was re-sent firing.
    Runs as one write."""
    heal = _read_heal(db, heal_id)
    if heal is None:  # no such heal, or a manual one
        return FollowUpClaim("none")
    if heal["phase"] != "done":
        return FollowUpClaim("none", settled=False)  # running (or to be re-verified): not yet
    if heal["outcome"] != Outcome.NOT_RECOVERED:
        return FollowUpClaim("none")
    starts = alert_key_time(datetime.fromisoformat(heal["alert_starts_at"]))
    if alerts.resolved_at(db, (heal["fingerprint"], starts)) is not None:
        return FollowUpClaim("none")
    row = db.execute(
        "SELECT kind, run_id, deliveries FROM follow_ups WHERE heal_id=?", (heal_id,)
    ).fetchone()
    if row is not None:
        if row["kind"] == "escalate" and row["deliveries"] is None and row["run_id"] != run_id:
            # The process that claimed it died before recording its deliveries.
            db.execute(
                "UPDATE follow_ups SET run_id=?, at=? WHERE heal_id=?", (run_id, now, heal_id)
            )
            return FollowUpClaim("escalate", heal)
        return FollowUpClaim("none")
    if policy.mode(heal["rule"]) == "escalate":
        told = db.execute(
            "SELECT 1 FROM follow_ups WHERE fingerprint=? AND starts_at=? AND kind='escalate'",
            (heal["fingerprint"], starts),
        ).fetchone()
        if told is not None:
            return FollowUpClaim("none")
        _insert(db, heal, starts, "escalate", run_id, now)
        heals.event(
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
        return FollowUpClaim("none")  # the rule is gone from the config
    left = _cooldown_left(db, heal, policy.cooldown(heal["rule"]), now)
    if left > 0:
        return FollowUpClaim("wait", heal, left=left, settled=False)
    alert = heal_alert(heal)
    retry_id = heals.insert_heal(db, rule_plan, alert, "retry", now, me)
    _insert(db, heal, starts, "retry", run_id, now, retry_id=retry_id)
    # Later re-sends of the alert are duplicates of the retry, and follow it.
    db.execute(
        "UPDATE alerts SET heal_id=? WHERE fingerprint=? AND starts_at=? AND status='firing'",
        (retry_id, heal["fingerprint"], starts),
    )
    heals.event(db, heal_id, Phase.DONE, "retried", {"retry_heal_id": retry_id}, now, me)
    heals.event(
        db,
        retry_id,
        Phase.PENDING,
        "retry_of",
        {"heal_id": heal_id, "outcome": heal["outcome"], "reason": heal["reason"]},
        now,
        me,
    )
    return FollowUpClaim("retry", heal, retry_id=retry_id, retry_plan=rule_plan, retry_alert=alert)


def _insert(
    db: sqlite3.Connection,
    heal: FollowUpHeal,
    starts: str,
    kind: str,
    run_id: str,
    now: float,
    retry_id: str | None = None,
) -> None:
    db.execute(
        "INSERT INTO follow_ups (heal_id, fingerprint, starts_at, kind, at, run_id,"
        " retry_id) VALUES (?,?,?,?,?,?,?)",
        (heal["id"], heal["fingerprint"], starts, kind, now, run_id, retry_id),
    )


def _cooldown_left(
    db: sqlite3.Connection, heal: FollowUpHeal, cooldown: float, now: float
) -> float:
    """How long until the rule's cooldown on the heal's targets has passed (the gates'
    own rule: since the rule last acted on any of them)."""
    targets = list(heal["targets"])
    if not targets:
        return 0.0
    last = gates.last_action_at(db, heal["rule"], targets)
    return 0.0 if last is None else max(cooldown - (now - last), 0.0)


def record_deliveries(
    db: sqlite3.Connection, heal_id: str, deliveries: list[dict[str, Any]], now: float, me: Replica
) -> None:
    """Each delivery of a not_recovered escalation on the heal's timeline, and the
    follow-up settled (no later process sends it again)."""
    for delivery in deliveries:
        heals.event(db, heal_id, Phase.DONE, "escalation", delivery, now, me)
    db.execute(
        "UPDATE follow_ups SET deliveries=? WHERE heal_id=?", (json.dumps(deliveries), heal_id)
    )


def candidates(db: sqlite3.Connection) -> list[str]:
    """Heals a re-send may still follow up: ``not_recovered`` without a follow-up, or with
    an escalation whose deliveries were never recorded."""
    return [
        r[0]
        for r in db.execute(
            "SELECT h.id FROM heals h LEFT JOIN follow_ups f ON f.heal_id = h.id"
            " WHERE h.outcome = 'not_recovered' AND h.phase = 'done' AND h.fingerprint IS NOT NULL"
            " AND (f.heal_id IS NULL OR (f.kind = 'escalate' AND f.deliveries IS NULL))"
        )
    ]
