"""``example.restart_unhealthy``: restart one container whose Docker health check fails.

The canonical example of a healer handler (the README, docs/writing-handlers.md and
the healer.api docstring quote this code).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from healer.api import (
    ActionFailed,
    ActResult,
    CheckResult,
    Duration,
    HandlerParams,
    HealContext,
    Target,
)


class RestartUnhealthyParams(HandlerParams):
    container: str
    stop_timeout: Duration = 10.0  # 10, "10s" and "1m" all work


@dataclass(frozen=True, slots=True)
class UnhealthyCheck(CheckResult):  # state for act: only `evidence` is journaled
    started_at: str = ""


class RestartUnhealthy:
    name = "example.restart_unhealthy"
    Params = RestartUnhealthyParams
    requires = frozenset({"docker"})

    async def check(self, ctx: HealContext, params: RestartUnhealthyParams) -> CheckResult:
        state = (await ctx.docker.inspect(params.container))["State"]
        health = (state.get("Health") or {}).get("Status")
        targets = [Target(kind="docker", name=params.container)]
        evidence = {"status": state["Status"], "health": health}
        if health != "unhealthy":
            reason = f"{params.container} is not unhealthy (health: {health})"
            return CheckResult(targets, evidence, act=False, reason=reason)
        return UnhealthyCheck(targets, evidence, started_at=state["StartedAt"])

    async def act(
        self, ctx: HealContext, params: RestartUnhealthyParams, check: CheckResult
    ) -> ActResult:
        if not isinstance(check, UnhealthyCheck):
            raise ActionFailed("act needs the result of this handler's own check")
        await ctx.docker.restart(params.container, timeout=math.ceil(params.stop_timeout))
        state = (await ctx.docker.inspect(params.container))["State"]
        if state["StartedAt"] == check.started_at:
            raise ActionFailed(f"{params.container} did not restart")
        await ctx.record("restarted", {"was": check.started_at, "now": state["StartedAt"]})
        return ActResult(summary=f"restarted {params.container}")
