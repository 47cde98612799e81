"""The only module handler plugins import.

Writing a handler::

    from healer.api import ActResult, CheckResult, HandlerParams, HealContext, Target

    class Params(HandlerParams):
        container: str

    class Poke:
        name = "example.poke"
        Params = Params
        requires = frozenset({"docker"})

        async def check(self, ctx: HealContext, params: Params) -> CheckResult:
            info = await ctx.docker.inspect(params.container)      # gather evidence
            return CheckResult(
                targets=[Target(kind="docker", name=params.container)],
                evidence={"state": info["State"]["Status"]},
            )

        async def act(self, ctx: HealContext, params: Params, check: CheckResult) -> ActResult:
            await ctx.docker.restart(params.container, timeout=10)
            return ActResult(summary=f"restarted {params.container}")

and registering it in your distribution's ``pyproject.toml``::

    [project.entry-points."healer.handlers"]
    "example.poke" = "my_package.poke:Poke"

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
from healer.errors import ActionFailed, HealError, InvalidParams, TargetRefused
from healer.outcomes import Outcome, RecordStep
from healer.postgres_adapter import HealPostgres
from healer.postgres_adapter import Session as PgSession
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
    "InvalidParams",
    "Outcome",
    "PgSession",
    "Postgres",
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
    """Something a handler will act on. ``kind`` + ``name`` identify it for the
    per-target lock; ``attrs`` (e.g. compose project/service) feed the allowlist."""

    kind: str
    name: str
    attrs: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.name}"

    def fields(self) -> dict[str, str]:
        """Everything an allowlist entry may match on."""
        return {**self.attrs, "kind": self.kind, "name": self.name}


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
    postgres: Postgres
    """Named databases from ``databases:``; see :mod:`healer.postgres_adapter`."""
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


@runtime_checkable
class Handler(Protocol):
    """The handler contract, checked by ``healer.plugins`` at start-up."""

    name: ClassVar[str]
    Params: ClassVar[type[HandlerParams]]
    requires: ClassVar[frozenset[str]]  # dependencies for /health/ready, e.g. {"docker"}

    async def check(self, ctx: HealContext, params: Any) -> CheckResult: ...

    async def act(self, ctx: HealContext, params: Any, check: CheckResult) -> ActResult: ...
