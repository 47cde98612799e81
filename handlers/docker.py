"""``docker.restart``: restart containers chosen by name or by compose service.

Rule example::

    - name: service-down
      match: ['alertname="ServiceDown"']
      handler: docker.restart
      params:
        containers: ["{{ labels.container }}"]    # or: service: web, project: shop
        stop_timeout: 10s                          # durations: 10, "10s", "2m"
        health_timeout: 2m

Check records each container's state (status, StartedAt, restart count,
health); act restarts them one at a time, confirms each came back with a new
StartedAt and, when the container has a healthcheck, waits for it to report
healthy before the next one (a rolling restart over replicas).

With ``dependents: true`` the containers that must follow each one (joined to its
network namespace, or a Compose ``depends_on`` with ``restart: true``) are targets too:
checked against the allowlist and the gates with the others, shown in the evidence, and
restarted right after the container they depend on (see ``handlers/_dependents.py``).

The pieces (:func:`find_containers`, :func:`summary`, :func:`target`,
:func:`restart_one`, :func:`with_dependents`) are shared with other container handlers
(``handlers.odoo``).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterable
from typing import Annotated, Any, ClassVar

from pydantic import Field, model_validator

from handlers._dependents import find_dependents, restart_order
from healer.api import (
    ActionFailed,
    ActResult,
    CheckResult,
    Duration,
    HandlerParams,
    HealContext,
    Target,
)

# Docker's own rule for container names; compose's for project and service names.
ContainerName = Annotated[str, Field(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")]
ComposeName = Annotated[str, Field(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")]

_SERVICE = "com.docker.compose.service"
_PROJECT = "com.docker.compose.project"


class RestartParams(HandlerParams):
    containers: list[ContainerName] = Field(default_factory=list, max_length=50)
    service: ComposeName | None = None
    project: ComposeName | None = None
    # Docker's grace between SIGTERM and SIGKILL (whole seconds: a fraction rounds up).
    stop_timeout: Duration = Field(default=10, ge=0, le=600)
    # Per container, when it has a healthcheck: how long to wait for "healthy".
    health_timeout: Duration = Field(default=60.0, ge=0, le=1800)
    # Also restart, after each container, those joined to its network namespace and the
    # Compose services that depend on it with restart: true (handlers/_dependents.py).
    dependents: bool = False

    @model_validator(mode="after")
    def _has_selector(self) -> RestartParams:
        if not self.containers and self.service is None:
            raise ValueError("give 'containers' (names) or 'service' (compose service)")
        if self.project is not None and self.service is None:
            raise ValueError("'project' narrows a 'service'; give the service too")
        return self


def summary(info: dict[str, Any]) -> dict[str, Any]:
    """The state a heal records about a container, from its inspect dict."""
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


def target(summary: dict[str, Any]) -> Target:
    """The allowlist target of a container: its name plus its compose project/service."""
    attrs = {k: summary[k] for k in ("compose_project", "compose_service") if summary[k]}
    return Target(kind="docker", name=summary["name"], attrs=attrs)


async def find_containers(
    ctx: HealContext,
    names: Iterable[str] = (),
    services: Iterable[str] = (),
    project: str | None = None,
) -> list[dict[str, Any]]:
    """Inspect dicts of the containers named ``names`` and of those carrying the compose
    labels of each of ``services`` (in ``project`` when given), each container once.

    Order: the named containers as given, then each service's replicas by name, so a
    rolling restart follows the order the rule wrote."""
    found: list[dict[str, Any]] = []
    for name in names:
        found.extend(await ctx.docker.list_containers(name=name))
    for service in services:
        labels = {_SERVICE: service}
        if project is not None:
            labels[_PROJECT] = project
        found.extend(
            sorted(
                await ctx.docker.list_containers(labels=labels), key=lambda i: str(i.get("Name"))
            )
        )
    unique: dict[str, dict[str, Any]] = {}
    for info in found:
        unique.setdefault(info["Id"], info)
    return list(unique.values())


async def with_dependents(
    ctx: HealContext, infos: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """``infos`` (the containers a rule chose, in restart order) with their dependents
    placed right after the container each depends on, and the evidence saying which
    container follows which and why."""
    found = await find_dependents(ctx, infos)
    by_name = {summary(i)["name"]: i for i in [*infos, *(info for info, _ in found)]}
    order = restart_order([summary(i)["name"] for i in infos], [d for _, d in found])
    return [by_name[n] for n in order], [d.as_evidence() for _, d in found]


def dependent_of(check: CheckResult) -> dict[str, str]:
    """Container name -> the container it restarts after, from the check's evidence."""
    return {d["name"]: d["of"] for d in check.evidence.get("dependents") or []}


