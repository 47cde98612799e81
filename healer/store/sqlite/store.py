"""SqliteStore: the store contract (:class:`healer.store.contract.Store`) on one SQLite
file, composed of the writer (one connection, group commit) and one module per concern,
each owning its tables: alerts, heals, gates (their state), followups. The schema is versioned
(:mod:`healer.store.sqlite.schema`).

Leases on SQLite: the file is used by one process (healer on one host), so a lease is
alive only while the store object that holds it is open *in this process* (``_LIVE``)
and its expiry has not passed. A new process therefore takes over, at its first
:meth:`SqliteStore.take_over`, every unfinished heal (a previous process, killed or
stopped, holds nothing): today's immediate resume at start. Two store objects on one
file in one process (the tests' two replicas) see each other's leases live until they
expire, as PostgreSQL replicas do.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from healer.store import types as st
from healer.store.base import ModuleStore, Work
from healer.store.retention import JournalStats
from healer.store.sqlite import alerts, approvals, check, followups, gates, heals, retention
from healer.store.sqlite.writer import SqliteWriter

# The lease tokens of the stores open in this process (see the module's docstring).
_LIVE: set[str] = set()


class SqliteStore(ModuleStore):
    _alerts = alerts
    _heals = heals
    _gates = gates
    _followups = followups
    _approvals = approvals
    _retention = retention

    def __init__(self, writer: SqliteWriter, replica: st.Replica | None = None) -> None:
        super().__init__()
        self.writer = writer
        self.path = writer.path
        self.replica = replica if replica is not None else st.Replica()
        _LIVE.add(self.replica.token)

    # ---- lifecycle ---------------------------------------------------------------------

    @classmethod
    async def open(cls, path: Path, replica: st.Replica | None = None) -> SqliteStore:
        """Open (or create) the journal, migrate it and check its pages
        (``PRAGMA quick_check``); any problem is a JournalUnavailable naming the file.
        ``replica``: who writes (default: this host and pid, 15 s leases)."""
        return cls(await SqliteWriter.open(path), replica)

    @staticmethod
    def check_can_open(path: Path) -> None:
        """Open, migrate and check the journal once, synchronously, then close it:
        ``healer serve`` does this before listening, so that a bad journal is one line
        naming the file and exit 1, not a traceback. Raises JournalUnavailable."""
        SqliteWriter.check_can_open(path)

    @staticmethod
    def schema_version(path: Path) -> int:
        """The file's schema version, read-only (0: no file, or an empty one)."""
        if not path.is_file():
            return 0
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return int(db.execute("PRAGMA user_version").fetchone()[0])
        finally:
            db.close()

    @staticmethod
    def check_file(path: Path) -> list[str]:
        """What is wrong with the journal file at ``path`` (empty: nothing), read-only."""
        return check.check_file(path)

    async def close(self) -> None:
        _LIVE.discard(self.replica.token)
        await self.writer.close()

    async def ping(self) -> None:
        now = time.time()
        await self.writer.transaction(
            lambda db: db.execute(
                "INSERT INTO probe (id, at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET"
                " at = excluded.at",
                (now,),
            )
        )

    # ---- runners and what differs --------------------------------------------------

    def _read(self, work: Work) -> Awaitable[Any]:
        return self.writer.read(work)

    def _write(self, work: Work) -> Awaitable[Any]:
        return self.writer.transaction(work)

    def _submit(self, work: Work) -> asyncio.Future[Any]:
        return self.writer.submit(work)

    def event_soon(
        self, heal_id: str, phase: str, kind: str, data: dict[str, Any], *, fenced: bool = False
    ) -> asyncio.Future[None]:
        now, me = time.time(), self.replica

        def write(db: sqlite3.Connection) -> None:
            if fenced:
                heals.fence(db, heal_id, me)
            heals.event(db, heal_id, phase, kind, data, now, me)

        return self.writer.submit(write)

    # A lease's holder is alive while its store is open in this process (the module's
    # docstring): both take the tokens of the stores open now.

    async def take_over(self, now: float, limit: int) -> list[st.TakenHeal]:
        return await self.writer.transaction(
            lambda db: heals.take_over(db, self.replica, set(_LIVE), now, limit)
        )

    async def lock_target(self, target: str, heal_id: str, now: float) -> bool:
        return await self.writer.transaction(
            lambda db: heals.lock_target(db, target, heal_id, self.replica, set(_LIVE), now)
        )

    async def journal_stats(self) -> JournalStats:
        rows, oldest, size, free = await self.writer.read(lambda db: retention.stats(db, self.path))
        return JournalStats(str(self.path), rows, oldest, size, free)
