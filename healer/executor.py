"""Where a heal runs: check -> (allowlist, dry-run, target lock, safety gates) -> act -> verify.

Usage::

    executor = Executor(journal=store, handlers=registry, metrics=metrics, verifier=verifier,
                        docker=docker, postgres=postgres, allowlist=allowlist,
                        max_concurrent=8, gates=gates)   # the app factory builds it
    executor.submit(job)          # returns at once; the heal runs as a task (after a
                                  # min_firing timer for a young alert: no task meanwhile)
    executor.alert_resolved(fingerprint, starts_at)   # a journaled resolve: waiting heals end
    await executor.resume()       # at start-up: take over what no live replica holds (a
                                  # previous run's heals): rerun what had not acted, re-verify
                                  # the rest; then keep its leases and take over dead ones'
    await executor.close(grace)   # at shutdown: let heals finish, journal the rest interrupted

Leases: every heal this executor runs or waits on is leased to its replica in the store;
a heartbeat renews them every ``renew_every`` and takes over heals whose lease expired
(another replica died: today's restart rules, see :meth:`Executor.resume`). A heal whose
lease was lost (a renewal says so, or a fenced write raises LeaseLost) is cancelled and
nothing more is written for it: its new owner carries it on. Before acting, a heal takes
its targets' locks in the store (fleet-wide), after the in-process fast path.

A heal whose alert Alertmanager reported resolved before it acted ends ``no_action``
("resolved before acting: ..."), whichever way it waited: for min_firing (ended when the
resolve arrives), for a concurrency slot, across a restart, or while it checked (the
admission reads the resolve in the same transaction that records the action).

Every step lands in the journal timeline before the next one starts, every end
is one outcome of ``healer.outcomes.Outcome`` and one increment of
``healer_heals_total``. Any exception from a handler ends the heal ``failed``
with the error recorded; it never reaches the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, cast

import structlog
from pydantic import ValidationError

from healer.api import Alert, CheckResult, HealContext
from healer.docker_adapter import DockerAdapter
from healer.docker_engines import DockerEngines, engine_for
from healer.errors import ActionFailed, HealError, InvalidParams, LeaseLost, TargetRefused
from healer.gates import Deferred, SafetyGates, alert_key
from healer.metrics import Metrics
from healer.notices import OUTCOME_EVENTS, ApprovalRequest, HealNotice, HealNotices, NoticeEvent
from healer.outcomes import HealState, Outcome, Phase
from healer.plugins import HandlerRegistry
from healer.postgres_adapter import PostgresAdapter
from healer.store import HealRow, Store, TakenHeal, alert_key_time
from healer.store.types import ApprovalRow, token_hash
from healer.targets import Allowlist, TargetLocks
from healer.templating import render_params
from healer.timefmt import format_seconds
from healer.verify import Condition, Verifier
from healer.waits import FiringWaits

MANUAL = "(manual)"
# How often a heal waiting for a human looks at the store for a decision taken by
# another replica (one taken in this process, or the alert's resolve, wakes it at once).
APPROVAL_POLL = 1.0
# Phases in which nothing was changed yet: a resumed heal runs again from the start.
_FRESH = (Phase.PENDING, Phase.CHECKING, Phase.AWAITING_APPROVAL)


@dataclass(frozen=True, slots=True)
class HealJob:
    heal_id: str
    rule: str | None
    handler: str
    params: dict[str, Any]
    verify: dict[str, Any]
    dry_run: bool
    alert: Alert | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str | None:
        return self.alert.fingerprint if self.alert else None

    @property
    def engine(self) -> str | None:
        """The rule's (or manual heal's) ``engine``, alert data not yet substituted: it
        is journaled with the verify spec (``verify.engine``), so a heal resumed after a
        restart acts on the engine it was meant for."""
        engine = self.verify.get("engine")
        return engine if isinstance(engine, str) else None

    @classmethod
    def from_row(cls, row: HealRow) -> HealJob:
        alert = None
        if row["fingerprint"]:
            starts = row["alert_starts_at"]
            assert starts is not None  # an alert's heal keeps its startsAt
            alert = Alert(
                fingerprint=row["fingerprint"],
                status="firing",
                labels=row["labels"],
                annotations=row["annotations"],
                starts_at=datetime.fromisoformat(starts),
            )
        return cls(
            heal_id=row["id"],
            rule=row["rule"],
            handler=row["handler"],
            params=row["params"],
            verify=row["verify"],
            dry_run=row["dry_run"],
            alert=alert,
            labels=row["labels"],
            annotations=row["annotations"],
        )


class _Slot:
    """One heal's concurrency slot, given back while the heal waits for a human (a heal
    awaiting approval must not keep others from running) and taken again after."""

    def __init__(self, slots: asyncio.Semaphore) -> None:
        self._slots = slots
        self.held = False

    async def take(self) -> None:
        await self._slots.acquire()
        self.held = True

    def give(self) -> None:
        if self.held:
            self.held = False
            self._slots.release()

    async def __aenter__(self) -> _Slot:
        await self.take()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.give()


@dataclass(slots=True)
class _Checked:
    """What a check found, with what acting needs."""

    ctx: HealContext
    params: Any
    check: CheckResult
    keys: list[str]


def _on_engine(check: CheckResult, engine: str) -> CheckResult:
    """``check`` with the heal's engine on each Docker target the handler named (handlers
    build ``Target(kind="docker", name=...)``): the allowlist's ``engine`` globs, the
    locks and the gates then tell one host's ``web-1`` from another's."""
    if not any(t.kind == "docker" and t.engine is None for t in check.targets):
        return check
    targets = [
        dataclasses.replace(t, engine=engine) if t.kind == "docker" and t.engine is None else t
        for t in check.targets
    ]
    return dataclasses.replace(check, targets=targets)


class _NoEngine:
    """``ctx.docker`` of a handler that does not require docker, when there is no engine
    ``default``: any use fails the heal with a message saying why."""

    def __getattr__(self, name: str) -> Any:
        raise ActionFailed(
            "this handler does not list docker in requires, and no docker engine "
            "'default' is configured"
        )


class _End(Exception):
    def __init__(self, outcome: Outcome, reason: str) -> None:
        self.outcome = outcome
        self.reason = reason


class Executor:
    def __init__(
        self,
        *,
        journal: Store,
        handlers: HandlerRegistry,
        metrics: Metrics,
        verifier: Verifier,
        docker: DockerEngines,
        postgres: PostgresAdapter,
        allowlist: Allowlist,
        max_concurrent: int,
        gates: SafetyGates,
        on_not_recovered: Callable[[str], None] | None = None,
        renew_every: float = 5.0,
        notices: HealNotices | None = None,
    ) -> None:
        self._journal = journal
        self._handlers = handlers
        self._metrics = metrics
        self._verifier = verifier
        self._docker = docker
        self._postgres = postgres
        self._allowlist = allowlist
        self._gates = gates
        # Told of each alert's heal that ends not_recovered (healer/followup.py).
        self._on_not_recovered = on_not_recovered
        self._locks = TargetLocks()
        # Told of each heal's events (notify_on, approvals): healer/notices.py.
        self._notices = notices if notices is not None else HealNotices()
        self._slots = asyncio.Semaphore(max_concurrent)
        self._tasks: set[asyncio.Task[None]] = set()
        # The task running each heal (the latest one), for the lease heartbeat.
        self._running: dict[str, asyncio.Task[None]] = {}
        self._lost: set[str] = set()  # heals taken over by another replica: write nothing
        self._renew_every = renew_every
        self._leases: asyncio.Task[None] | None = None
        self._waits: FiringWaits[HealJob] = FiringWaits()
        # Heals waiting for a human (mode: approve): woken by a decision taken in this
        # process or their alert's resolve; otherwise they look at the store every second.
        self._awaiting: dict[str, tuple[asyncio.Event, tuple[str, str] | None]] = {}
        self._closing = False
        self._log = structlog.get_logger("healer.executor")

    @property
    def running(self) -> int:
        return len(self._tasks)

    @property
    def waiting(self) -> int:
        """Heals waiting for min_firing (timers, not tasks)."""
        return len(self._waits)

    def submit(self, job: HealJob, *, waited: bool = False, resumed: bool = False) -> None:
        """Start a heal now, or once its alert has fired for min_firing (``waited``: that
        wait is over). A paused healer does not wait: the heal ends suppressed at once.
        ``resumed``: a previous run left it pending (see :meth:`_gone_while_down`)."""
        if self._closing:
            return  # stays pending in the journal; the next start picks it up
        if not waited and not self._gates.paused_now():
            wait = self._gates.firing_wait(job.rule, job.alert)
            if wait is not None and job.alert is not None:
                self._wait(job, job.alert, wait)
                return
        self._spawn(self._run(job, waited=waited, resumed=resumed), job.heal_id)

    def _wait(self, job: HealJob, alert: Alert, wait: dict[str, float]) -> None:
        """A timer, not a task: registered before anything is awaited, so a resolve that
        arrives from now on finds it (alert_resolved)."""
        self._waits.add(
            job.heal_id,
            alert_key(alert),
            delay=wait["wait"],
            item=job,
            due=lambda due: self.submit(due, waited=True),
        )
        data = {k: v for k, v in wait.items() if k != "wait"}
        written = self._journal.event_soon(
            job.heal_id, Phase.PENDING, "min_firing_wait", data, fenced=True
        )
        written.add_done_callback(partial(self._write_failed, job.heal_id))
        self._log.info(
            "waiting for min_firing",
            heal_id=job.heal_id,
            rule=job.rule,
            min_firing=wait["min_firing"],
            wait=round(wait["wait"], 3),
        )

    def _write_failed(self, heal_id: str, future: asyncio.Future[None]) -> None:
        if future.cancelled() or (exc := future.exception()) is None:
            return
        if isinstance(exc, LeaseLost):  # taken over meanwhile: the wait is not ours
            self._lease_lost(heal_id)
        else:
            self._log.error("could not journal a min_firing wait", error=str(exc))

    def alert_resolved(self, fingerprint: str, starts_at: datetime) -> None:
        """Alertmanager's resolved notification for this alert is journaled: heals waiting
        for its min_firing, or for approval, end now, ``no_action``. (Heals past that wait read the
        journal themselves before acting.)"""
        key = (fingerprint, alert_key_time(starts_at))
        for job in self._waits.resolved(key):
            self._spawn(self._end_resolved(job), job.heal_id)
        for wake, awaited in self._awaiting.values():
            if awaited == key:  # a heal awaiting approval ends no_action at once
                wake.set()

    def approval_decided(self, heal_id: str) -> None:
        """A human decided on ``heal_id``'s approval (journaled): if this process runs that
        heal, it goes on at once rather than at its next look at the store."""
        waiting = self._awaiting.get(heal_id)
        if waiting is not None:
            waiting[0].set()

    async def _end_resolved(self, job: HealJob) -> None:
        log = self._bind(job)
        try:
            verdict = await self._gates.resolved(job.rule, job.alert)
            if verdict is None:  # cannot be read back (yet): the heal goes its normal way
                self.submit(job)
                return
            await self._finish(job, HealState(), *verdict, {})
        except LeaseLost:
            self._lease_lost(job.heal_id)
            return
        except Exception:
            log.exception("could not end a heal whose alert resolved")
            return
        log.info("heal finished", outcome=str(verdict[0]), reason=verdict[1])

    def _spawn(self, coro: Coroutine[Any, Any, None], heal_id: str) -> None:
        task = asyncio.create_task(coro, name=f"heal-{heal_id}")
        self._tasks.add(task)
        self._running[heal_id] = task

        def done(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            if self._running.get(heal_id) is task:
                del self._running[heal_id]

        task.add_done_callback(done)

    def _mine(self) -> set[str]:
        """The heals this executor runs or waits on: the leases it keeps."""
        return (set(self._running) | set(self._waits.ids())) - self._lost

    def _lease_lost(self, heal_id: str) -> None:
        """Another replica took the heal over: stop it, write nothing more for it."""
        if heal_id in self._lost:
            return
        self._lost.add(heal_id)
        self._log.warning("lease lost", heal_id=heal_id)
        self._waits.cancel(heal_id)
        task = self._running.get(heal_id)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def start_leases(self) -> None:
        """Start the heartbeat: renew this executor's leases and take over heals whose
        lease expired, every ``renew_every`` seconds, until :meth:`close`."""
        if self._leases is None:
            self._leases = asyncio.create_task(self._heartbeat(), name="leases")

    async def stop_leases(self) -> None:
        """Stop the heartbeat: leases are no longer renewed (they expire, and another
        replica, or the next start, takes the heals over) and nothing is taken over."""
        if self._leases is not None:
            self._leases.cancel()
            await asyncio.wait({self._leases}, timeout=5)

    async def _heartbeat(self) -> None:
        while True:  # until close() cancels it
            await asyncio.sleep(self._renew_every)
            try:
                mine = self._mine()
                if mine:
                    held = await self._journal.renew_leases(sorted(mine), time.time())
                    for heal_id in mine - held:
                        self._lease_lost(heal_id)
                await self._take_over()
                await self._adopt()
            except Exception:  # the store is down: try again next beat
                self._log.exception("could not renew leases or take heals over")

    async def _adopt(self) -> None:
        """Run the heals leased to this executor that nothing here runs (see
        :meth:`Store.orphans`: an ingest committed though the store reported an error).
        Only heals created over a beat ago: a new heal between its ingest and its submit
        is never one, and the ones taken over just now are already running."""
        running = self._mine() | self._lost
        rows = await self._journal.orphans(sorted(running), time.time() - self._renew_every)
        for row in rows:
            if row["id"] in self._mine() or row["id"] in self._lost:
                continue
            job = HealJob.from_row(row)
            phase = Phase(row["phase"])
            self._bind(job).warning("adopting a heal nothing ran", phase=str(phase))
            if phase in (Phase.PENDING, Phase.CHECKING):
                # Nothing acted, and healer never went down (its task stopped on a store
                # error, or never started): run it again as a fresh heal.
                try:
                    await self._journal.add_event(
                        job.heal_id, phase, "adopted", {"from": str(phase)}, fenced=True
                    )
                except LeaseLost:
                    continue
                self.submit(job)
            else:
                await self._resume_rows([row])

    async def resume(self) -> int:
        """Pick up heals a previous run left unfinished. Returns how many were found.

        * pending / checking: nothing was changed yet, so the heal runs from the start.
        * acting / verifying: the action may have run, and it never runs twice. A heal
          the previous run could not journal (SIGKILL, crash, power loss) is journaled
          ``interrupted`` now; then its verification resumes, and the verification's
          outcome (recovered / not_recovered / unverified) becomes the heal's.
        """
        return await self._take_over()

    async def _take_over(self, batch: int = 500) -> int:
        """Take over (and resume) every heal whose lease expired, in batches."""
        found = 0
        for _ in range(1000):  # bounded: 500k heals
            if self._closing:
                break
            rows = await self._journal.take_over(time.time(), batch)
            found += len(rows)
            await self._resume_rows([r for r in rows if r["id"] not in self._running])
            if len(rows) < batch:
                break
        return found

    async def _resume_rows(self, rows: list[TakenHeal]) -> None:
        for row in rows:
            self._lost.discard(row["id"])  # ours again
            self._bind(HealJob.from_row(row)).info(
                "taking over", phase=row["phase"], taken_from=row["taken_from"]
            )
        fresh = [r["fingerprint"] for r in rows if r["fingerprint"] and r["phase"] in _FRESH]
        resolved = await self._journal.resolved_alerts(fresh) if fresh else {}
        writes: list[asyncio.Future[None]] = []  # queued together: a few commits, not one each
        for row in rows:
            job = HealJob.from_row(row)
            phase = Phase(row["phase"])
            if phase in _FRESH:
                # Nothing was changed yet: run it from the start, unless its alert resolved
                # meanwhile (perhaps while healer was down). A heal awaiting approval checks
                # again and goes on waiting on the approval it opened (same deadline).
                writes.append(
                    self._journal.event_soon(
                        job.heal_id, phase, "resumed", {"from": phase}, fenced=True
                    )
                )
                at = resolved.get(alert_key(job.alert)) if job.alert is not None else None
                if job.alert is not None and at is not None:
                    outcome, reason = self._gates.resolved_verdict(job.rule, job.alert, at)
                    writes.append(self._finish_soon(job, HealState(phase), outcome, reason, {}))
                    self._bind(job).info(
                        "heal finished", outcome=str(outcome), reason=reason, resumed=True
                    )
                    continue
                # A min_firing wait resumes as a timer for what is left.
                self.submit(job, resumed=True)
                continue
            if row["outcome"] is None:
                try:
                    await self._interrupt(job, phase, f"healer died while {phase}", {})
                except LeaseLost:
                    self._lease_lost(job.heal_id)
                    continue
            self._spawn(self._reverify(job, phase, row["targets"]), job.heal_id)
        for result in await asyncio.gather(*writes, return_exceptions=True):
            if isinstance(result, LeaseLost):
                self._lease_lost(result.heal_id)
            elif isinstance(result, BaseException):
                raise result

    async def close(self, grace: float) -> None:
        """Stop taking heals; let running ones finish for ``grace`` seconds (heals awaiting
        approval are cancelled at once), then cancel the rest, which journal themselves
        ``interrupted`` (re-verified at the next start; an awaiting one waits again).
        Leases of running heals are renewed meanwhile (nothing more is taken over)."""
        self._closing = True
        self._waits.clear()  # waiting heals stay pending; the next start resumes them
        for heal_id in list(self._awaiting):
            # A heal waiting for a human need not keep healer from stopping: journaled
            # interrupted, it resumes its wait (same approval, same deadline) at the next start.
            if (task := self._running.get(heal_id)) is not None:
                task.cancel()
        try:
            if not self._tasks:
                return
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        finally:
            await self.stop_leases()

    async def _interrupt(
        self, job: HealJob, phase: Phase, reason: str, durations: dict[str, float]
    ) -> None:
        """Outcome ``interrupted``, phase kept: the next start resumes the heal from there."""
        self._metrics.heals.labels(
            rule=job.rule or MANUAL, handler=job.handler, outcome=str(Outcome.INTERRUPTED)
        ).inc()
        await self._journal.interrupt(job.heal_id, phase, reason, durations)

    async def _interrupt_unless_lost(
        self, job: HealJob, phase: Phase, durations: dict[str, float]
    ) -> None:
        """A cancelled heal: journaled ``interrupted``, unless its lease was lost (then
        its new owner writes, this replica nothing)."""
        if job.heal_id in self._lost:
            return
        try:
            await self._interrupt(job, phase, f"healer stopped while {phase}", durations)
        except LeaseLost:
            self._lease_lost(job.heal_id)

    async def _finish_unless_lost(
        self,
        job: HealJob,
        state: HealState,
        outcome: Outcome,
        reason: str,
        durations: dict[str, float],
        log: Any,
    ) -> bool:
        """Journal the outcome; False if it was not (lease lost, or the journal failed)."""
        try:
            await self._finish(job, state, outcome, reason, durations)
        except LeaseLost:
            self._lease_lost(job.heal_id)
            return False
        except Exception:
            log.exception("could not journal the outcome", outcome=str(outcome))
            return False
        return True

    def _bind(self, job: HealJob) -> Any:
        return self._log.bind(
            heal_id=job.heal_id, rule=job.rule, handler=job.handler, fingerprint=job.fingerprint
        )

    async def _reverify(self, job: HealJob, phase: Phase, targets: list[str]) -> None:
        """Finish a heal a previous run left while acting or verifying: verify, never act."""
        log = self._bind(job)
        state = HealState(phase)
        durations: dict[str, float] = {}

        async def record(kind: str, data: dict[str, Any]) -> None:
            await self._journal.add_event(job.heal_id, state.phase, kind, data, fenced=True)

        async with self._slots:
            self._metrics.in_progress.inc()
            try:
                # The lock keeps a new alert's heal from acting on the target meanwhile;
                # verifying is read-only, so it goes on even if the lock is taken.
                async with self._locks.hold(targets):
                    if state.phase is Phase.ACTING:
                        state.advance(Phase.VERIFYING)
                        await self._journal.set_phase(job.heal_id, Phase.VERIFYING)
                    await record("verification_resumed", {"interrupted_in": str(phase)})
                    log.info("resuming verification", interrupted_in=str(phase))
                    outcome, reason = await self._verify(job, durations, record, log)
            except asyncio.CancelledError:
                await self._interrupt_unless_lost(job, state.phase, durations)
                raise
            except LeaseLost:
                self._lease_lost(job.heal_id)
                return
            except Exception as exc:  # an engine bug (or the journal) must not kill the loop
                log.exception("resumed verification crashed")
                outcome, reason = Outcome.FAILED, f"internal error: {exc!r}"
            finally:
                self._metrics.in_progress.dec()
            if not await self._finish_unless_lost(job, state, outcome, reason, durations, log):
                return
            log.info("heal finished", outcome=str(outcome), reason=reason, resumed=True)

    # ---- one heal -----------------------------------------------------------

    async def _run(self, job: HealJob, *, waited: bool = False, resumed: bool = False) -> None:
        log = self._bind(job)
        state = HealState()
        durations: dict[str, float] = {}
        try:  # the pause (min_firing was a timer: a waiting heal holds no slot)
            early = await self._gates.before_check(
                heal_id=job.heal_id, rule=job.rule, alert=job.alert, waited=waited, log=log
            )
        except Deferred:
            return  # healer is stopping: the heal stays pending, the next start resumes it
        except LeaseLost:
            self._lease_lost(job.heal_id)  # taken over while it waited: the new owner runs it
            return
        except Exception as exc:
            early = (Outcome.FAILED, f"safety gate failed: {type(exc).__name__}: {exc}")
        started = time.monotonic()
        contended = self._slots.locked()
        async with _Slot(self._slots) as slot:
            self._metrics.in_progress.inc()
            try:
                if early is None and (waited or contended):
                    # It waited (min_firing, or a slot): its alert may have resolved since.
                    early = await self._gates.resolved(job.rule, job.alert)
                if early is None and resumed and not waited:
                    early = await self._gone_while_down(job)
                if early is not None:
                    raise _End(*early)
                outcome, reason = await self._phases(job, state, durations, log, slot)
            except _End as end:
                outcome, reason = end.outcome, end.reason
            except asyncio.CancelledError:
                durations["total"] = time.monotonic() - started
                await self._interrupt_unless_lost(job, state.phase, durations)
                raise
            except LeaseLost:
                self._lease_lost(job.heal_id)
                return
            except Exception as exc:  # an engine bug must still end the heal on record
                log.exception("heal crashed")
                outcome, reason = Outcome.FAILED, f"internal error: {exc!r}"
            finally:
                self._metrics.in_progress.dec()
            durations["total"] = time.monotonic() - started
            if not await self._finish_unless_lost(job, state, outcome, reason, durations, log):
                return
            log.info(
                "heal finished",
                outcome=str(outcome),
                reason=reason,
                durations={k: round(v, 3) for k, v in durations.items()},
            )

    async def _phases(
        self, job: HealJob, state: HealState, durations: dict[str, float], log: Any, slot: _Slot
    ) -> tuple[Outcome, str]:
        heal_id = job.heal_id

        async def record(kind: str, data: dict[str, Any]) -> None:
            await self._journal.add_event(heal_id, state.phase, kind, data, fenced=True)

        handler = self._handlers.get(job.handler)
        if handler is None:
            raise _End(Outcome.FAILED, f"handler {job.handler!r} is not loaded")

        self._tell("started", job)
        found = await self._check(handler, job, state, durations, log, record)
        mode, timeout = self._gates.approval_mode(job.rule)
        if mode == "suggest":  # tell what healer would do; nothing acts
            await self._unless_resolved(job)
            await record("suggested", {"would_act_on": found.keys})
            self._tell("suggested", job, found)
            raise _End(Outcome.SUGGESTED, f"suggested: would act on {', '.join(found.keys)}")
        if job.dry_run:
            await self._unless_resolved(job)  # a dry run says what healer *would* do
            await record("dry_run", {"would_act_on": found.keys})
            raise _End(Outcome.DRY_RUN, f"dry run: would act on {', '.join(found.keys)}")
        if mode == "approve":
            approved = await self._await_approval(job, state, found, timeout, slot, log, record)
            # Approved: the world may have changed while people read, so check again, and
            # act only on targets that were approved.
            found = await self._check(handler, job, state, durations, log, record)
            found = await self._only_approved(found, approved, record)
        ctx, params, check, keys = found.ctx, found.params, found.check, found.keys

        async with self._hold(keys, heal_id) as busy:
            if busy:
                await self._unless_resolved(job)
                raise _End(
                    Outcome.SUPPRESSED, f"in flight: another heal is acting on {', '.join(busy)}"
                )
            # Pause, circuit, cooldown, budget; under the lock, so that a heal suppressed
            # "in flight" never spends budget. Admitted = the action is recorded.
            verdict = await self._gates.admit(
                heal_id=heal_id,
                rule=job.rule,
                targets=keys,
                alert=job.alert,
                record=record,
                log=log,
            )
            if verdict is not None:
                raise _End(*verdict)
            state.advance(Phase.ACTING)
            await self._journal.set_phase(heal_id, Phase.ACTING)
            log.info("acting", targets=keys)
            try:
                result = await self._timed(
                    "act",
                    job,
                    durations,
                    self._guard(self._act(handler, ctx, params, check), "act", heal_id),
                )
            finally:
                await ctx.recorded()  # what act queued with record_soon, in timeline order
            await record("act", {"summary": result.summary, "details": result.details})
            self._tell("acted", job, summary=result.summary)
            log.info("acted", summary=result.summary)

            state.advance(Phase.VERIFYING)
            await self._journal.set_phase(heal_id, Phase.VERIFYING)
            return await self._verify(job, durations, record, log)

    async def _check(
        self,
        handler: Any,
        job: HealJob,
        state: HealState,
        durations: dict[str, float],
        log: Any,
        record: Callable[[str, dict[str, Any]], Coroutine[Any, Any, None]],
    ) -> _Checked:
        """Run ``check``, journal what it found, and end the heal unless it may go on
        (nothing to do, no target, a target the allowlist refuses)."""
        heal_id = job.heal_id
        state.advance(Phase.CHECKING)
        # Checking changes nothing, so the check need not wait for this write's fsync (a
        # heal found pending or checking after a crash runs again either way); it is
        # awaited before anything can act.
        checking = self._journal.set_phase_soon(heal_id, Phase.CHECKING)
        ctx: HealContext | None = None
        try:
            params = self._params(handler, job)
            engine, docker = self._engine(handler, job)
            if engine is not None:
                log = log.bind(engine=engine)
            ctx = HealContext(
                heal_id=heal_id,
                rule=job.rule or MANUAL,
                handler=job.handler,
                alert=job.alert,
                dry_run=job.dry_run,
                log=log,
                docker=docker,
                postgres=self._postgres.for_heal(),
                record=record,
            )
            log.info("checking", params=params.model_dump(mode="json"))
            check = await self._timed(
                "check", job, durations, self._guard(handler.check(ctx, params), "check", heal_id)
            )
        finally:
            await checking
            if ctx is not None:
                await ctx.recorded()
        if engine is not None:
            check = _on_engine(check, engine)
        keys = [t.key for t in check.targets]
        # Recorded now, not only once acting: history filtered by target must also find the
        # heals that were refused, dry-run or suppressed on it.
        await self._journal.set_phase(heal_id, Phase.CHECKING, targets=keys)
        await record(
            "check",
            {"act": check.act, "reason": check.reason, "evidence": check.evidence, "targets": keys},
        )
        self._notices.check_found(heal_id, evidence=check.evidence, targets=keys, rule=job.rule)
        if not check.act:
            raise _End(Outcome.NO_ACTION, check.reason or "check found nothing to do")
        if not check.targets:
            raise _End(Outcome.FAILED, "handler decided to act but named no target")
        for target in check.targets:
            refusal = self._allowlist.refusal(target)
            if refusal is not None:
                await record("refused", {"target": target.key, "fields": target.fields()})
                raise _End(Outcome.REFUSED, refusal)
        return _Checked(ctx, params, check, keys)

    # ---- mode: approve ------------------------------------------------------

    async def _await_approval(
        self,
        job: HealJob,
        state: HealState,
        found: _Checked,
        timeout: float,
        slot: _Slot,
        log: Any,
        record: Callable[[str, dict[str, Any]], Coroutine[Any, Any, None]],
    ) -> list[str]:
        """Open the heal's approval (or find the one it opened before a restart), wait
        for a human, the deadline or the alert's resolve, without holding a concurrency
        slot; the approved targets, or the heal ends (rejected, expired, no_action)."""
        token = secrets.token_urlsafe(32)
        state.advance(Phase.AWAITING_APPROVAL)
        approval, opened = await self._journal.open_approval(
            job.heal_id, token_hash(token), found.keys, time.time() + timeout
        )
        if opened:
            request = ApprovalRequest(token, approval["expires_at"], tuple(found.keys))
            self._tell("awaiting_approval", job, found, approval=request)
        log.info(
            "awaiting approval",
            targets=approval["targets"],
            expires_in=round(approval["expires_at"] - time.time(), 1),
            reopened=not opened,
        )
        rule = job.rule or MANUAL
        wake = asyncio.Event()
        self._awaiting[job.heal_id] = (wake, alert_key(job.alert) if job.alert else None)
        self._metrics.awaiting_approval.labels(rule=rule).inc()
        self._metrics.in_progress.dec()
        slot.give()
        cancelled = False
        try:
            approval = await self._decision(job, approval, wake)
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            self._awaiting.pop(job.heal_id, None)
            self._metrics.awaiting_approval.labels(rule=rule).dec()
            self._metrics.in_progress.inc()
            if not cancelled:
                await slot.take()
        decision, by = approval["decision"], approval["decided_by"] or "someone"
        if decision == "approve":
            log.info("approved", by=by, via=approval["via"], targets=approval["targets"])
            return list(approval["targets"])
        if decision == "reject":
            note = f": {approval['comment']}" if approval["comment"] else ""
            reason = f"rejected by {by} (via {approval['via']}){note}"
            self._tell("rejected", job, found, reason=reason, decided_by=by)
            raise _End(Outcome.REJECTED, reason)
        if decision == "resolved":
            verdict = await self._gates.resolved(job.rule, job.alert)
            reason = verdict[1] if verdict else "resolved while awaiting approval"
            self._tell("no_action", job, found, reason=reason)
            raise _End(Outcome.NO_ACTION, reason)
        reason = f"nobody approved or rejected it within {format_seconds(timeout)}"
        if job.rule is not None:
            told = await self._gates.escalate_expired(
                heal_id=job.heal_id,
                rule=job.rule,
                targets=approval["targets"],
                alert=job.alert,
                reason=reason,
                record=record,
                log=log,
            )
            reason = f"{reason}; {told}"
        self._tell("expired", job, found, reason=reason)
        raise _End(Outcome.EXPIRED, reason)

    async def _decision(
        self, job: HealJob, approval: ApprovalRow, wake: asyncio.Event
    ) -> ApprovalRow:
        """Wait until the approval is closed: by a human (any replica: the store says
        so), by its deadline (closed ``expire`` here) or by the alert's resolve (closed
        ``resolved``). Closing is conditional: a human's decision that came first wins."""
        while approval["decision"] is None:  # bounded by the deadline
            left = approval["expires_at"] - time.time()
            end = "expire" if left <= 0 else None
            if end is None and await self._gates.resolved(job.rule, job.alert) is not None:
                end = "resolved"
            if end is not None:
                closed = await self._journal.close_approval(job.heal_id, end)
                return closed if closed is not None else approval
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), min(APPROVAL_POLL, left))
            approval = await self._journal.get_approval(job.heal_id) or approval
        return approval

    @staticmethod
    async def _only_approved(
        found: _Checked,
        approved: list[str],
        record: Callable[[str, dict[str, Any]], Coroutine[Any, Any, None]],
    ) -> _Checked:
        """The re-check's targets that were approved; the others are journaled and left
        alone; none left: ``no_action``."""
        keep = [t for t in found.check.targets if t.key in approved]
        dropped = [t.key for t in found.check.targets if t.key not in approved]
        if dropped:
            await record("not_approved", {"targets": dropped, "approved": approved})
        if not keep:
            raise _End(
                Outcome.NO_ACTION,
                "approved, but the check run again found none of the approved targets "
                f"({', '.join(approved)}) to act on",
            )
        check = dataclasses.replace(found.check, targets=keep)
        return _Checked(found.ctx, found.params, check, [t.key for t in keep])

    def _tell(
        self,
        event: str,
        job: HealJob,
        found: _Checked | None = None,
        *,
        approval: ApprovalRequest | None = None,
        **facts: Any,
    ) -> None:
        """One notice of this heal (healer/notices.py: never blocks, never raises); with
        ``found``, what check found. Earlier facts of the heal are merged in there."""
        if found is not None:
            facts = {
                "evidence": dict(found.check.evidence),
                "targets": tuple(found.keys),
                "summary": found.check.reason,
                **facts,
            }
        if event not in ("started", "acted", "awaiting_approval"):
            facts.setdefault("outcome", str(event))
        alert = job.alert
        self._notices.notice(
            HealNotice(
                event=cast(NoticeEvent, str(event)),
                heal_id=job.heal_id,
                rule=job.rule or MANUAL,
                handler=job.handler,
                alertname=job.labels.get("alertname", ""),
                labels=dict(job.labels),
                approval=approval,
                alert_key=(alert.fingerprint, alert_key_time(alert.starts_at)) if alert else None,
                **facts,
            )
        )

    def _tell_outcome(
        self, job: HealJob, outcome: Outcome, reason: str, journaled: asyncio.Future[None]
    ) -> None:
        if journaled.cancelled() or journaled.exception() is not None:
            return
        ttr = None
        if outcome is Outcome.RECOVERED and job.alert is not None:
            ttr = max(0.0, time.time() - job.alert.starts_at.astimezone(UTC).timestamp())
        self._tell(outcome, job, reason=reason, time_to_recovery=ttr)

    @asynccontextmanager
    async def _hold(self, keys: list[str], heal_id: str) -> AsyncIterator[list[str]]:
        """Hold every target's lock, in this process then in the store (fleet-wide): yield
        [] while held, else the targets another heal holds (nothing held then)."""
        async with self._locks.hold(keys) as held:
            if not held:
                yield [k for k in keys if self._locks.busy(k)]
                return
            taken: list[str] = []
            try:
                for key in sorted(set(keys)):
                    if not await self._journal.lock_target(key, heal_id, time.time()):
                        yield [key]
                        return
                    taken.append(key)
                yield []
            finally:
                if heal_id not in self._lost:
                    for key in taken:
                        try:
                            await self._journal.unlock_target(key, heal_id)
                        except Exception:  # released with its lease or its outcome anyway
                            self._log.exception(
                                "could not release a target lock", target=key, heal_id=heal_id
                            )

    async def _gone_while_down(self, job: HealJob) -> tuple[Outcome, str] | None:
        """A heal resumed at start whose alert may have resolved while healer was down:
        Alertmanager re-delivers that resolve only after a retry, by when the heal would
        have acted. So ask Prometheus, once: no longer firing -> ``no_action``. (Cannot
        tell, or still firing: the heal goes on.)"""
        spec = job.verify
        if job.alert is None or (spec.get("query") is None and "alertname" not in job.labels):
            return None
        query = await self._verifier.query_for(
            Condition(labels=job.labels, query=spec.get("query"))
        )
        sample = await self._verifier.sample(query)
        await self._journal.add_event(
            job.heal_id,
            Phase.PENDING,
            "firing_check",
            {"query": query, **sample.as_event()},
            fenced=True,
        )
        if sample.healthy is not True:
            return None
        return Outcome.NO_ACTION, (
            "resolved before acting: resumed after a restart, and Prometheus no longer "
            f"reports the alert firing ({query[:200]})"
        )

    async def _unless_resolved(self, job: HealJob) -> None:
        """End the heal ``no_action`` if its alert resolved (paths that never reach the
        admission, which looks at it itself)."""
        if (verdict := await self._gates.resolved(job.rule, job.alert)) is not None:
            raise _End(*verdict)

    def _engine(self, handler: Any, job: HealJob) -> tuple[str | None, DockerAdapter]:
        """The Docker engine this heal acts on, and its adapter (``ctx.docker``): the
        rule's ``engine`` with alert data substituted, else ``default``. A handler that
        needs no Docker and names no engine gets none (``None``, an adapter that fails
        if used). An engine not configured ends the heal ``refused``, naming it."""
        if "docker" not in handler.requires and job.engine is None:
            default = self._docker.default
            return None, default if default is not None else cast(Any, _NoEngine())
        try:
            name = engine_for(job.engine, job.labels, job.annotations)
        except InvalidParams as exc:
            raise _End(Outcome.REFUSED, f"invalid engine: {exc.message}") from None
        adapter = self._docker.get(name)
        if adapter is None:
            known = ", ".join(sorted(self._docker)) or "none"
            raise _End(
                Outcome.REFUSED,
                f"docker engine {name!r} is not configured (docker.engines: {known})",
            )
        return name, adapter

    @staticmethod
    async def _act(handler: Any, ctx: HealContext, params: Any, check: CheckResult) -> Any:
        """``act``, within its engine's ``max_concurrent_actions``."""
        docker: object = ctx.docker  # a _NoEngine when the handler needs none
        if isinstance(docker, DockerAdapter):
            async with docker.acting():
                return await handler.act(ctx, params, check)
        return await handler.act(ctx, params, check)

    @staticmethod
    def _params(handler: Any, job: HealJob) -> Any:
        """The rule's params with alert data filled in, validated by the handler's model."""
        try:
            raw = render_params(job.params, job.labels, job.annotations)
            return handler.Params.model_validate(raw)
        except InvalidParams as exc:
            raise _End(Outcome.REFUSED, f"invalid params: {exc.message}") from None
        except ValidationError as exc:
            errors = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5]
            )
            raise _End(Outcome.REFUSED, f"invalid params: {errors}") from None

    async def _verify(
        self, job: HealJob, durations: dict[str, float], record: Any, log: Any
    ) -> tuple[Outcome, str]:
        spec = job.verify
        if spec.get("query") is None and "alertname" not in job.labels:
            return Outcome.UNVERIFIED, "nothing to verify: no verify.query and no alertname"
        condition = Condition(labels=job.labels, query=spec.get("query"))
        started = time.monotonic()
        verdict = await self._verifier.verify(
            condition,
            stable_for=float(spec["stable_for"]),
            timeout=float(spec["timeout"]),
            interval=spec.get("interval"),
            record=record,
        )
        durations["verify"] = time.monotonic() - started
        self._observe("verify", job, durations["verify"])
        log.info("verified", outcome=str(verdict.outcome), samples=verdict.samples)
        if (
            verdict.outcome is Outcome.RECOVERED
            and job.alert is not None
            and verdict.recovered_at is not None
        ):
            ttr = verdict.recovered_at - job.alert.starts_at.astimezone(UTC).timestamp()
            if ttr >= 0:
                self._metrics.time_to_recovery.labels(rule=job.rule or MANUAL).observe(ttr)
        return verdict.outcome, verdict.reason

    async def _guard(self, coro: Any, step: str, heal_id: str) -> Any:
        try:
            return await coro
        except (asyncio.CancelledError, LeaseLost):
            raise
        except Exception as exc:
            if isinstance(exc, HealError) and exc.heal_id is None:
                exc.heal_id = heal_id  # handlers raise without it: the engine knows the heal
            if isinstance(exc, InvalidParams | TargetRefused):
                # A handler judged its (label-derived) params or target unsafe. Before acting
                # that is a refusal, as when the params model or the allowlist says no; once
                # acting, something may already have changed, so a refusal mid-way is a
                # failure.
                if step == "check":
                    raise _End(Outcome.REFUSED, f"{step} refused: {exc.message}") from exc
                raise _End(Outcome.FAILED, f"{step} stopped: {exc.message}") from exc
            raise _End(Outcome.FAILED, f"{step} failed: {type(exc).__name__}: {exc}") from exc

    async def _timed(self, phase: str, job: HealJob, durations: dict[str, float], coro: Any) -> Any:
        started = time.monotonic()
        try:
            return await coro
        finally:
            durations[phase] = time.monotonic() - started
            self._observe(phase, job, durations[phase])

    def _observe(self, phase: str, job: HealJob, seconds: float) -> None:
        self._metrics.heal_duration.labels(
            rule=job.rule or MANUAL, handler=job.handler, phase=phase
        ).observe(seconds)

    async def _finish(
        self,
        job: HealJob,
        state: HealState,
        outcome: Outcome,
        reason: str,
        durations: dict[str, float],
    ) -> None:
        await self._finish_soon(job, state, outcome, reason, durations)

    def _finish_soon(
        self,
        job: HealJob,
        state: HealState,
        outcome: Outcome,
        reason: str,
        durations: dict[str, float],
    ) -> asyncio.Future[None]:
        state.finish(outcome)
        if "total" in durations:
            self._observe("total", job, durations["total"])
        self._metrics.heals.labels(
            rule=job.rule or MANUAL, handler=job.handler, outcome=str(outcome)
        ).inc()
        done = self._journal.finish_soon(job.heal_id, outcome, reason, durations)
        if outcome in OUTCOME_EVENTS:  # told once the outcome is on disk
            done.add_done_callback(partial(self._tell_outcome, job, outcome, reason))
        if (
            outcome is Outcome.NOT_RECOVERED
            and job.alert is not None
            and self._on_not_recovered is not None
        ):
            follow_up = self._on_not_recovered
            heal_id = job.heal_id

            def _journaled(future: asyncio.Future[None]) -> None:
                # Only an outcome that is on disk may be followed up.
                if not future.cancelled() and future.exception() is None:
                    follow_up(heal_id)

            done.add_done_callback(_journaled)
        return done
