"""The safety gates between "the handler wants to act" and acting: pause, min_firing,
a resolved alert, open circuits, cooldown and budget. Their state is in the journal
(:mod:`healer.store`), so it survives a restart.

Usage (the executor, one heal)::

    wait = gates.firing_wait(rule, alert)   # None, or {"wait": 42.0, ...}: the executor
                                            # sets a timer; the heal holds no slot
    verdict = await gates.before_check(heal_id=..., rule=..., alert=..., waited=..., log=log)
    # -> None, or (Outcome.SUPPRESSED, "paused: deploy (...)");
    #    raises Deferred when healer stops (the heal stays pending)
    verdict = await gates.resolved(rule, alert)
    # -> None, or (Outcome.NO_ACTION, "resolved before acting: ...")
    verdict = await gates.admit(heal_id=..., rule=..., targets=keys, alert=..., record=..., log=log)
    # -> None (action recorded: go on and act), (NO_ACTION, "resolved before acting: ..."),
    #    (SUPPRESSED, "cooldown (4m left) ..."), (SUPPRESSED, "circuit open: ..."),
    #    (ESCALATED, "budget spent: ...")

and (the API / CLI)::

    await gates.pause(1800, "deploy"); await gates.resume(); await gates.pause_state()
    await gates.circuits(); await gates.close("poke", target="test:t1")

Decisions, in order, for a heal of a rule (manual heals by handler only meet the pause):

* pause active -> ``suppressed``, "paused: <reason> (until ..., N left)"; checked before
  ``check`` and again before acting.
* the alert fired for less than ``min_firing`` -> the heal *waits* (pending, holding no
  concurrency slot, on a timer) until it is old enough, then checks. Waiting, not
  suppressing: Alertmanager's re-sends of the same alert are duplicates, so a suppressed
  young alert would never be healed. After a restart the pending heal waits for what is
  left.
* Alertmanager reported the alert resolved before the heal acted -> ``no_action``,
  "resolved before acting: ...": resolved alerts never trigger actions. Looked at when a
  resolve arrives for a waiting heal (it ends at once), after any wait (min_firing, a
  concurrency slot, a restart), before a dry run's verdict and, atomically, in the
  admission below.
* an open circuit on a target -> the first heal to meet it ``escalated``, the rest
  ``suppressed``, "circuit open: ...".
* the rule acted on a target less than ``cooldown`` ago -> ``suppressed``,
  "cooldown (4m10s left): ...".
* ``budget.max_actions`` actions by the rule on a target within ``budget.window`` -> the
  circuit opens, this heal ``escalated``: the notifiers are told once.
* otherwise the action is recorded (it counts even if ``act`` then fails) and the heal acts.

A circuit closes when a human says so (``DELETE /api/v1/circuits/{rule}``) or after
``circuit_quiet`` without a new alert meeting it; closing starts the budget afresh.
Dry-run heals end before the gates: they never spend budget or start a cooldown.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from healer.api import Alert
from healer.config import HealerConfig
from healer.metrics import Metrics
from healer.notify import Escalation, Notifiers
from healer.outcomes import Outcome, Phase, RecordStep
from healer.store import CircuitRow, Decision, Limits, PauseRow, Store, alert_key_time
from healer.timefmt import format_seconds

GateStop = tuple[Outcome, str] | None
"""What a gate answers: None lets the heal go on; ``(outcome, reason)`` ends it there."""


class PauseView(PauseRow):
    """The pause as the API shows it: the row, its times in ISO 8601 and what is left."""

    until_iso: str
    since_iso: str
    left_seconds: float


def alert_key(alert: Alert) -> tuple[str, str]:
    """The journal's identity of an alert: (fingerprint, startsAt in whole seconds)."""
    return alert.fingerprint, alert_key_time(alert.starts_at)