async def restart_one(
    ctx: HealContext, name: str, *, stop_timeout: float, health_timeout: float
) -> tuple[dict[str, Any], dict[str, Any], float]:
    """Restart ``name`` and wait until it is back: running with a new StartedAt and, when
    it has a healthcheck, healthy. Returns (before, after, seconds); raises ActionFailed
    naming what it saw when the container does not come back."""
    before = summary(await ctx.docker.inspect(name))
    started = time.monotonic()
    await ctx.docker.restart(name, timeout=math.ceil(stop_timeout))
    after = summary(await ctx.docker.inspect(name))
    if after["started_at"] == before["started_at"] or after["status"] != "running":
        raise ActionFailed(
            f"{name} did not come back: status {after['status']}, StartedAt {after['started_at']}"
        )
    if after["health"] is not None:
        after = await wait_healthy(ctx, name, health_timeout)
    return before, after, round(time.monotonic() - started, 3)


async def wait_healthy(ctx: HealContext, name: str, timeout: float) -> dict[str, Any]:
    """Poll (bounded by ``timeout``) until the container's healthcheck says healthy; fail at
    once if it stops running meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        state = summary(await ctx.docker.inspect(name))
        if state["health"] == "healthy":
            return state
        if state["status"] != "running":
            raise ActionFailed(
                f"{name} restarted but stopped before it was healthy (status: {state['status']})"
            )
        if time.monotonic() >= deadline:
            raise ActionFailed(
                f"{name} restarted but not healthy after {timeout:g}s (health: {state['health']})"
            )
        await asyncio.sleep(0.5)


class DockerRestart:
    name: ClassVar[str] = "docker.restart"
    Params: ClassVar[type[HandlerParams]] = RestartParams
    requires: ClassVar[frozenset[str]] = frozenset({"docker"})

    async def check(self, ctx: HealContext, params: RestartParams) -> CheckResult:
        services = [params.service] if params.service is not None else []
        infos = await find_containers(ctx, params.containers, services, params.project)
        infos = sorted(infos, key=lambda i: str(summary(i)["name"]))
        wanted = set(params.containers)
        missing = sorted(wanted - {summary(i)["name"] for i in infos})
        dependents: list[dict[str, str]] = []
        if infos and params.dependents:
            infos, dependents = await with_dependents(ctx, infos)
        found = [summary(i) for i in infos]
        evidence: dict[str, Any] = {"containers": found, "missing": missing}
        if params.dependents:
            evidence["dependents"] = dependents
        if not found:
            return CheckResult(
                targets=[],
                evidence=evidence,
                act=False,
                reason="no container matches " + _describe(params),
            )
        return CheckResult(targets=[target(s) for s in found], evidence=evidence)

    async def act(self, ctx: HealContext, params: RestartParams, check: CheckResult) -> ActResult:
        restarted = []
        follows = dependent_of(check)
        for t in check.targets:
            before, after, took = await restart_one(
                ctx, t.name, stop_timeout=params.stop_timeout, health_timeout=params.health_timeout
            )
            entry: dict[str, Any] = {
                "container": t.name,
                "seconds": took,
                "started_at": after["started_at"],
                "health": after["health"],
            }
            if t.name in follows:
                entry["dependent_of"] = follows[t.name]
            await ctx.record("restarted", {**entry, "before": before, "after": after})
            restarted.append(entry)
        names = ", ".join(r["container"] for r in restarted)
        return ActResult(summary=f"restarted {names}", details={"restarted": restarted})


def _describe(params: RestartParams) -> str:
    parts = [f"name {n!r}" for n in params.containers]
    if params.service is not None:
        parts.append(
            f"compose service {params.service!r}"
            + (f" in project {params.project!r}" if params.project else "")
        )
    return " or ".join(parts)
