"""healer.postgres_adapter against a real server: the lock graph it reports, who it refuses
to signal, the per-heal termination cap, and that DSN passwords never leak."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta
from urllib.parse import urlsplit

import pytest

from healer.config import DatabaseConfig
from healer.errors import ActionFailed, TargetRefused
from healer.postgres_adapter import PostgresAdapter
from healer.redact import redact_dsn
from tests.support import Sessions, scratch_database, wait_blocked

pytestmark = pytest.mark.postgres


@pytest.fixture
async def db_dsn() -> AsyncIterator[str]:
    async with scratch_database() as dsn:
        yield dsn


def adapter(dsn: str, **cfg: object) -> PostgresAdapter:
    return PostgresAdapter(
        {"app": DatabaseConfig.model_validate({"dsn": dsn, **cfg})}, {"app": dsn}
    )


async def test_sessions_report_who_blocks_whom(db_dsn: str) -> None:
    """A holds a lock, B waits on A: B.blocked_by == (A,), A.blocking == (B,)."""
    pg = adapter(db_dsn)
    async with Sessions(db_dsn) as s:
        a = await s.open(application_name="holder")
        await a.execute("CREATE TABLE t (id int)")
        await a.execute("BEGIN")
        await a.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        b = await s.open(application_name="waiter")
        s.background(b, "SELECT * FROM t")
        await wait_blocked(a, b.get_server_pid())
        # This database's sessions: other tests' (other workers') share the server.
        datname = urlsplit(db_dsn).path.lstrip("/")
        by_pid = {x.pid: x for x in await pg.sessions("app", datname=datname)}
        holder, waiter = by_pid[a.get_server_pid()], by_pid[b.get_server_pid()]
        assert waiter.blocked_by == (holder.pid,)
        assert holder.blocking == (waiter.pid,)
        assert holder.state == "idle in transaction"
        assert waiter.evidence()["wait"] == "Lock:relation"
        assert all(x.application_name != "healer" for x in by_pid.values())
    await pg.aclose()


async def test_protected_sessions_are_never_signalled(db_dsn: str) -> None:
    """Superusers (the test user is one), protected apps and healer's own sessions are
    refused before any signal is sent; the session survives."""
    pg = adapter(db_dsn, protect={"application_names": ["pgbouncer"]})
    async with Sessions(db_dsn) as s:
        conn = await s.open(application_name="pgbouncer")
        me = next(x for x in await pg.sessions("app") if x.pid == conn.get_server_pid())
        assert pg.protection("app", me) is not None
        with pytest.raises(TargetRefused, match="protected"):
            await pg.terminate("app", me)
        assert await conn.fetchval("SELECT 1") == 1
    await pg.aclose()


async def test_signal_never_reaches_a_different_backend(db_dsn: str) -> None:
    """A session whose backend_start no longer matches (its pid was handed to a new
    backend) is not signalled: terminate returns False and the backend lives on."""
    pg = adapter(db_dsn, allow_superusers=True)
    async with Sessions(db_dsn) as s:
        conn = await s.open(application_name="victim")
        me = next(x for x in await pg.sessions("app") if x.pid == conn.get_server_pid())
        assert me.backend_start is not None
        stale = dataclasses.replace(me, backend_start=me.backend_start - timedelta(seconds=1))
        assert await pg.terminate("app", stale) is False
        assert await conn.fetchval("SELECT 1") == 1
    await pg.aclose()


async def test_termination_cap_per_heal(db_dsn: str) -> None:
    """max_terminations: 1 lets one heal terminate one session; a second is refused."""
    pg = adapter(db_dsn, allow_superusers=True, max_terminations=1)
    heal = pg.for_heal()
    async with Sessions(db_dsn) as s:
        c1, c2 = await s.open(application_name="a"), await s.open(application_name="b")
        pids = {c1.get_server_pid(), c2.get_server_pid()}
        targets = [x for x in await heal.sessions("app") if x.pid in pids]
        assert await heal.terminate("app", targets[0]) is True
        with pytest.raises(TargetRefused, match="cap"):
            await heal.terminate("app", targets[1])
    await pg.aclose()


async def test_unreachable_database_fails_with_redacted_error() -> None:
    """A dead server gives ActionFailed; the password in the DSN never shows."""
    dsn = "postgresql://u:s3cret@127.0.0.1:1/x"
    pg = PostgresAdapter({"x": DatabaseConfig(dsn_env="X", connect_timeout=1)}, {"x": dsn})
    with pytest.raises(ActionFailed) as err:
        await pg.ping("x")
    assert "s3cret" not in str(err.value)
    assert redact_dsn(dsn) == "postgresql://u:***@127.0.0.1:1/x"
    assert redact_dsn("host=h password='a b' user=u") == "host=h password=*** user=u"
    await pg.aclose()


async def test_wait_gone_sees_the_exit_and_names_who_stays(
    db_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a terminate, wait_gone returns [] once the backend has left pg_stat_activity;
    a backend that does not go (here: never signalled) is named once the looks run out."""
    pg = adapter(db_dsn, allow_superusers=True)
    async with Sessions(db_dsn) as s:
        doomed, stays = await s.open(application_name="doomed"), await s.open(application_name="x")
        # This database's sessions: other tests' (other workers') share the server.
        datname = urlsplit(db_dsn).path.lstrip("/")
        by_pid = {x.pid: x for x in await pg.sessions("app", datname=datname)}
        victim, other = by_pid[doomed.get_server_pid()], by_pid[stays.get_server_pid()]
        assert await pg.terminate("app", victim) is True
        assert await pg.wait_gone("app", [victim]) == []
        assert victim.pid not in {x.pid for x in await pg.sessions("app")}
        monkeypatch.setattr("healer.postgres_adapter.EXIT_POLL", (0.0, 0.01))
        assert await pg.wait_gone("app", [victim, other]) == [other.pid]
        assert await stays.fetchval("SELECT 1") == 1
    await pg.aclose()


async def test_pinned_block_runs_its_queries_on_one_connection(db_dsn: str) -> None:
    """Inside pinned(), fetches and probes share one connection, tasks started there
    included (they take turns; with a pool of one nothing waits for itself); a task from
    outside uses the pool, and gets the connection once the block ends."""
    pg = adapter(db_dsn, pool_size=1)
    backend = "SELECT pg_backend_pid() AS pid"

    async def outside() -> int:
        await started.wait()
        return int((await pg.fetch("app", backend))[0]["pid"])

    started = asyncio.Event()
    waiting = asyncio.create_task(outside())
    async with pg.pinned("app"):
        first = (await pg.fetch("app", backend))[0]["pid"]
        started.set()
        probed, *fetched = await asyncio.wait_for(
            asyncio.gather(
                pg.probe("app", backend), pg.fetch("app", backend), pg.fetch("app", backend)
            ),
            5,
        )
        assert {probed[0]["pid"], *(f[0]["pid"] for f in fetched)} == {first}
        await asyncio.sleep(0.2)
        assert not waiting.done()  # the pool's one connection is pinned
    assert await asyncio.wait_for(waiting, 5) == first  # back in the pool
    await pg.aclose()
