"""The only module handler plugins import.

Writing a handler (the canonical example: ``examples/handler-plugin``, quoted in
``docs/writing-handlers.md`` too)::

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

and registering it in your distribution's ``pyproject.toml``::

    [project.entry-points."healer.handlers"]
    "example.restart_unhealthy" = "healer_example.restart_unhealthy:RestartUnhealthy"

The contract (checked by :func:`healer.plugins.validate_handler` at start-up):

* ``name`` equals the entry point's name; ``Params`` is a :class:`HandlerParams` model;
  ``requires`` is a frozenset of the dependencies (``"docker"``, ``"postgres"``).
* ``async def check(self, ctx, params)`` and ``async def act(self, ctx, params, check)``;
  ``params`` is annotated with the handler's own ``Params`` class, or not at all.
* Durations in params are typed :data:`Duration` (``30``, ``"30s"``, ``"2m"`` all work).
* State from ``check`` to ``act``: ``act`` gets the very ``CheckResult`` that ``check``
  returned. What ``act`` needs beyond ``targets`` goes in a frozen dataclass subclass of
  :class:`CheckResult` (``UnhealthyCheck`` above), which ``act`` narrows with
  ``isinstance``; ``evidence`` is what the journal shows, for people, not for ``act``.
* Errors: raise ``ActionFailed("...")`` (could not do it), ``TargetRefused("...")``
  (must not touch that) or ``InvalidParams("...")``, without ``heal_id=``: the engine
  names the heal. Any other exception from ``check``/``act`` fails the heal too.
* Tests: :mod:`healer.testing` builds a :class:`HealContext` (fake alert, recorder,
  real or no adapters) and runs ``check`` then ``act`` as the engine does.

The engine does the rest: it validates the plugin at start-up, fills ``params``
from the rule (alert labels substituted as *data*), checks every target of
``CheckResult.targets`` against the allowlist, takes per-target locks, calls
``act`` unless dry-run, and verifies recovery through Prometheus. Verification
is never the handler's job.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from healer.docker_adapter import DockerAdapter
from healer.docker_config import DEFAULT_ENGINE
from healer.errors import ActionFailed, HealError, InvalidParams, TargetRefused
from healer.outcomes import Outcome, RecordStep
from healer.pg_session import Session as PgSession
from healer.postgres_adapter import HealPostgres, PostgresAdapter
from healer.units import Duration

__all__ = [
    "ActResult",
    "ActionFailed",
    "Alert",
    "CheckResult",
    "DockerAdapter",
    "Duration",
    "Handler",
    "HandlerParams",
    "HealContext",
    "HealError",
    "HealPostgres",
    "InvalidParams",
    "Outcome",
    "PgSession",
    "Postgres",
    "PostgresAdapter",
    "Target",
    "TargetRefused",
]


# ``Duration`` is a float of seconds that also accepts "30s", "10m", "1h30m", "7d" in
# params: ``older_than: Duration = 7 * 86400``.


class HandlerParams(BaseModel):
    """Base for every handler's params model: strict about unknown keys, frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert as the engine sees it (parsed from Alertmanager's payload)."""

    fingerprint: str
    status: str  # "firing" | "resolved"
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: datetime
    ends_at: datetime | None = None
    generator_url: str = ""

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")


@dataclass(frozen=True, slots=True)
class Target:
    """Something a handler will act on. ``kind`` + ``name`` (+ ``engine``) identify it
    for the per-target lock; ``attrs`` (e.g. compose project/service) feed the allowlist.

    ``engine`` is the Docker engine of a ``docker`` target: handlers leave it unset and
    the engine fills in the heal's engine. The key of a container on the engine
    ``default`` is ``docker:<name>`` (as before engines were named); on any other
    engine ``docker:<engine>/<name>``."""

    kind: str
    name: str
    attrs: Mapping[str, str] = field(default_factory=dict)
    engine: str | None = None

    @property
    def key(self) -> str:
        if self.engine is None or self.engine == DEFAULT_ENGINE:
            return f"{self.kind}:{self.name}"
        return f"{self.kind}:{self.engine}/{self.name}"

    def fields(self) -> dict[str, str]:
        """Everything an allowlist entry may match on (``engine`` when set)."""
        out = {**self.attrs, "kind": self.kind, "name": self.name}
        if self.engine is not None:
            out["engine"] = self.engine
        return out


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What ``check`` found. ``act=False`` ends the heal as ``no_action``."""

    targets: list[Target]
    evidence: dict[str, Any] = field(default_factory=dict)
    act: bool = True
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ActResult:
    """What ``act`` did, recorded in the heal's timeline."""

    summary: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HealContext:
    """Everything a handler may use during one heal. Built by the executor."""

    heal_id: str
    rule: str
    handler: str
    alert: Alert | None
    dry_run: bool
    log: Any  # a structlog BoundLogger carrying heal_id, rule, handler, fingerprint
    docker: DockerAdapter
    postgres: HealPostgres
    """Named databases from ``databases:``: this heal's view of the app's
    :class:`PostgresAdapter` (same calls, plus the per-heal termination cap)."""
    record: RecordStep
    """``await ctx.record("note", {...})`` adds an entry to the heal's timeline."""
    _soon: list[asyncio.Future[None]] = field(default_factory=list, init=False, repr=False)

    def record_soon(self, kind: str, data: dict[str, Any]) -> None:
        """Add a timeline entry without waiting for its disk write: the action goes on
        (the next signal, the wait for an exit) while it is written. The engine waits
        for every such write when the phase ends, before it records the phase's result;
        a write that failed then fails the heal."""
        self._soon.append(asyncio.ensure_future(self.record(kind, data)))

    async def recorded(self) -> None:
        """Wait until every :meth:`record_soon` entry so far is written (the engine does
        this after ``check`` and ``act``; a test driving a handler directly may too)."""
        soon, self._soon[:] = list(self._soon), []
        if soon:
            await asyncio.gather(*soon)


Postgres = HealPostgres
"""The older name of :class:`HealPostgres` (``ctx.postgres``'s type)."""


@runtime_checkable
class Handler(Protocol):
    """The handler contract, checked by ``healer.plugins`` at start-up."""

    name: ClassVar[str]
    Params: ClassVar[type[HandlerParams]]
    requires: ClassVar[frozenset[str]]  # dependencies for /health/ready, e.g. {"docker"}

    async def check(self, ctx: HealContext, params: Any) -> CheckResult: ...

    async def act(self, ctx: HealContext, params: Any, check: CheckResult) -> ActResult: ...
