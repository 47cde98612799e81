"""The PostgreSQL store's schema: versioned migrations, each concern module's own DDL.

``MIGRATIONS`` is an ordered list of ``(version, module, statements)``. The
``healer_schema`` table keeps one row per version applied (``version``, ``applied_at``,
epoch seconds); a store at version *v* runs, in one transaction and under a
transaction-level advisory lock (two replicas starting together migrate once), every step
of a version above *v*, then records the newest version. A store whose schema is newer
than this healer's is refused before anything is written.

Version 2 adds replicas (the SQLite schema's version 3): leases on heals, the replica on
each timeline entry, target locks (columns added in place: a version-1 store keeps its
rows; their ``replica`` is NULL and their heals unleased, taken over by the first
replica that asks). Version 3 adds the ``approvals`` table (``mode: approve``; the
SQLite schema's version 4). Version 4 adds the indexes retention walks
(:mod:`healer.store.postgres.retention`; the SQLite schema's version 5); building them
locks the alerts and deliveries tables against writes while it runs, once. Version 5
keeps rows only for alerts a rule matches (the SQLite schema's version 6): the
``alert_log`` view reads the others from the kept bodies.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from healer.errors import JournalUnavailable
from healer.store.postgres import alerts, approvals, followups, gates, heals, retention
from healer.store.postgres.pool import Conn, lock, where

VERSION_DDL = (
    """CREATE TABLE IF NOT EXISTS healer_schema (
    version    INTEGER PRIMARY KEY,
    applied_at DOUBLE PRECISION NOT NULL
)""",
)
PROBE_DDL = (
    """CREATE TABLE IF NOT EXISTS probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at DOUBLE PRECISION NOT NULL
)""",
)

MIGRATIONS: tuple[tuple[int, str, Sequence[str]], ...] = (
    (1, "alerts", alerts.DDL),
    (1, "heals", heals.DDL),
    (1, "safety", gates.DDL),
    (1, "followups", followups.DDL),
    (1, "probe", PROBE_DDL),
    (2, "heals", heals.LEASES_DDL),
    (3, "approvals", approvals.DDL),
    (4, "retention", retention.DDL),
    (5, "alerts", alerts.LOG_DDL),
)
SCHEMA_VERSION = max(version for version, _, _ in MIGRATIONS)
# The tables a copy fills, in order, and that must all be empty to receive one.
TABLES = (
    "deliveries",
    "alerts",
    "heals",
    "events",
    "safety_actions",
    "safety_circuits",
    "safety_pause",
    "follow_ups",
    "approvals",
)


async def current_version(db: Conn) -> int:
    """The store's schema version (0: no healer schema yet)."""
    if await db.fetchval("SELECT to_regclass('healer_schema')") is None:
        return 0
    return int(await db.fetchval("SELECT COALESCE(MAX(version), 0) FROM healer_schema"))


def refuse_newer(version: int, dsn: str) -> None:
    if version > SCHEMA_VERSION:
        raise JournalUnavailable(
            f"{where(dsn)}: cannot open: its schema {version} is newer than this"
            f" healer's ({SCHEMA_VERSION}): upgrade healer"
        )


async def migrate(db: Conn, dsn: str) -> tuple[int, int]:
    """Bring the store to SCHEMA_VERSION inside the caller's transaction; (before, after)."""
    await lock(db, ("schema",))
    before = await current_version(db)
    refuse_newer(before, dsn)
    if before == SCHEMA_VERSION:
        return before, before
    for statement in VERSION_DDL:
        await db.execute(statement)
    for step_version, _module, statements in MIGRATIONS:
        if step_version <= before:
            continue
        for statement in statements:
            await db.execute(statement)
    await db.execute(
        "INSERT INTO healer_schema (version, applied_at) VALUES ($1, $2)",
        SCHEMA_VERSION,
        time.time(),
    )
    return before, SCHEMA_VERSION
