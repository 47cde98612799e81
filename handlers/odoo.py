"""Odoo handlers: the Cron Job Jam, Memory Leak and Bus/Longpoll Stalls runbooks.

``odoo.unlock_cron`` (runbook "Cron Job Jam")::

    - name: odoo-cron-stuck
      match: ['alertname="OdooCronStuck"']
      handler: odoo.unlock_cron
      params:
        database: odoo               # a name from `databases:`
        overdue: 10m                 # active job with nextcall older than now - 10m
        min_held: 5m                 # only holders whose transaction is open longer
        cron_id: "{{ labels.cron_id }}"   # optional: just that job

Check lists the active overdue ``ir_cron`` jobs, learns which of them a cron worker
cannot take (their row is locked) and proves which sessions hold those row locks
(:mod:`handlers.odoo_cron`); act re-checks each holder is the same backend and
transaction, terminates it and waits (bounded) for it to go. Holders whose
transaction is younger than ``min_held`` are left alone (a job that is simply
running); a protected holder refuses the heal; more holders than the database's
``max_terminations`` refuse it too. Targets are ``postgres`` ``<database>/<pid>``
with ``database``, ``datname``, ``user`` and ``application_name`` for the allowlist.

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
import time
from collections import defaultdict
from typing import Annotated, Any, ClassVar

from pydantic import Field, model_validator

from handlers.docker import (
    ComposeName,
    ContainerName,
    find_containers,
    restart_one,
    summary,
    target,
)
from handlers.odoo_cron import (
    Holder,
    current_database,
    overdue_jobs,
    row_lock_holders,
    still_running,
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

_GONE_TIMEOUT = 5.0

# ---- odoo.unlock_cron ------------------------------------------------------------------


class UnlockCronParams(HandlerParams):
    database: DatabaseName
    datname: PgName | None = None
    overdue: Duration = 600.0
    min_held: Duration = 300.0
    cron_id: int | None = Field(default=None, ge=1)


def _pg_target(database: str, session: PgSession) -> Target:
    return Target(kind="postgres", name=f"{database}/{session.pid}",
                  attrs={"database": database, "datname": session.database or "",
                         "user": session.user or "",
                         "application_name": session.application_name})


def _lock_identity(lock: dict[str, Any]) -> tuple[Any, ...]:
    return (lock["job_id"], lock["pid"], lock["xid"], lock["backend_start"],
            lock["xact_start"])


class UnlockCron:
    name: ClassVar[str] = "odoo.unlock_cron"
    Params: ClassVar[type[HandlerParams]] = UnlockCronParams
    requires: ClassVar[frozenset[str]] = frozenset({"postgres"})

    async def check(self, ctx: HealContext, params: UnlockCronParams) -> CheckResult:
        db = params.database
        datname = await current_database(ctx, db, params.datname)
        jobs = await overdue_jobs(ctx, db, overdue=params.overdue, cron_id=params.cron_id)
        evidence: dict[str, Any] = {
            "database": db, "datname": datname, "overdue_s": params.overdue,
            "min_held_s": params.min_held, "cron_id": params.cron_id, "overdue_jobs": jobs}
        if not jobs:
            return CheckResult(targets=[], evidence=evidence, act=False,
                               reason="no active ir_cron job is overdue by more than "
                                      f"{params.overdue:g}s")
        locks = await row_lock_holders(ctx, db, [j["id"] for j in jobs])
        for job in jobs:
            job["locked"] = job["id"] in locks.locked
        evidence["unproven"] = {str(k): v for k, v in locks.unproven.items()}
        if not locks.locked:
            return CheckResult(targets=[], evidence=evidence, act=False,
                               reason=f"{len(jobs)} overdue ir_cron job(s), none locked: a "
                                      "cron worker could take them; nothing to terminate")

        sessions = {s.pid: s for s in await ctx.postgres.sessions(db, datname=datname)}
        by_pid: dict[int, list[Holder]] = defaultdict(list)
        for h in locks.holders:
            by_pid[h.pid].append(h)
        holders: list[dict[str, Any]] = []
        targets: list[Target] = []
        protected: list[str] = []
        for pid, held in sorted(by_pid.items()):
            s = sessions.get(pid)
            if s is None:
                evidence["unproven"].update({str(h.job_id): f"pid {pid} is gone"
                                             for h in held})
                continue
            why = ctx.postgres.protection(db, s)
            age = s.xact_age or 0.0
            if why is not None:
                decision = f"protected: {why}"
                protected.append(f"pid {pid} ({why})")
            elif age < params.min_held:
                decision = (f"transaction open {age:.0f}s < min_held {params.min_held:g}s: "
                            "a job may simply be running")
            else:
                decision = "terminate"
                targets.append(_pg_target(db, s))
            holders.append({**s.evidence(), "holds_jobs": [h.job_id for h in held],
                            "locks": [h.evidence() for h in held], "decision": decision})
        evidence["holders"] = holders

        if targets:
            cap = ctx.postgres.max_terminations(db)
            if len(targets) > cap:
                await ctx.record("holders", evidence)
                raise TargetRefused(f"{len(targets)} sessions hold overdue ir_cron jobs; "
                                    f"databases.{db}.max_terminations allows {cap} per heal",
                                    heal_id=ctx.heal_id)
            return CheckResult(targets=targets, evidence=evidence)
        if protected:
            await ctx.record("holders", evidence)
            raise TargetRefused("overdue ir_cron jobs are held by protected session(s): "
                                + ", ".join(protected), heal_id=ctx.heal_id)
        reasons = [h["decision"] for h in holders] + list(evidence["unproven"].values())
        return CheckResult(targets=[], evidence=evidence, act=False,
                           reason=f"{len(locks.locked)} overdue job(s) locked, no holder to "
                                  "terminate: " + "; ".join(reasons))

    async def act(self, ctx: HealContext, params: UnlockCronParams,
                  check: CheckResult) -> ActResult:
        db = params.database
        planned = [h for h in check.evidence["holders"] if h["decision"] == "terminate"]
        jobs = sorted({j for h in planned for j in h["holds_jobs"]})
        # Re-prove right before acting: the same backend must still hold the same rows
        # in the same transaction, or it is left alone.
        now = await row_lock_holders(ctx, db, jobs)
        current = {_lock_identity(h.evidence()) for h in now.holders}
        sessions = {s.pid: s for s in await ctx.postgres.sessions(
            db, datname=check.evidence["datname"])}
        terminated: list[dict[str, Any]] = []
        skipped: list[dict[str, Any]] = []
        for h in planned:
            pid = h["pid"]
            still = [lk for lk in h["locks"] if _lock_identity(lk) in current]
            if not still or pid not in sessions:
                skipped.append({"pid": pid, "why": "released its ir_cron rows meanwhile"})
                continue
            ok = await ctx.postgres.terminate(db, sessions[pid])
            entry = {**sessions[pid].evidence(), "holds_jobs": [lk["job_id"] for lk in still],
                     "signalled": ok}
            await ctx.record("terminated", entry)
            terminated.append(entry)
        pids = [t["pid"] for t in terminated]
        left = await self._wait_gone(ctx, db, pids)
        for t in terminated:
            t["gone"] = t["pid"] not in left
        details = {"terminated": terminated, "skipped": skipped}
        if not terminated:
            return ActResult(summary="nothing terminated: every holder released its "
                                     "ir_cron rows before healer acted", details=details)
        if left:
            raise ActionFailed(f"terminated pid(s) {pids} but {left} still run after "
                               f"{_GONE_TIMEOUT:g}s", heal_id=ctx.heal_id)
        held = sorted({j for t in terminated for j in t["holds_jobs"]})
        return ActResult(summary=f"terminated pid(s) {', '.join(map(str, pids))} holding "
                                 f"ir_cron job(s) {', '.join(map(str, held))}",
                         details=details)

    async def _wait_gone(self, ctx: HealContext, db: str, pids: list[int]) -> list[int]:
        deadline = time.monotonic() + _GONE_TIMEOUT
        left = await still_running(ctx, db, pids) if pids else []
        while left and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            left = await still_running(ctx, db, left)
        return left


# ---- odoo.restart_workers / odoo.restart_longpoll ----------------------------------------


class _RolloutParams(HandlerParams):
    containers: list[ContainerName] = Field(default_factory=list, max_length=50)
    service: ComposeName | None = None
    project: ComposeName | None = None
    stop_timeout: int = Field(default=30, ge=0, le=600)
    # Per container, when it has a healthcheck: how long to wait for "healthy".
    health_timeout: Duration = Field(default=120.0, le=1800)

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


class _Rollout:
    """Rolling restart shared by the two container handlers."""

    requires: ClassVar[frozenset[str]] = frozenset({"docker"})

    async def check(self, ctx: HealContext, params: _RolloutParams) -> CheckResult:
        infos = await find_containers(ctx, params.containers, params.all_services(),
                                      params.project)
        # Read together: the stats API takes about a second per container.
        states = list(await asyncio.gather(*(_state(ctx, i) for i in infos)))
        missing = sorted(set(params.containers) - {s["name"] for s in states})
        evidence = {"containers": states, "missing": missing,
                    "order": [s["name"] for s in states]}
        if not states:
            return CheckResult(targets=[], evidence=evidence, act=False,
                               reason="no container matches " + _describe(params))
        return CheckResult(targets=[target(s) for s in states], evidence=evidence)

    async def act(self, ctx: HealContext, params: _RolloutParams,
                  check: CheckResult) -> ActResult:
        names = [t.name for t in check.targets]
        restarted: list[dict[str, Any]] = []
        for i, name in enumerate(names):
            memory_before = await _memory(ctx, name)
            try:
                before, after, took = await restart_one(
                    ctx, name, stop_timeout=params.stop_timeout,
                    health_timeout=params.health_timeout)
            except ActionFailed as exc:
                done = [r["container"] for r in restarted]
                rest = names[i + 1:]
                await ctx.record("rollout_stopped", {"container": name, "error": exc.message,
                                                     "restarted": done, "not_restarted": rest})
                raise ActionFailed(
                    f"rollout stopped at {name}: {exc.message}; restarted before it: "
                    f"{', '.join(done) or 'none'}; not restarted: {', '.join(rest) or 'none'}",
                    heal_id=ctx.heal_id) from None
            entry = {"container": name, "seconds": took, "started_at": after["started_at"],
                     "health": after["health"], "memory_before": memory_before,
                     "memory_after": await _memory(ctx, name)}
            await ctx.record("restarted", {**entry, "before": before, "after": after})
            restarted.append(entry)
        return ActResult(summary=f"restarted {', '.join(names)} one at a time",
                         details={"restarted": restarted})


class RestartWorkers(_Rollout):
    name: ClassVar[str] = "odoo.restart_workers"
    Params: ClassVar[type[HandlerParams]] = RestartWorkersParams


class RestartLongpoll(_Rollout):
    name: ClassVar[str] = "odoo.restart_longpoll"
    Params: ClassVar[type[HandlerParams]] = RestartLongpollParams


def _describe(params: _RolloutParams) -> str:
    parts = [f"name {n!r}" for n in params.containers]
    parts += [f"compose service {s!r}" + (f" in project {params.project!r}"
                                          if params.project else "")
              for s in params.all_services()]
    return " or ".join(parts)
