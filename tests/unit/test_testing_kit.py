"""healer.testing, the kit a handler plugin's tests use: a heal context with a recorder
and real (or absent) adapters, and ``run_handler`` doing what the engine does between
the params and the verification. Tried on built-in handlers against a real Docker and a
real PostgreSQL database."""

from __future__ import annotations

import ast
import asyncio
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import asyncpg
import pytest
from pydantic import ValidationError

import healer.testing
from handlers.docker import DockerRestart, RestartParams
from handlers.postgres import TerminateIdle
from healer.api import ActResult, CheckResult, HandlerParams, HealContext, HealPostgres, Target
from healer.errors import PluginValidationError
from healer.testing import (
    NoAdapter,
    docker_adapter,
    heal_context,
    make_alert,
    postgres_adapter,
    run_handler,
)
from tests.support.servers.containers import ContainerFactory
from tests.support.servers.postgres import Sessions, scratch_database, server_dsn


class NoteParams(HandlerParams):
    target: str


class Note:
    """Records one entry with record_soon in check and one with record in act."""

    name: ClassVar[str] = "test.note"
    Params: ClassVar[type[HandlerParams]] = NoteParams
    requires: ClassVar[frozenset[str]] = frozenset()

    async def check(self, ctx: HealContext, params: NoteParams) -> CheckResult:
        ctx.record_soon("seen", {"target": params.target})
        return CheckResult(targets=[Target(kind="test", name=params.target)], evidence={"n": 1})

    async def act(self, ctx: HealContext, params: NoteParams, check: CheckResult) -> ActResult:
        await ctx.record("done", {"alert": ctx.alert.name if ctx.alert else None})
        return ActResult(summary=f"noted {params.target}")


def test_make_alert_fills_what_the_engine_would() -> None:
    """A firing alert, its name from ``alertname``, a fingerprint that depends on the
    labels only, and the given annotations and status."""
    a = make_alert({"alertname": "DiskFull", "host": "a"}, {"summary": "full"})
    b = make_alert({"host": "a", "alertname": "DiskFull"}, status="resolved")
    assert (a.name, a.status, dict(a.annotations)) == ("DiskFull", "firing", {"summary": "full"})
    assert a.fingerprint == b.fingerprint != make_alert({"alertname": "Other"}).fingerprint
    assert b.status == "resolved" and a.starts_at.tzinfo is not None


async def test_run_handler_runs_check_then_act_and_keeps_the_timeline() -> None:
    """Raw params are validated through the handler's Params; the timeline holds the
    handler's entries (record_soon ones included), each phase's before the engine's
    entry for that phase, as in a journaled timeline."""
    ctx = heal_context(make_alert({"alertname": "Poke"}))
    run = await run_handler(Note, ctx, {"target": "x"})
    assert isinstance(run.params, NoteParams) and run.act == ActResult(summary="noted x")
    assert ctx.recorder.kinds() == ["seen", "check", "done", "act"]
    assert ctx.recorder.of("check") == [
        {"act": True, "reason": "", "evidence": {"n": 1}, "targets": ["test:x"]}
    ]
    assert ctx.recorder.of("done") == [{"alert": "Poke"}]


async def test_a_dry_run_stops_after_check() -> None:
    """``dry_run=True``: check runs, act does not, the engine's dry_run entry is recorded."""
    ctx = heal_context(dry_run=True)
    run = await run_handler(Note(), ctx, {"target": "x"})
    assert run.act is None
    assert ctx.recorder.kinds() == ["seen", "check", "dry_run"]


async def test_bad_params_and_a_broken_handler_are_refused() -> None:
    """Params that do not validate raise pydantic's error; a handler breaking the
    contract raises PluginValidationError before anything runs."""
    with pytest.raises(ValidationError):
        await run_handler(Note, heal_context(), {"target": "x", "extra": 1})

    class Broken(Note):
        async def check(self, ctx: HealContext, params: RestartParams) -> CheckResult:  # type: ignore[override]
            return CheckResult(targets=[])

    ctx = heal_context()
    with pytest.raises(PluginValidationError, match="RestartParams"):
        await run_handler(Broken, ctx, {"target": "x"})
    assert ctx.recorder.entries == []


async def test_an_absent_adapter_fails_loudly_naming_it() -> None:
    """A handler touching Docker or PostgreSQL without the test giving it raises
    NoAdapter saying which call and how to give one."""
    with pytest.raises(NoAdapter, match=r"ctx\.docker\.\w+, .*heal_context\(docker="):
        await run_handler(DockerRestart, heal_context(), {"containers": ["web"]})
    with pytest.raises(NoAdapter, match=r"ctx\.postgres\.sessions.*postgres_adapter\(dsn\)"):
        await run_handler(TerminateIdle, heal_context(), {"database": "app"})


def test_the_kit_imports_nothing_from_the_test_suite() -> None:
    """healer.testing ships with healer: it must not need healer's tests/."""
    tree = ast.parse(Path(healer.testing.__file__).read_text(encoding="utf-8"))
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in modules if m.split(".")[0] == "tests"}


@pytest.mark.docker
async def test_docker_restart_through_the_kit_on_a_real_engine(
    containers: ContainerFactory,
) -> None:
    """docker.restart run with the kit and the real Docker adapter restarts a real
    container: a new StartedAt, the handler's ``restarted`` entry, a "2s" stop timeout."""
    box = containers.run(
        ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.2; done"],
        name=f"healer-test-kit-{uuid.uuid4().hex[:8]}",
    )
    box.reload()
    before = box.attrs["State"]["StartedAt"]
    docker = docker_adapter()
    try:
        ctx = heal_context(docker=docker)
        run = await run_handler(
            DockerRestart, ctx, {"containers": [box.name], "stop_timeout": "2s"}
        )
    finally:
        await docker.aclose()
    assert run.act is not None and run.act.summary == f"restarted {box.name}"
    assert ctx.recorder.kinds() == ["check", "restarted", "act"]
    box.reload()
    assert box.attrs["State"]["StartedAt"] != before


async def _gone(dsn: str, pid: int) -> bool:
    """Poll (bounded) until ``pid`` has left pg_stat_activity."""
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not await conn.fetchval("SELECT 1 FROM pg_stat_activity WHERE pid = $1", pid):
                return True
            await asyncio.sleep(0.05)
        return False
    finally:
        await conn.close()


@pytest.mark.postgres
async def test_postgres_terminate_idle_through_the_kit_on_a_real_database() -> None:
    """postgres.terminate_idle run with a PostgresAdapter the kit builds for a DSN
    terminates a real idle session (and only the one its params name); the context
    takes the app-wide adapter and gives the handler a per-heal view."""
    async with scratch_database(server_dsn()) as dsn, Sessions(dsn) as sessions:
        idle = await sessions.open(application_name="kit-idle")
        bystander = await sessions.open(application_name="kit-bystander")
        pid = idle.get_server_pid()
        pg = postgres_adapter(dsn, name="app", allow_superusers=True)
        try:
            ctx = heal_context(postgres=pg)
            assert isinstance(ctx.postgres, HealPostgres)
            params: dict[str, Any] = {
                "database": "app",
                "datname": urlsplit(dsn).path.lstrip("/"),
                "min_idle": "0s",
                "application_names": ["kit-idle"],
            }
            run = await run_handler(TerminateIdle, ctx, params)
        finally:
            await pg.aclose()
        assert run.act is not None
        assert [t["pid"] for t in run.act.details["terminated"]] == [pid]
        assert await _gone(dsn, pid)
        assert await bystander.fetchval("SELECT 1") == 1