class Deferred(Exception):
    """healer is stopping while a heal waits for ``min_firing``: it stays pending in the
    journal and the next start resumes the wait."""


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class SafetyGates:
    def __init__(
        self, *, journal: Store, config: HealerConfig, notifiers: Notifiers, metrics: Metrics
    ) -> None:
        self._journal = journal
        self._config = config
        self._notifiers = notifiers
        self._metrics = metrics
        self._stopping = asyncio.Event()
        self._sweeper: asyncio.Task[None] | None = None
        self._gauged: set[str] = {r.name for r in config.rules}
        # The pause row, mirrored in memory once start() has read it: only this process
        # writes it (the CLI goes through the API), and every heal consults it.
        self._pause: PauseRow | None = None
        self._pause_loaded = False
        self._log = structlog.get_logger("healer.gates")

    # ---- life --------------------------------------------------------------------

    async def start(self) -> None:
        """Set healer_circuit_open from the journal, load the pause, and start closing
        quiet circuits."""
        await self._refresh_gauge()
        now = time.time()
        self._pause = await self._journal.get_pause(now)
        self._pause_loaded = True
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="healer-safety-sweep")

    async def stop(self) -> None:
        """Defer every heal not yet checking (it stays pending) and stop the sweeper."""
        self._stopping.set()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    # ---- settings ----------------------------------------------------------------

    def limits(self, rule: str | None) -> Limits | None:
        if rule is None:
            return None
        safety = self._config.safety
        conf = self._config.rule(rule)
        budget = conf.budget if conf is not None else None
        return Limits(
            cooldown=conf.cooldown
            if conf is not None and conf.cooldown is not None
            else safety.cooldown,
            max_actions=budget.max_actions
            if budget and budget.max_actions is not None
            else safety.budget.max_actions,
            window=budget.window if budget and budget.window is not None else safety.budget.window,
            quiet=safety.circuit_quiet,
        )

    def approval_mode(self, rule: str | None) -> tuple[str, float]:
        """The rule's ``mode`` (auto, suggest, approve) and its approval timeout in
        seconds (manual heals: auto)."""
        conf = self._config.rule(rule) if rule is not None else None
        if conf is None:
            return "auto", self._config.approval.timeout
        approval = conf.approval if conf.approval is not None else self._config.approval
        return conf.mode, approval.timeout

    def min_firing(self, rule: str | None) -> float:
        conf = self._config.rule(rule) if rule is not None else None
        if conf is not None and conf.min_firing is not None:
            return conf.min_firing
        return self._config.safety.min_firing

    # ---- the executor's two calls ------------------------------------------------

    def firing_wait(self, rule: str | None, alert: Alert | None) -> dict[str, float] | None:
        """How long a heal must still wait for its alert's ``min_firing``: None when it
        need not wait, else ``{"wait", "min_firing", "firing_for", "act_after"}`` (what
        the ``min_firing_wait`` timeline entry records). The executor does the waiting,
        with a timer; a waiting heal holds no concurrency slot."""
        need = self.min_firing(rule)
        if alert is None or need <= 0:
            return None
        now = time.time()
        firing_for = now - alert.starts_at.timestamp()
        if firing_for >= need:
            return None
        wait = min(need - firing_for, need)  # an alert from the future waits min_firing
        return {
            "wait": wait,
            "min_firing": need,
            "firing_for": round(firing_for, 3),
            "act_after": round(now + wait, 3),
        }

    async def before_check(
        self, *, heal_id: str, rule: str | None, alert: Alert | None, waited: bool, log: Any
    ) -> GateStop:
        """The pause; after a min_firing wait (``waited``), the wait's end is recorded
        first. Raises Deferred when healer is stopping (the heal stays pending), LeaseLost
        when another replica took the heal over meanwhile (nothing written)."""
        if self._stopping.is_set():
            raise Deferred
        if waited and alert is not None:
            # Fenced: a replica frozen through its wait may have lost the heal meanwhile.
            await self._journal.add_event(
                heal_id,
                Phase.PENDING,
                "min_firing_reached",
                {"firing_for": round(time.time() - alert.starts_at.timestamp(), 3)},
                fenced=True,
            )
        if (paused := await self._paused_reason()) is not None:
            return Outcome.SUPPRESSED, paused
        return None

    def paused_now(self) -> bool:
        """Is a pause active, as far as memory knows (before start(): no)?"""
        return self._pause is not None and self._pause["until"] > time.time()

    async def resolved(self, rule: str | None, alert: Alert | None) -> GateStop:
        """``(NO_ACTION, "resolved before acting: ...")`` once Alertmanager's resolved
        notification for this alert is journaled, else None."""
        if alert is None:
            return None
        key = alert_key(alert)
        at = await self._journal.alert_resolved_at(key)
        return None if at is None else self.resolved_verdict(rule, alert, at)

    def resolved_verdict(
        self, rule: str | None, alert: Alert, resolved_at: float
    ) -> tuple[Outcome, str]:
        """The no_action verdict of a heal whose alert resolved at ``resolved_at`` (when
        healer received the notification) before the heal acted."""
        fired = max(resolved_at - alert.starts_at.timestamp(), 0.0)
        need = self.min_firing(rule)
        young = f" (min_firing {format_seconds(need)})" if fired < need else ""
        return Outcome.NO_ACTION, (
            f"resolved before acting: Alertmanager reported the alert resolved at "
            f"{iso(resolved_at)}, after it fired for {format_seconds(fired)}{young}"
        )

    async def admit(
        self,
        *,
        heal_id: str,
        rule: str | None,
        targets: Sequence[str],
        alert: Alert | None,
        record: RecordStep,
        log: Any,
    ) -> GateStop:
        """Decide and record, in one journal transaction, whether the heal may act now."""
        limits = self.limits(rule)
        now = time.time()
        keys = list(targets)
        key = alert_key(alert) if alert is not None else None
        decision = await self._journal.admit(heal_id, rule, keys, limits, now, key)
        if rule is not None and decision.kind != "resolved":
            await self._refresh_gauge()  # the admission may have closed a quiet circuit
        if decision.kind == "act":
            return None
        if decision.kind == "resolved":
            assert alert is not None
            return self.resolved_verdict(rule, alert, decision.resolved_at)
        if decision.kind == "paused":
            assert decision.pause is not None
            return Outcome.SUPPRESSED, self._format_pause(decision.pause, now)
        assert rule is not None and limits is not None and decision.target is not None
        if decision.kind == "cooldown":
            return Outcome.SUPPRESSED, (
                f"cooldown ({format_seconds(decision.left)} left): {rule} acted on "
                f"{decision.target} less than {format_seconds(limits.cooldown)} ago"
            )
        assert decision.circuit is not None
        circuit = decision.circuit
        if decision.kind == "circuit_open":
            return Outcome.SUPPRESSED, (
                f"circuit open: {rule} on {decision.target} since {iso(circuit['opened_at'])}"
                f" ({circuit['reason']}); close it with `healer circuit-close {rule} --target "
                f"{decision.target}` or after {format_seconds(limits.quiet)} without an alert"
            )
        return Outcome.ESCALATED, await self._escalate(
            heal_id, rule, decision, alert, limits, record, log
        )

    async def _escalate(
        self,
        heal_id: str,
        rule: str,
        decision: Decision,
        alert: Alert | None,
        limits: Limits,
        record: RecordStep,
        log: Any,
    ) -> str:
        circuit = decision.circuit
        assert circuit is not None and decision.target is not None
        await record(
            "circuit_open",
            {
                "rule": rule,
                "target": decision.target,
                "reason": circuit["reason"],
                "opened_at": circuit["opened_at"],
            },
        )
        log.warning(
            "circuit open: escalating",
            target=decision.target,
            reason=circuit["reason"],
            notifiers=self._notifiers.names,
        )
        if not decision.deliver:
            await record("escalation", {"already_delivered": circuit["escalation"]})
            return f"{circuit['reason']}: circuit open, already escalated"
        esc = Escalation(
            rule=rule,
            target=decision.target,
            heal_id=heal_id,
            reason=circuit["reason"],
            opened_at=circuit["opened_at"],
            labels=dict(alert.labels) if alert else {},
            quiet=limits.quiet,
        )
        deliveries = await self._deliver(esc, record, log)
        await self._journal.record_escalation(rule, decision.target or "", heal_id, deliveries)
        reached = sum(1 for d in deliveries if d["ok"])
        return (
            f"{circuit['reason']}: circuit opened, escalated "
            f"({reached}/{len(deliveries)} notifiers reached)"
        )

    async def _deliver(self, esc: Escalation, record: RecordStep, log: Any) -> list[dict[str, Any]]:
        """Send ``esc`` through every notifier (with their retries); each delivery (or
        "no notifier configured") on the heal's timeline."""
        deliveries = [d.as_dict() for d in await self._notifiers.send(esc)]
        for delivery in deliveries:
            await record("escalation", delivery)
            log.info(
                "escalation delivery",
                notifier=delivery["notifier"],
                ok=delivery["ok"],
                attempts=delivery["attempts"],
                status=delivery["status"],
                error=delivery["error"],
            )
        if not deliveries:
            await record(
                "escalation", {"notifier": None, "ok": False, "error": "no notifier configured"}
            )
            log.warning("escalation: no notifier configured")
        return deliveries

    async def escalate_expired(
        self,
        *,
        heal_id: str,
        rule: str,
        targets: Sequence[str],
        alert: Alert | None,
        reason: str,
        record: RecordStep,
        log: Any,
    ) -> str:
        """Tell the notifiers, once, that ``heal_id`` asked for approval and nobody
        answered (the caller closed the approval ``expire``: only it escalates); what
        the heal's reason says of it."""
        log.warning("approval expired: escalating", notifiers=self._notifiers.names)
        esc = Escalation(
            rule=rule,
            target=", ".join(targets) or "-",
            heal_id=heal_id,
            reason=reason,
            opened_at=time.time(),
            labels=dict(alert.labels) if alert else {},
            event="approval_expired",
        )
        deliveries = await self._deliver(esc, record, log)
        reached = sum(1 for d in deliveries if d["ok"])
        return f"escalated ({reached}/{len(deliveries)} notifiers reached)"

    # ---- API ---------------------------------------------------------------------

    async def pause(self, seconds: float, reason: str) -> PauseView:
        now = time.time()
        pause = await self._journal.set_pause(now, now + seconds, reason)
        self._pause = pause
        self._log.warning("healer paused", until=iso(pause["until"]), reason=reason)
        return self._pause_view(pause, now)

    async def resume(self) -> PauseView | None:
        """End the pause; the pause that was active, or None."""
        now = time.time()
        was = await self._journal.clear_pause(now)
        self._pause = None
        if was is not None:
            self._log.warning("healer resumed", paused_since=iso(was["since"]))
        return self._pause_view(was, now) if was is not None else None

    async def pause_state(self) -> PauseView | None:
        now = time.time()
        pause = await self._journal.get_pause(now)
        return self._pause_view(pause, now) if pause is not None else None

    async def circuits(self, *, include_closed: bool = False) -> list[CircuitRow]:
        await self._sweep_once()
        rows = await self._journal.list_circuits(include_closed=include_closed)
        for row in rows:
            limits = self.limits(row["rule"])
            assert limits is not None
            if row["state"] == "open":
                row["closes_at"] = row["last_alert_at"] + limits.quiet
        return rows

    async def close(
        self, rule: str, *, target: str | None = None, by: str = "api"
    ) -> list[CircuitRow]:
        now = time.time()
        closed = await self._journal.close_circuits(rule, target, now, by)
        for circuit in closed:
            self._log.warning("circuit closed", rule=rule, target=circuit["target"], by=by)
        await self._refresh_gauge()
        return closed

    # ---- internals ---------------------------------------------------------------

    async def _paused_reason(self) -> str | None:
        now = time.time()
        if self._pause_loaded:
            pause = self._pause if self._pause and self._pause["until"] > now else None
        else:
            pause = await self._journal.get_pause(now)
        return self._format_pause(pause, now) if pause is not None else None

    @staticmethod
    def _format_pause(pause: PauseRow, now: float) -> str:
        reason = pause["reason"] or "no reason given"
        return (
            f"paused: {reason} (until {iso(pause['until'])}, "
            f"{format_seconds(pause['until'] - now)} left)"
        )

    @staticmethod
    def _pause_view(pause: PauseRow, now: float) -> PauseView:
        return PauseView(
            **pause,
            until_iso=iso(pause["until"]),
            since_iso=iso(pause["since"]),
            left_seconds=round(max(pause["until"] - now, 0.0), 3),
        )

    async def _refresh_gauge(self) -> None:
        opened = await self._journal.open_rules()
        self._gauged |= opened
        for rule in self._gauged:
            self._metrics.circuit_open.labels(rule=rule).set(1 if rule in opened else 0)

    async def _sweep_once(self) -> None:
        now = time.time()
        quiet = self._config.safety.circuit_quiet
        closed = await self._journal.sweep(now, quiet)
        for circuit in closed:
            self._log.info(
                "circuit closed after quiet period",
                rule=circuit["rule"],
                target=circuit["target"],
                quiet=quiet,
            )
        if closed:
            await self._refresh_gauge()

    async def _sweep_loop(self) -> None:
        interval = min(max(self._config.safety.circuit_quiet / 4, 0.05), 30.0)
        while True:
            await asyncio.sleep(interval)
            try:
                await self._sweep_once()
            except Exception:  # the journal may be briefly unavailable: try next time
                self._log.exception("safety sweep failed")
