"""A kit for testing handler plugins without healer's own test suite.

Usage (pytest with pytest-asyncio; ``RestartUnhealthy`` is the example plugin)::

    from healer.testing import docker_adapter, heal_context, make_alert, run_handler

    async def test_restarts_an_unhealthy_container() -> None:
        docker = docker_adapter()                       # the real engine, no fake
        try:
            ctx = heal_context(make_alert({"alertname": "Unhealthy"}), docker=docker)
            params = {"container": "web", "stop_timeout": "2s"}
            run = await run_handler(RestartUnhealthy, ctx, params)
        finally:
            await docker.aclose()
        assert run.check.act and run.act is not None
        assert ctx.recorder.kinds() == ["check", "restarted", "act"]

* :func:`make_alert` builds the :class:`~healer.api.Alert` the engine would parse from
  Alertmanager's payload (labels, annotations, status, start).
* :func:`heal_context` builds the :class:`~healer.api.HealContext` a heal gets. Its
  ``record`` (and ``record_soon``) append to ``ctx.recorder``. Adapters are real and
  the caller's (:func:`docker_adapter`, :func:`postgres_adapter` for a DSN), or absent:
  a handler that touches an absent one raises :class:`NoAdapter`, naming it.
* :func:`run_handler` does what the engine does between "params" and "verify": it
  validates the handler against the plugin contract, validates ``params`` through the
  handler's ``Params`` (no ``{{ labels.x }}`` templating: give the final values), calls
  ``check``, and calls ``act`` when the check says so and the context is not a dry run;
  the timeline gets the engine's ``check`` (``dry_run``) and ``act`` entries after the
  handler's own of each phase, in the journal's order.
  What it does not do: the allowlist, target locks, the safety gates, verification.

The caller owns the adapters it passes in: ``await adapter.aclose()`` when done.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import structlog
from pydantic import BaseModel

from healer.api import (
    ActResult,
    Alert,
    CheckResult,
    DockerAdapter,
    Handler,
    HealContext,
    HealPostgres,
    PostgresAdapter,
)
from healer.config import DatabaseConfig
from healer.plugins import validate_handler

__all__ = [
    "HealRun",
    "NoAdapter",
    "Recorder",
    "RecordingContext",
    "docker_adapter",
    "heal_context",
    "make_alert",
    "postgres_adapter",
    "run_handler",
]

STARTS_AT = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
"""When a :func:`make_alert` alert started, unless told otherwise."""


def make_alert(
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    *,
    status: str = "firing",
    starts_at: datetime = STARTS_AT,
    ends_at: datetime | None = None,
    fingerprint: str | None = None,
    generator_url: str = "",
) -> Alert:
    """An alert as the engine sees it. The fingerprint defaults to one derived from the
    labels (as Alertmanager's is: same labels, same fingerprint)."""
    labels = dict(labels or {})
    if fingerprint is None:
        digest = hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()
        fingerprint = digest[:16]
    return Alert(
        fingerprint=fingerprint,
        status=status,
        labels=labels,
        annotations=dict(annotations or {}),
        starts_at=starts_at,
        ends_at=ends_at,
        generator_url=generator_url,
    )


@dataclass
class Recorder:
    """The heal's timeline as a list: what ``ctx.record`` / ``ctx.record_soon`` wrote."""

    entries: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def __call__(self, kind: str, data: dict[str, Any]) -> None:
        self.entries.append((kind, data))

    def of(self, kind: str) -> list[dict[str, Any]]:
        """The data of every entry of ``kind``, in order."""
        return [data for k, data in self.entries if k == kind]

    def kinds(self) -> list[str]:
        """The kind of every entry, in order."""
        return [k for k, _ in self.entries]


class NoAdapter(RuntimeError):
    """The handler used an adapter the test did not give :func:`heal_context`."""


class _Absent:
    """Stands in for an adapter that was not given: any use raises :class:`NoAdapter`."""

    def __init__(self, what: str, how: str) -> None:
        self._what = what
        self._how = how

    def __getattr__(self, attr: str) -> Any:
        raise NoAdapter(
            f"the handler used ctx.{self._what}.{attr}, but this test gave the heal no "
            f"{self._what} adapter: pass heal_context({self._what}={self._how})"
        )

    def __repr__(self) -> str:
        return f"<no {self._what} adapter>"


@dataclass(frozen=True, slots=True)
class RecordingContext(HealContext):
    """A :class:`~healer.api.HealContext` whose timeline is kept in ``recorder``."""

    recorder: Recorder = field(default_factory=Recorder)


def heal_context(
    alert: Alert | None = None,
    *,
    docker: DockerAdapter | None = None,
    postgres: PostgresAdapter | HealPostgres | None = None,
    dry_run: bool = False,
    handler: str = "test",
    rule: str = "test-rule",
    heal_id: str = "00000000000000aa",
    log: Any = None,
) -> RecordingContext:
    """The context of one heal. ``alert=None`` is a manual heal (``POST /api/v1/heals``).
    ``postgres`` is the app-wide adapter (this heal gets its own view, with its own
    termination cap, as in the engine) or such a view."""
    recorder = Recorder()
    if isinstance(postgres, PostgresAdapter):
        postgres = postgres.for_heal()
    return RecordingContext(
        heal_id=heal_id,
        rule=rule,
        handler=handler,
        alert=alert,
        dry_run=dry_run,
        log=log
        if log is not None
        else structlog.get_logger("healer.testing").bind(
            heal_id=heal_id, rule=rule, handler=handler
        ),
        docker=docker if docker is not None else cast(Any, _Absent("docker", "docker_adapter()")),
        postgres=postgres
        if postgres is not None
        else cast(Any, _Absent("postgres", "postgres_adapter(dsn)")),
        record=recorder,
        recorder=recorder,
    )


def docker_adapter(base_url: str | None = None) -> DockerAdapter:
    """The engine's Docker adapter on ``base_url`` (default: the environment's,
    ``DOCKER_HOST`` or the local socket). Connects on first use."""
    return DockerAdapter(base_url)


def postgres_adapter(dsn: str, *, name: str = "main", **settings: Any) -> PostgresAdapter:
    """The engine's PostgreSQL adapter with one database, ``name``, at ``dsn``.

    ``settings`` are that database's ``databases.<name>`` config (``max_terminations``,
    ``allow_superusers``, ``protect``, ``statement_timeout``...). Connects on first use;
    ``await adapter.aclose()`` when done."""
    # The adapter gets the DSN itself; the config's DSN source is never read here.
    config = DatabaseConfig.model_validate({"dsn_env": "HEALER_TESTING_DSN", **settings})
    return PostgresAdapter({name: config}, {name: dsn})


@dataclass(frozen=True)
class HealRun:
    """What :func:`run_handler` saw: the validated params, check's result, and act's
    (``None`` when the check found nothing to do or the context is a dry run)."""

    params: BaseModel
    check: CheckResult
    act: ActResult | None


async def run_handler(
    handler: Any, ctx: HealContext, params: Mapping[str, Any] | BaseModel
) -> HealRun:
    """Run ``handler`` (a class or an instance) for one heal as the engine does.

    Raises :class:`healer.errors.PluginValidationError` if the handler breaks the
    contract, ``pydantic.ValidationError`` if ``params`` do not validate, and whatever
    ``check`` or ``act`` raise (the engine would record it as the heal's failure or
    refusal). A check that wants to act must name a target (``AssertionError``)."""
    checked: Handler = validate_handler(getattr(handler, "name", "?"), handler)
    if isinstance(params, BaseModel):
        if type(params) is not checked.Params:
            raise TypeError(f"params is a {type(params).__name__}, not {checked.Params.__name__}")
        model = params
    else:
        model = checked.Params.model_validate(dict(params))
    try:
        check = await checked.check(ctx, model)
    finally:
        await ctx.recorded()
    keys = [t.key for t in check.targets]
    await ctx.record(
        "check",
        {"act": check.act, "reason": check.reason, "evidence": check.evidence, "targets": keys},
    )
    if not check.act:
        return HealRun(params=model, check=check, act=None)
    assert check.targets, "the handler decided to act but named no target (the heal fails)"
    if ctx.dry_run:
        await ctx.record("dry_run", {"would_act_on": keys})
        return HealRun(params=model, check=check, act=None)
    try:
        result = await checked.act(ctx, model, check)
    finally:
        await ctx.recorded()
    await ctx.record("act", {"summary": result.summary, "details": result.details})
    return HealRun(params=model, check=check, act=result)
