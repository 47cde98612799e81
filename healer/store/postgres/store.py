"""PostgresStore: the store contract (:class:`healer.store.contract.Store`) on a
PostgreSQL database shared by any number of healer processes, composed of the pool
(:mod:`healer.store.postgres.pool`: errors, retries, queued writes) and one module per
concern, each owning its tables: alerts, heals, gates (their state), followups. The schema is
versioned (:mod:`healer.store.postgres.schema`).

Durable before answered: every method returns (every ``*_soon`` future is done) only
after its COMMIT was acknowledged, with ``synchronous_commit`` as the server has it.
Unreachable server, broken connection: JournalUnavailable naming the store (DSN password
redacted); the pool reconnects by itself once the server is back.

Leases on PostgreSQL are by expiry only (:mod:`healer.store.postgres.heals`): unlike
SQLite, there is no "is its holder open in this process" rule, since the holders are other
processes, so a restarted replica (same id, new token) waits for its old heals' leases
to expire (at most ``lease_ttl``) before it takes them over, as any replica would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from healer.redact import redact_dsn
from healer.store import types as st
from healer.store.base import ModuleStore, Work
from healer.store.postgres import alerts, approvals, followups, gates, heals, retention, schema
from healer.store.postgres.pool import Conn, Pool
from healer.store.retention import JournalStats


@dataclass(frozen=True, slots=True)
class PostgresOptions:
    """How to connect (``journal:`` in the config): the DSN (with its password, never
    logged) and the pool's limits, durations in seconds."""

    dsn: str
    pool_size: int = 4
    connect_timeout: float = 5.0
    statement_timeout: float = 30.0

    def __repr__(self) -> str:
        return f"PostgresOptions({redact_dsn(self.dsn)!r}, pool_size={self.pool_size})"

    @property
    def name(self) -> str:
        """The store as it is named in messages and logs (password redacted)."""
        return redact_dsn(self.dsn)


class PostgresStore(ModuleStore):
    _alerts = alerts
    _heals = heals
    _gates = gates
    _followups = followups
    _approvals = approvals
    _retention = retention

    def __init__(
        self, pool: Pool, options: PostgresOptions, replica: st.Replica | None = None
    ) -> None:
        super().__init__()
        self.pool = pool
        self.options = options
        self.replica = replica if replica is not None else st.Replica()

    # ---- lifecycle ---------------------------------------------------------------------

    @classmethod
    async def open(
        cls, options: PostgresOptions, replica: st.Replica | None = None
    ) -> PostgresStore:
        """Connect, refuse a newer schema, create or migrate an older (or empty) one.
        ``replica``: who writes (default: this host and pid, 15 s leases)."""
        pool = await Pool.connect(
            options.dsn,
            pool_size=options.pool_size,
            connect_timeout=options.connect_timeout,
            statement_timeout=options.statement_timeout,
        )
        try:
            await pool.transaction(lambda db: schema.migrate(db, options.dsn))
        except BaseException:
            await pool.close()
            raise
        return cls(pool, options, replica)

    @classmethod
    async def migrate(cls, options: PostgresOptions) -> tuple[int, int]:
        """Apply pending migrations; the schema version (before, after)."""
        pool = await Pool.connect(
            options.dsn,
            pool_size=1,
            connect_timeout=options.connect_timeout,
            statement_timeout=options.statement_timeout,
        )
        try:
            return await pool.transaction(lambda db: schema.migrate(db, options.dsn))
        finally:
            await pool.close()

    @classmethod
    def check_can_open(cls, options: PostgresOptions) -> None:
        """Open (creating or migrating the schema) and close once, synchronously:
        ``healer serve`` does this before listening. Raises JournalUnavailable."""

        async def once() -> None:
            await (await cls.open(options)).close()

        asyncio.run(once())

    async def close(self) -> None:
        await self.pool.close()

    async def ping(self) -> None:
        now = time.time()
        await self.pool.transaction(
            lambda db: db.execute(
                "INSERT INTO probe (id, at) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET"
                " at = excluded.at",
                now,
            )
        )

    # ---- runners and what differs --------------------------------------------------

    def _read(self, work: Work) -> Awaitable[Any]:
        return self.pool.read(work)

    def _write(self, work: Work) -> Awaitable[Any]:
        return self.pool.transaction(work)

    def _submit(self, work: Work) -> asyncio.Future[Any]:
        return self.pool.submit(work)

    def event_soon(
        self, heal_id: str, phase: str, kind: str, data: dict[str, Any], *, fenced: bool = False
    ) -> asyncio.Future[None]:
        now, me = time.time(), self.replica

        async def write(db: Conn) -> None:
            if fenced:
                await heals.fence(db, heal_id, me)
            await heals.event(db, heal_id, phase, kind, data, now, me)

        return self.pool.submit(write)

    async def journal_stats(self) -> JournalStats:
        rows, oldest, size = await self.pool.read(retention.stats)
        return JournalStats(self.options.name, rows, oldest, size, None)
