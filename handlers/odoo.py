"""Odoo handlers: the Cron Job Jam, Memory Leak and Bus/Longpoll Stalls runbooks.

``odoo.unlock_cron`` (runbook "Cron Job Jam")::

    - name: odoo-cron-stuck
      match: ['alertname="OdooCronStuck"']
      handler: odoo.unlock_cron
      params:
        database: odoo               # a name from `databases:`
        overdue: 10m                 # due (nextcall or a trigger) more than 10m ago
        min_held: 5m                 # lock held, and no progress recorded, this long
        sample: 2s                   # two looks at the run this far apart
        cron_id: "{{ labels.cron_id }}"   # optional: just that job

Odoo runs a job on two connections of one process (``application_name``
``odoo-<pid>``): the cron connection holds the job's row lock, the job connection does
the work. Ending only the lock holder lets another worker start the job while the first
run goes on: the job runs twice. So this handler ends the whole stuck run, and only a
stuck one.

Check lists the runnable overdue ``ir_cron`` jobs, learns which a cron worker cannot
take (their row is locked) and proves which sessions hold those row locks
(:mod:`handlers._odoo_cron`). A holder is left alone when it is protected, when its
transaction is younger than ``min_held``, when modules are being installed or upgraded,
when the job recorded progress (``ir_cron_progress``, 18+) within ``min_held``, or when
its process shows any progress between two looks ``sample`` apart (a new statement,
transaction or state on the holder or on another connection of the same process: the
job connection running a slow job, a manual run, a batch). Each stays in the evidence
with its reason; when nobody is left to terminate and someone was left alone for a
reason other than age, the heal is ``refused``.

Act re-checks that nothing moved since check, terminates the job connection(s) first
(while the row is still locked, so no worker can start the job), waits for them to go,
then terminates the lock holder if it still holds the same rows in the same transaction.
Targets are ``postgres`` ``<database>/<pid>`` (the job connections and the holder) with
``database``, ``datname``, ``user`` and ``application_name`` for the allowlist; more
of them than the database's ``max_terminations`` refuses the heal.

``odoo.restart_workers`` (runbook "Memory Leak") and ``odoo.restart_longpoll``
(runbook "Bus/Longpoll Stalls")::

    - name: odoo-memory-leak
      match: ['alertname="OdooMemoryLeak"']
      handler: odoo.restart_workers
      params:
        services: [odoo-accounting, odoo-core, odoo-marketing]   # or containers: [...]
        project: odoo
        stop_timeout: 30             # SIGTERM, then SIGKILL after 30 s (graceful)
        health_timeout: 2m           # per container, before the next one
    - name: odoo-longpoll-stall
      match: ['alertname="OdooLongpollLatencyHigh"']
      handler: odoo.restart_longpoll
      params: {service: odoo-longpoll, project: odoo}

Both restart the chosen containers one at a time (:func:`handlers.docker.restart_one`:
a new StartedAt, running, and healthy when there is a healthcheck, before the next
one) and record each container's state and memory (working set and limit) before and
after. When one does not come back the rollout stops there: the rest are not
restarted and the heal fails naming what was restarted and what was not.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import Field, model_validator

from handlers._odoo_cron import (
    Holder,
    Schema,
    fingerprint,
    inspect_database,
    modules_changing,
    overdue_jobs,
    progress_ages,
    row_lock_holders,
    same_worker,
)
from handlers.docker import (
    ComposeName,
    ContainerName,
    dependent_of,
    find_containers,
    restart_one,
    summary,
    target,
    with_dependents,
)
from healer.api import (
    ActionFailed,
    ActResult,
    CheckResult,
    Duration,
    HandlerParams,
    HealContext,
    PgSession,
    Target,
    TargetRefused,
)

DatabaseName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
PgName = Annotated[str, Field(min_length=1, max_length=63)]

# ---- odoo.unlock_cron ------------------------------------------------------------------


class UnlockCronParams(HandlerParams):
    database: DatabaseName
    datname: PgName | None = None
    overdue: Duration = 600.0
    min_held: Duration = 300.0
    sample: Duration = Field(default=2.0, ge=0.1, le=60)
    cron_id: int | None = Field(default=None, ge=1)


def _pg_target(database: str, session: PgSession) -> Target:
    return Target(
        kind="postgres",
        name=f"{database}/{session.pid}",
        attrs={
            "database": database,
            "datname": session.database or "",
            "user": session.user or "",
            "application_name": session.application_name,
        },
    )


def _lock_identity(lock: dict[str, Any]) -> tuple[Any, ...]:
    return (lock["job_id"], lock["pid"], lock["xid"], lock["backend_start"], lock["xact_start"])


def _run_of(
    holder: PgSession, sessions: dict[int, PgSession], holder_pids: set[int], ctx: HealContext
) -> list[PgSession]:
    """The other connections of the Odoo process whose cron connection is ``holder``
    (the job connection, and the process' idle pooled ones), holders excluded."""
    return sorted(
        (
            s
            for s in sessions.values()
            if s.pid not in holder_pids and same_worker(holder, s) and not ctx.postgres.is_own(s)
        ),
        key=lambda s: s.pid,
    )


def _looks(holder: PgSession, run: list[PgSession]) -> dict[str, list[str | None]]:
    return {str(s.pid): fingerprint(s) for s in (holder, *run)}


def _moved(before: dict[str, list[str | None]], after: dict[str, list[str | None]]) -> str:
    """What changed between two looks at a run's connections ('' when nothing did)."""
    changes = [
        f"pid {pid} {'appeared' if pid not in before else 'ended'}"
        for pid in sorted(set(before) ^ set(after), key=int)
    ]
    for pid, b in before.items():
        a = after.get(pid)
        if a is not None and a != b:
            what = next(
                name
                for i, name in ((0, "backend"), (2, "transaction"), (3, "statement"), (1, "state"))
                if a[i] != b[i]
            )
            changes.append(f"pid {pid} {what} changed")
    return ", ".join(changes)


def _terminated_text(terminated: list[dict[str, Any]]) -> str:
    parts = []
    for role in ("job connection", "lock holder"):
        pids = [str(t["pid"]) for t in terminated if t["role"] == role]
        if pids:
            parts.append(f"{role}{'s' if len(pids) > 1 else ''} {', '.join(pids)}")
    return ", then ".join(parts)


@dataclass(frozen=True, slots=True)
class UnlockCheck(CheckResult):
    """What check decided, for act (``evidence`` shows the same to the journal)."""

    datname: str = ""
    holders: Sequence[dict[str, Any]] = ()


class UnlockCron:
    name: ClassVar[str] = "odoo.unlock_cron"
    Params: ClassVar[type[HandlerParams]] = UnlockCronParams
    requires: ClassVar[frozenset[str]] = frozenset({"postgres"})

    async def check(self, ctx: HealContext, params: UnlockCronParams) -> CheckResult:
        db = params.database
        schema = await inspect_database(ctx, db, params.datname)
        jobs = await overdue_jobs(ctx, db, schema, overdue=params.overdue, cron_id=params.cron_id)
        evidence: dict[str, Any] = {
            "database": db,
            "datname": schema.datname,
            "overdue_s": params.overdue,
            "min_held_s": params.min_held,
            "sample_s": params.sample,
            "cron_id": params.cron_id,
            "overdue_jobs": jobs,
        }
        if not jobs:
            return CheckResult(
                targets=[],
                evidence=evidence,
                act=False,
                reason=f"no runnable ir_cron job is overdue by more than {params.overdue:g}s",
            )
        locks = await row_lock_holders(ctx, db, [j["id"] for j in jobs])
        for job in jobs:
            job["locked"] = job["id"] in locks.locked
        evidence["unproven"] = {str(k): v for k, v in locks.unproven.items()}
        if not locks.locked:
            return CheckResult(
                targets=[],
                evidence=evidence,
                act=False,
                reason=f"{len(jobs)} overdue ir_cron job(s), none locked: a "
                "cron worker could take them; nothing to terminate",
            )

        sessions = {s.pid: s for s in await ctx.postgres.sessions(db, datname=schema.datname)}
        by_pid: dict[int, list[Holder]] = defaultdict(list)
        for h in locks.holders:
            by_pid[h.pid].append(h)
        holders: list[dict[str, Any]] = []
        candidates: dict[int, tuple[PgSession, dict[str, Any]]] = {}
        refusals: list[str] = []
        for pid, held in sorted(by_pid.items()):
            s = sessions.get(pid)
            if s is None:
                evidence["unproven"].update({str(h.job_id): f"pid {pid} is gone" for h in held})
                continue
            entry = {
                **s.evidence(),
                "holds_jobs": [h.job_id for h in held],
                "locks": [h.evidence() for h in held],
            }
            why = ctx.postgres.protection(db, s)
            age = s.xact_age or 0.0
            if why is not None:
                entry["decision"] = f"protected: {why}"
                refusals.append(f"pid {pid} is protected ({why})")
            elif age < params.min_held:
                entry["decision"] = (
                    f"transaction open {age:.0f}s < min_held "
                    f"{params.min_held:g}s: a job may simply be running"
                )
            elif not s.application_name:
                entry["decision"] = (
                    "left alone: no application_name, so its job "
                    "connection cannot be told from other sessions"
                )
                refusals.append(f"pid {pid}: {entry['decision']}")
            else:
                candidates[pid] = (s, entry)
            holders.append(entry)
        evidence["holders"] = holders
        if candidates:
            await self._stuck_only(
                ctx, params, schema, evidence, sessions, set(by_pid), candidates, refusals
            )

        targets: list[Target] = []
        for entry in holders:
            if entry.get("decision") == "terminate":
                targets += [_pg_target(db, sessions[j["pid"]]) for j in entry["job_connections"]]
                targets.append(_pg_target(db, sessions[entry["pid"]]))
        targets = list({t.name: t for t in targets}.values())
        if targets:
            cap = ctx.postgres.terminations_left(db)
            if len(targets) > cap:
                await ctx.record("holders", evidence)
                raise TargetRefused(
                    f"ending the stuck run(s) means terminating "
                    f"{len(targets)} sessions; databases.{db}."
                    f"max_terminations allows {cap} per heal"
                )
            return UnlockCheck(
                targets=targets, evidence=evidence, datname=schema.datname, holders=holders
            )
        if refusals:
            await ctx.record("holders", evidence)
            raise TargetRefused(
                "overdue ir_cron jobs are held, nobody terminated: " + "; ".join(refusals)
            )
        reasons = [h["decision"] for h in holders] + list(evidence["unproven"].values())
        return CheckResult(
            targets=[],
            evidence=evidence,
            act=False,
            reason=f"{len(locks.locked)} overdue job(s) locked, no holder to "
            "terminate: " + "; ".join(reasons),
        )

    async def _stuck_only(
        self,
        ctx: HealContext,
        params: UnlockCronParams,
        schema: Schema,
        evidence: dict[str, Any],
        sessions: dict[int, PgSession],
        holder_pids: set[int],
        candidates: dict[int, tuple[PgSession, dict[str, Any]]],
        refusals: list[str],
    ) -> None:
        """Decide, for each candidate holder, between ``terminate`` and a reason to leave
        it alone: evidence that its run is making progress, or could be."""
        db = params.database

        def leave(pid: int, why: str) -> None:
            candidates.pop(pid)[1]["decision"] = f"left alone: {why}"
            refusals.append(f"pid {pid}: {why}")

        changing = await modules_changing(ctx, db, schema)
        evidence["modules_changing"] = changing
        if changing:
            upgrade = (
                "modules are being installed, upgraded or removed ("
                + ", ".join(changing)
                + "): Odoo's own cron waits for that too"
            )
            for pid in list(candidates):
                leave(pid, upgrade)
        held = sorted({j for _, e in candidates.values() for j in e["holds_jobs"]})
        ages = await progress_ages(ctx, db, schema, held)
        if schema.progress:
            evidence["progress_age_s"] = {
                str(j): round(ages[j], 1) if j in ages else None for j in held
            }
        for pid, (_, entry) in list(candidates.items()):
            recent = [
                f"job {j} recorded progress {ages[j]:.0f}s ago"
                for j in entry["holds_jobs"]
                if ages.get(j, params.min_held) < params.min_held
            ]
            if recent:
                leave(
                    pid,
                    ", ".join(recent) + f" (ir_cron_progress, within min_held "
                    f"{params.min_held:g}s): the job is working through its batches",
                )
        runs: dict[int, list[PgSession]] = {}
        for pid, (s, _) in list(candidates.items()):
            runs[pid] = _run_of(s, sessions, holder_pids, ctx)
            others = sorted(
                p
                for p in holder_pids - {pid}
                if p in sessions and same_worker(s, sessions[p]) and p not in candidates
            )
            protected = [
                f"pid {r.pid} ({why})"
                for r in runs[pid]
                if (why := ctx.postgres.protection(db, r)) is not None
            ]
            if others:
                leave(
                    pid,
                    f"its process also holds job rows through pid(s) {others}, "
                    "which are left alone",
                )
            elif protected:
                leave(pid, "its process has protected connection(s): " + ", ".join(protected))
        if not candidates:
            return
        first = {pid: _looks(s, runs[pid]) for pid, (s, _) in candidates.items()}
        await asyncio.sleep(params.sample)
        again = {s.pid: s for s in await ctx.postgres.sessions(db, datname=schema.datname)}
        for pid, (s, entry) in list(candidates.items()):
            now = again.get(pid)
            run = _run_of(now, again, holder_pids, ctx) if now is not None else []
            second = _looks(now, run) if now is not None else {}
            entry["job_connections"] = [
                {**r.evidence(), "fingerprint": fingerprint(r)} for r in runs[pid]
            ]
            moved = _moved(first[pid], second)
            if moved:
                leave(
                    pid,
                    f"its process ({s.application_name}) made progress between two "
                    f"looks {params.sample:g}s apart: {moved}",
                )
                continue
            entry["fingerprint"] = fingerprint(now) if now is not None else None
            entry["decision"] = "terminate"

    async def act(
        self, ctx: HealContext, params: UnlockCronParams, check: CheckResult
    ) -> ActResult:
        if not isinstance(check, UnlockCheck):
            raise ActionFailed(f"act needs its own check's result, got a {type(check).__name__}")
        db = params.database
        datname = check.datname
        holder_pids = {h["pid"] for h in check.holders}
        planned = [h for h in check.holders if h["decision"] == "terminate"]
        jobs = sorted({j for h in planned for j in h["holds_jobs"]})
        # Re-prove right before acting: the same backend still holds the same rows in the
        # same transaction, and neither it nor its process did anything since check.
        current = await self._lock_identities(ctx, db, jobs)
        sessions = {s.pid: s for s in await ctx.postgres.sessions(db, datname=datname)}
        skipped: list[dict[str, Any]] = []
        runs: list[tuple[dict[str, Any], PgSession, list[PgSession]]] = []
        for h in planned:
            pid, s = h["pid"], sessions.get(h["pid"])
            if s is None or not any(_lock_identity(lk) in current for lk in h["locks"]):
                skipped.append({"pid": pid, "why": "released its ir_cron rows meanwhile"})
                continue
            run = _run_of(s, sessions, holder_pids, ctx)
            was = {str(j["pid"]): j["fingerprint"] for j in h["job_connections"]}
            moved = _moved({str(pid): h["fingerprint"], **was}, _looks(s, run))
            if moved:
                skipped.append({"pid": pid, "why": f"made progress since check: {moved}"})
                continue
            runs.append((h, s, run))

        terminated: list[dict[str, Any]] = []
        # 1. The job connections, while the row is still locked: no worker can start the
        # job again until the run that was doing it is over.
        job_conns = list({r.pid: r for _, _, run in runs for r in run}.values())
        for r in job_conns:
            terminated.append(await self._terminate(ctx, db, r, "job connection"))
        left = await ctx.postgres.wait_gone(db, job_conns) if job_conns else []
        if left:
            raise ActionFailed(
                f"terminated job connection(s) {[r.pid for r in job_conns]} "
                f"but {left} still run; the lock holder(s) were left alone"
            )
        # 2. The lock holders that still hold the same rows in the same transaction (a
        # live Odoo thread may have rescheduled the failed job and committed meanwhile).
        current = await self._lock_identities(ctx, db, jobs)
        ended: list[PgSession] = []
        for h, s, _ in runs:
            if not any(_lock_identity(lk) in current for lk in h["locks"]):
                skipped.append(
                    {
                        "pid": s.pid,
                        "why": "committed and released its ir_cron "
                        "rows once its job connection ended",
                    }
                )
                continue
            terminated.append(await self._terminate(ctx, db, s, "lock holder"))
            ended.append(s)
        left = await ctx.postgres.wait_gone(db, ended) if ended else []
        for t in terminated:
            t["gone"] = t["pid"] not in left
        details = {"terminated": terminated, "skipped": skipped}
        if not terminated:
            return ActResult(
                summary="nothing terminated: every holder released its "
                "ir_cron rows or moved before healer acted",
                details=details,
            )
        if left:
            raise ActionFailed(
                f"terminated lock holder(s) {[s.pid for s in ended]} but "
                f"{left} still run after about 5s"
            )
        held = sorted({j for h, _, _ in runs for j in h["holds_jobs"]})
        return ActResult(
            summary=f"ended the stuck run of ir_cron job(s) "
            f"{', '.join(map(str, held))}: terminated " + _terminated_text(terminated),
            details=details,
        )

    @staticmethod
    async def _lock_identities(ctx: HealContext, db: str, jobs: list[int]) -> set[tuple[Any, ...]]:
        locks = await row_lock_holders(ctx, db, jobs)
        return {_lock_identity(h.evidence()) for h in locks.holders}

    @staticmethod
    async def _terminate(
        ctx: HealContext, db: str, session: PgSession, role: str
    ) -> dict[str, Any]:
        ok = await ctx.postgres.terminate(db, session)
        entry = {**session.evidence(), "role": role, "signalled": ok}
        await ctx.record("terminated", entry)
        return entry


# ---- odoo.restart_workers / odoo.restart_longpoll ----------------------------------------


class _RolloutParams(HandlerParams):
    containers: list[ContainerName] = Field(default_factory=list, max_length=50)
    service: ComposeName | None = None
    project: ComposeName | None = None
    stop_timeout: Duration = Field(default=30, ge=0, le=600)
    # Per container, when it has a healthcheck: how long to wait for "healthy".
    health_timeout: Duration = Field(default=120.0, le=1800)
    # Also restart, after each container, those joined to its network namespace and the
    # Compose services that depend on it with restart: true (handlers/_dependents.py).
    dependents: bool = False

    def all_services(self) -> list[str]:
        return [self.service] if self.service is not None else []

    @model_validator(mode="after")
    def _has_selector(self) -> _RolloutParams:
        if not self.containers and not self.all_services():
            raise ValueError("give 'containers' (names) or a compose 'service'")
        if self.project is not None and not self.all_services():
            raise ValueError("'project' narrows a compose service; give the service too")
        return self


class RestartWorkersParams(_RolloutParams):
    services: list[ComposeName] = Field(default_factory=list, max_length=20)

    def all_services(self) -> list[str]:
        return [*super().all_services(), *self.services]


class RestartLongpollParams(_RolloutParams):
    pass


async def _memory(ctx: HealContext, name: str) -> dict[str, Any]:
    try:
        mem: dict[str, Any] = dict(await ctx.docker.stats(name))
    except Exception as exc:  # evidence only: a stats hiccup must not stop a restart
        return {"error": f"{type(exc).__name__}: {exc}"}
    usage, limit = mem.get("usage"), mem.get("limit")
    mem["percent"] = round(100 * usage / limit, 1) if usage is not None and limit else None
    return mem


async def _state(ctx: HealContext, info: dict[str, Any]) -> dict[str, Any]:
    state = summary(info)
    configured = (info.get("HostConfig") or {}).get("Memory") or None
    memory = await _memory(ctx, state["name"]) if state["status"] == "running" else None
    return {**state, "mem_limit": configured, "memory": memory}


async def _rollout_check(ctx: HealContext, params: _RolloutParams) -> CheckResult:
    infos = await find_containers(ctx, params.containers, params.all_services(), params.project)
    missing = sorted(set(params.containers) - {summary(i)["name"] for i in infos})
    dependents: list[dict[str, str]] = []
    if infos and params.dependents:
        infos, dependents = await with_dependents(ctx, infos)
    # Read together: the stats API takes about a second per container.
    states = list(await asyncio.gather(*(_state(ctx, i) for i in infos)))
    evidence: dict[str, Any] = {
        "containers": states,
        "missing": missing,
        "order": [s["name"] for s in states],
    }
    if params.dependents:
        evidence["dependents"] = dependents
    if not states:
        return CheckResult(
            targets=[],
            evidence=evidence,
            act=False,
            reason="no container matches " + _describe(params),
        )
    return CheckResult(targets=[target(s) for s in states], evidence=evidence)


async def _rollout_act(ctx: HealContext, params: _RolloutParams, check: CheckResult) -> ActResult:
    """Rolling restart shared by the two container handlers: one container at a time, each
    back (and healthy, when it has a healthcheck) before the next."""
    names = [t.name for t in check.targets]
    follows = dependent_of(check)
    restarted: list[dict[str, Any]] = []
    for i, name in enumerate(names):
        memory_before = await _memory(ctx, name)
        try:
            before, after, took = await restart_one(
                ctx,
                name,
                stop_timeout=params.stop_timeout,
                health_timeout=params.health_timeout,
            )
        except ActionFailed as exc:
            done = [r["container"] for r in restarted]
            rest = names[i + 1 :]
            await ctx.record(
                "rollout_stopped",
                {
                    "container": name,
                    "error": exc.message,
                    "restarted": done,
                    "not_restarted": rest,
                },
            )
            raise ActionFailed(
                f"rollout stopped at {name}: {exc.message}; restarted before it: "
                f"{', '.join(done) or 'none'}; not restarted: {', '.join(rest) or 'none'}"
            ) from None
        entry = {
            "container": name,
            "seconds": took,
            "started_at": after["started_at"],
            "health": after["health"],
            "memory_before": memory_before,
            "memory_after": await _memory(ctx, name),
        }
        if name in follows:
            entry["dependent_of"] = follows[name]
        await ctx.record("restarted", {**entry, "before": before, "after": after})
        restarted.append(entry)
    return ActResult(
        summary=f"restarted {', '.join(names)} one at a time", details={"restarted": restarted}
    )


class RestartWorkers:
    name: ClassVar[str] = "odoo.restart_workers"
    Params: ClassVar[type[HandlerParams]] = RestartWorkersParams
    requires: ClassVar[frozenset[str]] = frozenset({"docker"})

    async def check(self, ctx: HealContext, params: RestartWorkersParams) -> CheckResult:
        return await _rollout_check(ctx, params)

    async def act(
        self, ctx: HealContext, params: RestartWorkersParams, check: CheckResult
    ) -> ActResult:
        return await _rollout_act(ctx, params, check)


class RestartLongpoll:
    name: ClassVar[str] = "odoo.restart_longpoll"
    Params: ClassVar[type[HandlerParams]] = RestartLongpollParams
    requires: ClassVar[frozenset[str]] = frozenset({"docker"})

    async def check(self, ctx: HealContext, params: RestartLongpollParams) -> CheckResult:
        return await _rollout_check(ctx, params)

    async def act(
        self, ctx: HealContext, params: RestartLongpollParams, check: CheckResult
    ) -> ActResult:
        return await _rollout_act(ctx, params, check)


def _describe(params: _RolloutParams) -> str:
    parts = [f"name {n!r}" for n in params.containers]
    parts += [
        f"compose service {s!r}" + (f" in project {params.project!r}" if params.project else "")
        for s in params.all_services()
    ]
    return " or ".join(parts)
