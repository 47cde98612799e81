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
written in the same store transaction that reads the heal
(:meth:`healer.store.Store.claim_follow_up`), so racing re-sends find it and a restart
keeps it. A retry heal is created in that same
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
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import structlog

from healer.config import HealerConfig
from healer.executor import HealJob
from healer.metrics import Metrics
from healer.notices import tells
from healer.notify import Escalation, Notifiers
from healer.rules import RuleSet
from healer.store import FollowUpHeal, FollowUpPolicy, HealPlan, Store
from healer.timefmt import format_seconds

Kind = Literal["none", "wait", "escalate", "retry"]


@dataclass(frozen=True, slots=True)
class Claim:
    """What one re-send decided. ``none``: nothing follows (not ``not_recovered``, already
    followed up, resolved, rule gone); ``wait``: retry, but the cooldown has ``left``."""

    kind: Kind
    heal: FollowUpHeal | None = None  # None: no heal a re-send follows
    left: float = 0.0
    settled: bool = True  # nothing will ever follow this heal again
    retry: HealJob | None = None


def policy(config: HealerConfig, plan: Callable[[str], HealPlan | None]) -> FollowUpPolicy:
    """What a claim asks of the configuration: each rule's ``on_not_recovered``, its
    cooldown (the gates' own: the rule's, else ``safety.cooldown``) and what a retry runs."""

    def cooldown(rule: str) -> float:
        conf = config.rule(rule)
        return (
            conf.cooldown
            if conf is not None and conf.cooldown is not None
            else config.safety.cooldown
        )

    return FollowUpPolicy(mode=config.on_not_recovered, cooldown=cooldown, plan=plan)


async def claim(
    store: Store, heal_id: str, *, run_id: str, now: float, policy: FollowUpPolicy
) -> Claim:
    """Decide, and record, what follows ``heal_id`` now that its alert was re-sent firing:
    one store write (:meth:`healer.store.Store.claim_follow_up`)."""
    decided = await store.claim_follow_up(heal_id, run_id=run_id, now=now, policy=policy)
    retry = None
    if decided.kind == "retry":
        plan, alert = decided.retry_plan, decided.retry_alert
        assert decided.retry_id is not None and plan is not None and alert is not None
        retry = HealJob(
            heal_id=decided.retry_id,
            rule=plan.rule,
            handler=plan.handler,
            params=plan.params,
            verify=plan.verify,
            dry_run=plan.dry_run,
            alert=alert,
            labels=alert.labels,
            annotations=alert.annotations,
        )
    return Claim(
        decided.kind, decided.heal, left=decided.left, settled=decided.settled, retry=retry
    )


class FollowUps:
    def __init__(
        self,
        *,
        journal: Store,
        config: HealerConfig,
        rules: RuleSet,
        notifiers: Notifiers,
        metrics: Metrics,
    ) -> None:
        self._journal = journal
        self._config = config
        self._rules = rules
        self._notifiers = notifiers
        self._metrics = metrics
        self._run_id = uuid.uuid4().hex
        self._policy = policy(config, self._plan)
        # Heals that ended not_recovered and were not followed up yet: a re-send of any
        # other heal's alert costs nothing here (no journal round trip).
        self._candidates: set[str] = set()
        self._busy: set[str] = set()  # being decided in this process
        self._tasks: set[asyncio.Task[None]] = set()
        self._submit: Callable[[HealJob], None] | None = None
        self._log = structlog.get_logger("healer.followup")

    async def start(self, *, submit: Callable[[HealJob], None]) -> None:
        self._submit = submit
        self._candidates = set(await self._journal.follow_up_candidates())

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
            decided = await claim(
                self._journal, heal_id, run_id=self._run_id, now=now, policy=self._policy
            )
            if decided.settled:
                self._candidates.discard(heal_id)
            heal = decided.heal
            if decided.kind == "none":
                return
            assert heal is not None  # every other decision names the heal it follows
            if decided.kind == "wait":
                log.info(
                    "not_recovered: retry after the cooldown",
                    rule=heal["rule"],
                    cooldown_left=format_seconds(decided.left),
                )
            elif decided.kind == "retry":
                assert decided.retry is not None and self._submit is not None
                self._count(heal, "retry")
                log.warning(
                    "not_recovered and still firing: retrying",
                    rule=heal["rule"],
                    retry_heal_id=decided.retry.heal_id,
                )
                self._submit(decided.retry)
            elif decided.kind == "escalate":
                self._count(heal, "escalate")
                await self._escalate(heal, log)
        except asyncio.CancelledError:
            raise
        except Exception:  # the journal may be unavailable: the next re-send tries again
            log.exception("follow-up of a not_recovered heal failed")
        finally:
            self._busy.discard(heal_id)

    def _plan(self, rule: str) -> HealPlan | None:
        conf = self._rules.get(rule)
        return self._rules.plan(conf) if conf is not None else None

    def _count(self, heal: FollowUpHeal, kind: str) -> None:
        self._metrics.follow_ups.labels(rule=heal["rule"], kind=kind).inc()

    async def _escalate(self, heal: FollowUpHeal, log: Any) -> None:
        if len(self._notifiers) and tells(self._config, heal["rule"], "not_recovered"):
            # Told once: the heal's not_recovered notice (healer/notices.py) told people.
            log.info("not_recovered and still firing: told by the not_recovered notice")
            told = {"notifier": None, "ok": True, "told_by": "not_recovered notice"}
            await self._journal.record_follow_up_deliveries(heal["id"], [told])
            return
        log.warning(
            "not_recovered and still firing: escalating",
            rule=heal["rule"],
            notifiers=self._notifiers.names,
        )
        esc = Escalation(
            rule=heal["rule"],
            target=", ".join(heal["targets"]) or "-",
            heal_id=heal["id"],
            reason=heal["reason"] or "not recovered",
            opened_at=heal["finished_at"] or time.time(),
            labels=heal["labels"],
            event="not_recovered",
        )
        deliveries = [d.as_dict() for d in await self._notifiers.send(esc)] or [
            {"notifier": None, "ok": False, "error": "no notifier configured"}
        ]
        await self._journal.record_follow_up_deliveries(heal["id"], deliveries)
        for delivery in deliveries:
            log.info(
                "escalation delivery",
                notifier=delivery["notifier"],
                ok=delivery["ok"],
                error=delivery.get("error"),
            )
