"""``healer journal copy``: a single-host SQLite journal's whole history (deliveries,
alerts, heals, events, safety state, follow-ups) into an EMPTY PostgreSQL store, in one
transaction: either all of it is there afterwards, or nothing is."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from healer.errors import JournalUnavailable
from healer.store.postgres import schema
from healer.store.postgres.pool import Conn, Pool, where
from healer.store.postgres.store import PostgresOptions
from healer.store.sqlite.store import SqliteStore


class TargetNotEmpty(JournalUnavailable):
    """The PostgreSQL store already holds a history: a copy would mix two."""


def _read(source: Path) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    """Every copied table's columns and rows, read-only."""
    db = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        out = {}
        for table in schema.TABLES:
            # Table and column names from schema.TABLES and SQLite's own catalogue only.
            columns = [r[0] for r in db.execute("SELECT name FROM pragma_table_info(?)", (table,))]
            rows = db.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall()
            out[table] = (columns, rows)
        return out
    finally:
        db.close()


async def copy_sqlite(source: Path, options: PostgresOptions) -> dict[str, int]:
    """Copy ``source`` into the (empty) store; rows copied per table. The source is
    checked and brought to the current SQLite schema first, as ``healer serve`` would."""
    await asyncio.to_thread(SqliteStore.check_can_open, source)
    tables = await asyncio.to_thread(_read, source)
    pool = await Pool.connect(
        options.dsn,
        pool_size=1,
        connect_timeout=options.connect_timeout,
        statement_timeout=max(options.statement_timeout, 600.0),
    )

    async def copy(db: Conn) -> dict[str, int]:
        await schema.migrate(db, options.dsn)
        for table in schema.TABLES:
            if await db.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table})"):
                raise TargetNotEmpty(
                    f"{where(options.dsn)}: refusing to copy: table"
                    f" {table} is not empty (copy only into an empty store)"
                )
        for table, (columns, rows) in tables.items():
            if rows:
                await db.copy_records_to_table(table, records=rows, columns=columns)
        await db.execute(
            "SELECT setval(pg_get_serial_sequence('deliveries', 'id'),"
            " GREATEST((SELECT MAX(id) FROM deliveries), 1))"
        )
        return {table: len(rows) for table, (_, rows) in tables.items()}

    try:
        return await pool.transaction(copy)
    finally:
        await pool.close()
