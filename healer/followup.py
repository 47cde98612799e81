"""What follows a heal that ended ``not_recovered`` while its alert still fires.

Alertmanager re-sends a firing alert with the same fingerprint and startsAt (every
``repeat_interval``, after a timeout, from each HA peer); healer answers each re-send as a
duplicate of the alert's heal. When that heal ended ``not_recovered``, the first re-send
after it decides what follows, per rule (``on_not_recovered``, default
``safety.on_not_recovered``, itself ``escalate``):

* ``escalate``: the notifiers of ``notify:`` are told once (event ``not_recovered``); each
  delivery is an ``escalation`` entry on that heal's timeline, after a
  ``not_recovered_escalation`` entry. Never again for that alert (fingerprint + startsAt).
* ``retry``: once the rule's cooldown since it last acted on the heal's targets has
  passed, a new heal of the same alert starts (source ``retry``; ``retried`` on the old
  heal's timeline, ``retry_of`` on the new one's) and meets every gate as usual. Its
  re-sends are then duplicates of the new heal. A re-send within the cooldown changes
  nothing; a later one decides. When retries keep failing, the budget opens the circuit
  and that heal ends ``escalated``: the circuit's escalation tells a human.

Exactly once: the decision is a ``follow_ups`` row, keyed by the ``not_recovered`` heal,
written in the same journal transaction that reads the heal (the journal has one writer),
so racing re-sends find it and a restart keeps it. A retry heal is created in that same
transaction (a crash before it runs leaves it pending: the next start runs it). An
escalation whose process died before it recorded its deliveries is sent by the next
process that meets a re-send (at least once, like a circuit's escalation).

Usage (the app factory; the receiver; the executor)::

    followups = FollowUps(journal=..., config=..., rules=..., notifiers=..., metrics=...)
    await followups.start(submit=executor.submit)   # loads the candidates from the journal
    followups.note_not_recovered(heal_id)           # the executor, when a heal ends so
    followups.duplicates([heal_id, ...])            # the receiver: re-sends of firing alerts
    await followups.drain()                         # tests: until nothing is in flight
    await followups.stop()
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import structlog

from healer.api import Alert
from healer.config import HealerConfig
from healer.executor import HealJob
from healer.journal import HealPlan, Journal, alert_key_time
from healer.metrics import Metrics
from healer.notify import Escalation, Notifiers
from healer.outcomes import Outcome, Phase
from healer.rules import RuleSet
from healer.safety_state import alert_resolved_at, format_seconds

Kind = Literal["none", "wait", "escalate", "retry"]


@dataclass(frozen=True, slots=True)
class Claim:
    """What one re-send decided. ``none``: nothing follows (not ``not_recovered``, already
    followed up, resolved, rule gone); ``wait``: retry, but the cooldown has ``left``."""

    kind: Kind
    heal: dict[str, Any] = field(default_factory=dict)
    left: float = 0.0
    settled: bool = True  # nothing will ever follow this heal again
    retry: HealJob | None = None


def _heal_alert(heal: dict[str, Any]) -> Alert:
    return Alert(fingerprint=heal["fingerprint"], status="firing", labels=heal["labels"],
                 annotations=heal["annotations"],
                 starts_at=datetime.fromisoformat(heal["alert_starts_at"]))


def _read_heal(db: sqlite3.Connection, heal_id: str) -> dict[str, Any] | None:
    row = db.execute("SELECT id, rule, fingerprint, alert_starts_at, labels, annotations,"
                     " targets, phase, outcome, reason, finished_at FROM heals WHERE id=?",
                     (heal_id,)).fetchone()
    if row is None:
        return None
    heal = dict(row)
    for key in ("labels", "annotations", "targets"):
        heal[key] = json.loads(heal[key])
    return heal


def claim(db: sqlite3.Connection, journal: Journal, heal_id: str, *, run_id: str,
          now: float, config: HealerConfig, plan: Callable[[str], HealPlan | None]) -> Claim:
    """Decide, and record, what follows ``heal_id`` now that its alert was re-sent firing.
    Runs as one journal write (``journal.transaction``)."""
    heal = _read_heal(db, heal_id)
    if heal is None or heal["fingerprint"] is None or heal["rule"] is None:
        return Claim("none")
    if heal["phase"] != "done":
        return Claim("none", settled=False)  # running (or to be re-verified): not yet
    if heal["outcome"] != Outcome.NOT_RECOVERED:
        return Claim("none")
    starts = alert_key_time(datetime.fromisoformat(heal["alert_starts_at"]))
    if alert_resolved_at(db, (heal["fingerprint"], starts)) is not None:
        return Claim("none")
    row = db.execute("SELECT kind, run_id, deliveries FROM follow_ups WHERE heal_id=?",
                     (heal_id,)).fetchone()
    if row is not None:
        if row["kind"] == "escalate" and row["deliveries"] is None and row["run_id"] != run_id:
            # The process that claimed it died before recording its deliveries.
            db.execute("UPDATE follow_ups SET run_id=?, at=? WHERE heal_id=?",
                       (run_id, now, heal_id))
            return Claim("escalate", heal)
        return Claim("none")
    mode = config.on_not_recovered(heal["rule"])
    if mode == "escalate":
        told = db.execute("SELECT 1 FROM follow_ups WHERE fingerprint=? AND starts_at=? AND"
                          " kind='escalate'", (heal["fingerprint"], starts)).fetchone()
        if told is not None:
            return Claim("none")
        _insert(db, heal, starts, "escalate", run_id, now)
        journal.event(db, heal_id, Phase.DONE, "not_recovered_escalation", {
            "on_not_recovered": "escalate", "reason": "the alert still fires after the heal"
            " ended not_recovered"}, now)
        return Claim("escalate", heal)
    rule_plan = plan(heal["rule"])
    if rule_plan is None:
        return Claim("none")  # the rule is gone from the config
    left = _cooldown_left(db, heal, config, now)
    if left > 0:
        return Claim("wait", heal, left=left, settled=False)
    alert = _heal_alert(heal)
    retry_id = journal.insert_heal(db, rule_plan, alert, "retry", now)
    _insert(db, heal, starts, "retry", run_id, now, retry_id=retry_id)
    # Later re-sends of the alert are duplicates of the retry, and follow it.
    db.execute("UPDATE alerts SET heal_id=? WHERE fingerprint=? AND starts_at=? AND"
               " status='firing'", (retry_id, heal["fingerprint"], starts))
    journal.event(db, heal_id, Phase.DONE, "retried", {"retry_heal_id": retry_id}, now)
    journal.event(db, retry_id, Phase.PENDING, "retry_of", {
        "heal_id": heal_id, "outcome": heal["outcome"], "reason": heal["reason"]}, now)
    return Claim("retry", heal, retry=HealJob(
        heal_id=retry_id, rule=rule_plan.rule, handler=rule_plan.handler,
        params=rule_plan.params, verify=rule_plan.verify, dry_run=rule_plan.dry_run,
        alert=alert, labels=alert.labels, annotations=alert.annotations))


def _insert(db: sqlite3.Connection, heal: dict[str, Any], starts: str, kind: str,
            run_id: str, now: float, retry_id: str | None = None) -> None:
    db.execute("INSERT INTO follow_ups (heal_id, fingerprint, starts_at, kind, at, run_id,"
               " retry_id) VALUES (?,?,?,?,?,?,?)",
               (heal["id"], heal["fingerprint"], starts, kind, now, run_id, retry_id))


def _cooldown_left(db: sqlite3.Connection, heal: dict[str, Any], config: HealerConfig,
                   now: float) -> float:
    """How long until the rule's cooldown on the heal's targets has passed (the gates'
    own rule: since the rule last acted on any of them)."""
    rule = config.rule(heal["rule"])
    cooldown = (rule.cooldown if rule is not None and rule.cooldown is not None
                else config.safety.cooldown)
    targets = list(heal["targets"])
    if not targets:
        return 0.0
    last = db.execute(
        f"SELECT MAX(at) FROM safety_actions WHERE rule=? AND target IN"
        f" ({','.join('?' * len(targets))})", (heal["rule"], *targets)).fetchone()[0]
    return 0.0 if last is None else max(cooldown - (now - last), 0.0)


def record_deliveries(db: sqlite3.Connection, heal_id: str,
                      deliveries: list[dict[str, Any]]) -> None:
    db.execute("UPDATE follow_ups SET deliveries=? WHERE heal_id=?",
               (json.dumps(deliveries), heal_id))


def candidates(db: sqlite3.Connection) -> list[str]:
    """Heals a re-send may still follow up: ``not_recovered`` without a follow-up, or with
    an escalation whose deliveries were never recorded."""
    return [r[0] for r in db.execute(
        "SELECT h.id FROM heals h LEFT JOIN follow_ups f ON f.heal_id = h.id"
        " WHERE h.outcome = 'not_recovered' AND h.phase = 'done' AND h.fingerprint IS NOT NULL"
        " AND (f.heal_id IS NULL OR (f.kind = 'escalate' AND f.deliveries IS NULL))")]


class FollowUps:
    def __init__(self, *, journal: Journal, config: HealerConfig, rules: RuleSet,
                 notifiers: Notifiers, metrics: Metrics) -> None:
        self._journal = journal
        self._config = config
        self._rules = rules
        self._notifiers = notifiers
        self._metrics = metrics
        self._run_id = uuid.uuid4().hex
        # Heals that ended not_recovered and were not followed up yet: a re-send of any
        # other heal's alert costs nothing here (no journal round trip).
        self._candidates: set[str] = set()
        self._busy: set[str] = set()  # being decided in this process
        self._tasks: set[asyncio.Task[None]] = set()
        self._submit: Callable[[HealJob], None] | None = None
        self._log = structlog.get_logger("healer.followup")

    async def start(self, *, submit: Callable[[HealJob], None]) -> None:
        self._submit = submit
        self._candidates = set(await self._journal.read(candidates))

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait (bounded) until no follow-up is being decided or delivered."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    async def stop(self) -> None:
        """Let decisions in flight finish (each is one write, and maybe a notification);
        cancel what is left after 10 s (a re-send after the next start decides again)."""
        await self.drain(10.0)
        for task in set(self._tasks):
            task.cancel()

    def note_not_recovered(self, heal_id: str) -> None:
        self._candidates.add(heal_id)

    def duplicates(self, heal_ids: Iterable[str | None]) -> None:
        """Re-sends of firing alerts arrived for these heals: decide, in the background,
        what follows those that ended not_recovered."""
        for heal_id in heal_ids:
            if heal_id is None or heal_id not in self._candidates or heal_id in self._busy:
                continue
            self._busy.add(heal_id)
            task = asyncio.create_task(self._follow(heal_id), name=f"follow-up-{heal_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _follow(self, heal_id: str) -> None:
        log = self._log.bind(heal_id=heal_id)
        try:
            now = time.time()
            decided = await self._journal.transaction(lambda db: claim(
                db, self._journal, heal_id, run_id=self._run_id, now=now,
                config=self._config, plan=self._plan))
            if decided.settled:
                self._candidates.discard(heal_id)
            if decided.kind == "wait":
                log.info("not_recovered: retry after the cooldown", rule=decided.heal["rule"],
                         cooldown_left=format_seconds(decided.left))
            elif decided.kind == "retry":
                assert decided.retry is not None and self._submit is not None
                self._count(decided, "retry")
                log.warning("not_recovered and still firing: retrying",
                            rule=decided.heal["rule"], retry_heal_id=decided.retry.heal_id)
                self._submit(decided.retry)
            elif decided.kind == "escalate":
                self._count(decided, "escalate")
                await self._escalate(decided.heal, log)
        except asyncio.CancelledError:
            raise
        except Exception:  # the journal may be unavailable: the next re-send tries again
            log.exception("follow-up of a not_recovered heal failed")
        finally:
            self._busy.discard(heal_id)

    def _plan(self, rule: str) -> HealPlan | None:
        conf = self._rules.get(rule)
        return self._rules.plan(conf) if conf is not None else None

    def _count(self, decided: Claim, kind: str) -> None:
        self._metrics.follow_ups.labels(rule=decided.heal["rule"], kind=kind).inc()

    async def _escalate(self, heal: dict[str, Any], log: Any) -> None:
        log.warning("not_recovered and still firing: escalating", rule=heal["rule"],
                    notifiers=self._notifiers.names)
        esc = Escalation(rule=heal["rule"], target=", ".join(heal["targets"]) or "-",
                         heal_id=heal["id"], reason=heal["reason"] or "not recovered",
                         opened_at=heal["finished_at"] or time.time(),
                         labels=heal["labels"], event="not_recovered")
        deliveries = [d.as_dict() for d in await self._notifiers.send(esc)] or [
            {"notifier": None, "ok": False, "error": "no notifier configured"}]
        now = time.time()

        def _record(db: sqlite3.Connection) -> None:
            for delivery in deliveries:
                self._journal.event(db, heal["id"], Phase.DONE, "escalation", delivery, now)
            record_deliveries(db, heal["id"], deliveries)

        await self._journal.transaction(_record)
        for delivery in deliveries:
            log.info("escalation delivery", notifier=delivery["notifier"], ok=delivery["ok"],
                     error=delivery.get("error"))

