"""``docker.restart``: restart containers chosen by name or by compose service.

Rule example::

    - name: service-down
      match: ['alertname="ServiceDown"']
      handler: docker.restart
      params:
        containers: ["{{ labels.container }}"]    # or: service: web, project: shop
        stop_timeout: 10

Check records each container's state (status, StartedAt, restart count,
health); act restarts them one at a time, confirms each came back with a new
StartedAt and, when the container has a healthcheck, waits for it to report
healthy before the next one (a rolling restart over replicas).
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any, ClassVar

from pydantic import Field, model_validator

from healer.api import ActionFailed, ActResult, CheckResult, HandlerParams, HealContext, Target

# Docker's own rule for container names; compose's for project and service names.
ContainerName = Annotated[str, Field(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")]
ComposeName = Annotated[str, Field(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")]

_SERVICE = "com.docker.compose.service"
_PROJECT = "com.docker.compose.project"


class RestartParams(HandlerParams):
    containers: list[ContainerName] = Field(default_factory=list, max_length=50)
    service: ComposeName | None = None
    project: ComposeName | None = None
    stop_timeout: int = Field(default=10, ge=0, le=600)
    # Per container, when it has a healthcheck: how long to wait for "healthy".
    health_timeout: float = Field(default=60.0, ge=0, le=1800)

    @model_validator(mode="after")
    def _has_selector(self) -> RestartParams:
        if not self.containers and self.service is None:
            raise ValueError("give 'containers' (names) or 'service' (compose service)")
        if self.project is not None and self.service is None:
            raise ValueError("'project' narrows a 'service'; give the service too")
        return self


def _summary(info: dict[str, Any]) -> dict[str, Any]:
    state = info.get("State") or {}
    labels = (info.get("Config") or {}).get("Labels") or {}
    return {
        "name": info.get("Name", "").lstrip("/"),
        "id": info.get("Id", "")[:12],
        "status": state.get("Status"),
        "started_at": state.get("StartedAt"),
        "restart_count": info.get("RestartCount"),
        "health": (state.get("Health") or {}).get("Status"),
        "oom_killed": state.get("OOMKilled"),
        "compose_project": labels.get(_PROJECT),
        "compose_service": labels.get(_SERVICE),
    }


def _target(summary: dict[str, Any]) -> Target:
    attrs = {k: summary[k] for k in ("compose_project", "compose_service") if summary[k]}
    return Target(kind="docker", name=summary["name"], attrs=attrs)


class DockerRestart:
    name: ClassVar[str] = "docker.restart"
    Params: ClassVar[type[HandlerParams]] = RestartParams
    requires: ClassVar[frozenset[str]] = frozenset({"docker"})

    async def _find(self, ctx: HealContext, params: RestartParams) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for name in params.containers:
            found.extend(await ctx.docker.list_containers(name=name))
        if params.service is not None:
            labels = {_SERVICE: params.service}
            if params.project is not None:
                labels[_PROJECT] = params.project
            found.extend(await ctx.docker.list_containers(labels=labels))
        unique = {info["Id"]: info for info in found}
        return sorted(unique.values(), key=lambda i: str(i.get("Name")))

    async def check(self, ctx: HealContext, params: RestartParams) -> CheckResult:
        found = [_summary(i) for i in await self._find(ctx, params)]
        wanted = set(params.containers)
        missing = sorted(wanted - {s["name"] for s in found})
        evidence = {"containers": found, "missing": missing}
        if not found:
            return CheckResult(targets=[], evidence=evidence, act=False,
                               reason="no container matches " + _describe(params))
        return CheckResult(targets=[_target(s) for s in found], evidence=evidence)

    async def act(self, ctx: HealContext, params: RestartParams,
                  check: CheckResult) -> ActResult:
        restarted = []
        for target in check.targets:
            before = _summary(await ctx.docker.inspect(target.name))
            started = time.monotonic()
            await ctx.docker.restart(target.name, timeout=params.stop_timeout)
            after = _summary(await ctx.docker.inspect(target.name))
            if after["started_at"] == before["started_at"] or after["status"] != "running":
                raise ActionFailed(f"{target.name} did not come back: status {after['status']}, "
                                   f"StartedAt {after['started_at']}", heal_id=ctx.heal_id)
            if after["health"] is not None:
                after = await self._wait_healthy(ctx, target.name, params.health_timeout)
            took = round(time.monotonic() - started, 3)
            await ctx.record("restarted", {"container": target.name, "seconds": took,
                                           "before": before, "after": after})
            restarted.append({"container": target.name, "seconds": took,
                              "started_at": after["started_at"], "health": after["health"]})
        names = ", ".join(r["container"] for r in restarted)
        return ActResult(summary=f"restarted {names}", details={"restarted": restarted})

    async def _wait_healthy(self, ctx: HealContext, name: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            summary = _summary(await ctx.docker.inspect(name))
            if summary["health"] == "healthy":
                return summary
            if time.monotonic() >= deadline:
                raise ActionFailed(f"{name} restarted but not healthy after {timeout:g}s "
                                   f"(health: {summary['health']})", heal_id=ctx.heal_id)
            await asyncio.sleep(0.5)


def _describe(params: RestartParams) -> str:
    parts = [f"name {n!r}" for n in params.containers]
    if params.service is not None:
        parts.append(f"compose service {params.service!r}"
                     + (f" in project {params.project!r}" if params.project else ""))
    return " or ".join(parts)
