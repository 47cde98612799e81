"""Real PostgreSQL for tests: the server from ``HEALER_TEST_PG_DSN`` (default
127.0.0.1:5432, user postgres, trust auth), a fresh database per test, and real
sessions that hold real locks.

    dsn = server_dsn()                           # skips locally / fails under CI if none
    async with scratch_database(dsn) as db_dsn:  # CREATE DATABASE ... / DROP ... WITH (FORCE)
        async with Sessions(db_dsn) as s:
            a = await s.open(application_name="holder")
            await a.execute("BEGIN")                 # one statement per execute()
            await a.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
            waiter = s.background(await s.open(), "SELECT * FROM t")  # blocks on a's lock
    async with scratch_role("LOGIN") as user:    # a cluster-wide role, dropped on exit
        dsn_as_user = with_user(server_dsn(), user)
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from tests.support.env import require_service

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def server_dsn() -> str:
    return os.environ.get("HEALER_TEST_PG_DSN") or DEFAULT_DSN


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


async def check_server(dsn: str) -> None:
    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        require_service("PostgreSQL", f"{dsn}: {type(exc).__name__}: {exc}")
    await conn.close()


def with_user(dsn: str, user: str) -> str:
    """``dsn`` connecting as ``user`` instead (no password: the test server trusts)."""
    parts = urlsplit(dsn)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


@asynccontextmanager
async def scratch_role(
    options: str = "LOGIN", *, dsn: str | None = None, prefix: str = "healer_test"
) -> AsyncIterator[str]:
    """A new role, ``CREATE ROLE <unique name> <options>``; on exit, even after a
    failure, its sessions are terminated and it is dropped.

    Roles are cluster-wide, hence the unique name. Enter it *before* any
    ``scratch_database`` where it gets privileges, so that database is dropped first
    and ``DROP ROLE`` finds nothing depending on the role."""
    dsn = dsn or server_dsn()
    await check_server(dsn)
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    await _as_admin(dsn, (f'CREATE ROLE "{name}" {options}',))
    try:
        yield name
    finally:
        await _as_admin(
            dsn,
            ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", name),
            (f'DROP ROLE IF EXISTS "{name}"',),
        )


async def _as_admin(dsn: str, *statements: tuple[Any, ...]) -> None:
    """Run each ``(sql, *args)`` on one short-lived connection to ``dsn``."""
    admin = await asyncpg.connect(dsn, timeout=5)
    try:
        for sql, *args in statements:
            await admin.execute(sql, *args)
    finally:
        await admin.close()


@asynccontextmanager
async def scratch_database(
    dsn: str | None = None, *, prefix: str = "healer_test"
) -> AsyncIterator[str]:
    """A new, empty database; dropped (with its sessions) on exit, even after a failure."""
    dsn = dsn or server_dsn()
    await check_server(dsn)
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    await _as_admin(dsn, (f'CREATE DATABASE "{name}"',))
    try:
        yield with_database(dsn, name)
    finally:
        await _as_admin(dsn, (f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',))


class Sessions:
    """Real client sessions for a test; every one is closed (and its backend
    terminated if it hangs) on exit."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conns: list[asyncpg.Connection] = []
        self._tasks: list[asyncio.Task[Any]] = []

    async def __aenter__(self) -> Sessions:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for conn in self._conns:
            if not conn.is_closed():
                conn.terminate()

    async def open(
        self,
        *,
        application_name: str = "healer-test",
        user: str | None = None,
        dsn: str | None = None,
    ) -> asyncpg.Connection:
        conn = await asyncpg.connect(
            dsn or self.dsn,
            user=user,
            timeout=5,
            server_settings={"application_name": application_name},
        )
        self._conns.append(conn)
        return conn

    def background(self, conn: asyncpg.Connection, sql: str, *args: Any) -> asyncio.Task[Any]:
        """Run ``sql`` without waiting (e.g. a statement that blocks on a lock)."""
        coro: Coroutine[Any, Any, Any] = conn.execute(sql, *args)
        task = asyncio.ensure_future(coro)
        self._tasks.append(task)
        return task


async def wait_blocked(conn: asyncpg.Connection, pid: int, *, timeout: float = 10) -> None:
    """Wait until backend ``pid`` is waiting on a lock (bounded)."""
    for _ in range(int(timeout / 0.05) + 1):
        blocked = await conn.fetchval("SELECT cardinality(pg_blocking_pids($1)) > 0", pid)
        if blocked:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"backend {pid} never blocked on a lock")
