"""Each store implementation on fresh, real storage, for the tests that hold every store
to the contract (tests/unit/test_store_contract.py, test_store_retention.py): the
``backend`` fixture (SQLite on a temp file, PostgreSQL on a scratch database of the test
server) and ``store``, a store opened on it. tests/unit/conftest.py registers both."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from healer.replica import Replica
from healer.store import SCHEMA_VERSION, SqliteStore, Store
from healer.store.postgres import schema as pg_schema
from healer.store.postgres.store import PostgresOptions, PostgresStore
from tests.support.servers.postgres import scratch_database


@dataclass
class Backend:
    """One store implementation on its own storage. ``open`` opens a store on it (again:
    a reopened store; given a replica, as that replica); ``from_newer_healer`` marks the
    (closed) storage as written by a healer with a newer schema; ``query`` runs one SQL
    read on the storage through a connection of its own (rows as tuples)."""

    open: Callable[..., Awaitable[Store]]
    from_newer_healer: Callable[[], Awaitable[None]]
    schema_version: int
    query: Callable[[str], Awaitable[list[tuple[Any, ...]]]]


def _sqlite(tmp_path: Path) -> Backend:
    path = tmp_path / "journal.db"

    async def open_store(replica: Replica | None = None) -> Store:
        return await SqliteStore.open(path, replica)

    async def from_newer_healer() -> None:
        with sqlite3.connect(path) as db:
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
        db.close()

    async def query(sql: str) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(path)) as db:
            return db.execute(sql).fetchall()

    return Backend(open_store, from_newer_healer, SCHEMA_VERSION, query)


def _postgres(dsn: str) -> Backend:
    async def open_store(replica: Replica | None = None) -> Store:
        return await PostgresStore.open(PostgresOptions(dsn), replica)

    async def from_newer_healer() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(
                "INSERT INTO healer_schema (version, applied_at) VALUES ($1, 0)",
                pg_schema.SCHEMA_VERSION + 1,
            )
        finally:
            await conn.close()

    async def query(sql: str) -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(dsn)
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()

    return Backend(open_store, from_newer_healer, pg_schema.SCHEMA_VERSION, query)


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    async with AsyncExitStack() as stack:
        if request.param == "sqlite":
            yield _sqlite(tmp_path)
        else:
            yield _postgres(await stack.enter_async_context(scratch_database()))


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    opened = await backend.open()
    try:
        yield opened
    finally:
        await opened.close()


async def alert_log_counts(store: SqliteStore) -> dict[str, int]:
    """What ``alert_log`` shows, by disposition: the stored rows and the unmatched alerts
    read from the kept bodies (those keep no row, so ``alert_counts`` leaves them out)."""

    def count(db: sqlite3.Connection) -> dict[str, int]:
        query = "SELECT disposition, COUNT(*) FROM alert_log GROUP BY disposition"
        return {r[0]: r[1] for r in db.execute(query)}

    return await store.writer.read(count)
