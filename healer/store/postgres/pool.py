"""The PostgreSQL store's connections: an asyncpg pool, every failure to reach the server
as JournalUnavailable (DSN password redacted), transactions retried on a deadlock or a
serialization failure, and the ordered queue behind the ``*_soon`` writes.

Durability: a transaction returns only after its COMMIT was acknowledged by the server,
with ``synchronous_commit`` as the server has it (``on`` by default: flushed to the WAL;
a server set to ``off`` may lose the last commits in its own crash, a choice of its
operator).

The pool reconnects by itself: a connection broken by a server restart is discarded when
released, and the next acquire opens a fresh one (failing, while the server is down, with
JournalUnavailable). The first failure also expires every other pooled connection (all
stale after a restart), and the work that met it runs once more on a fresh connection
when that cannot do it twice: a read, or a transaction that failed at its BEGIN. So once
the server is back, no read fails on a connection left from before the outage.

Queued writes (``submit``): kept in order, run by one task, each batch in one transaction;
one failing write (a LeaseLost among them) does not undo the others: the batch is then
run once more with one savepoint per write (savepoints on every batch cost two round
trips a write, for a failure that seldom comes); a direct
transaction (:meth:`Pool.transaction`) first waits for every write queued before it, so
this process's writes reach the server in the order they were made.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import asyncpg
import structlog

from healer.errors import JournalUnavailable, LeaseLost
from healer.redact import redact_dsn

T = TypeVar("T")
Conn: TypeAlias = asyncpg.Connection
log = structlog.get_logger("healer.journal")

# What a broken or unreachable server looks like to asyncpg.
_UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.OperatorInterventionError,
    asyncpg.InsufficientResourcesError,
)
# Retried (the whole transaction): what concurrent writers of several processes may meet.
_RETRIED = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
_TRIES = 5
# What a queued write may fail with by itself (the others of its batch still commit).
_WORK_ERRORS = (asyncpg.PostgresError, ValueError, LeaseLost)


def lock_key(*parts: str) -> int:
    """A stable signed 64-bit advisory-lock key for these parts (the same in every process)."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def lock(conn: Conn, *keys: tuple[str, ...]) -> None:
    """Take transaction-level advisory locks on these keys, in one sorted order (so that
    two transactions locking overlapping keys never deadlock)."""
    ordered = sorted({lock_key(*k) for k in keys})
    if ordered:
        await conn.execute(
            "SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[])"
            " WITH ORDINALITY AS u(k, n) ORDER BY n",
            ordered,
        )


async def lock_shared(conn: Conn, key: tuple[str, ...]) -> None:
    """A shared transaction-level advisory lock (many holders; excludes :func:`lock`)."""
    await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", lock_key(*key))


def where(dsn: str) -> str:
    return f"journal {redact_dsn(dsn)}"


def unavailable(dsn: str, exc: BaseException) -> JournalUnavailable:
    why = str(exc) or type(exc).__name__
    return JournalUnavailable(redact_dsn(f"{where(dsn)}: unreachable: {why}"))


class Pool:
    """An asyncpg pool with the store's error mapping and write queue."""

    def __init__(self, pool: asyncpg.Pool, dsn: str) -> None:
        self.pool = pool
        self.dsn = dsn
        self._queue: list[tuple[Callable[[Conn], Awaitable[Any]], asyncio.Future[Any]]] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        self._runner = asyncio.create_task(self._run(), name="healer-pg-writer")

    @classmethod
    async def connect(
        cls,
        dsn: str,
        *,
        pool_size: int = 4,
        connect_timeout: float = 5.0,
        statement_timeout: float = 30.0,
    ) -> Pool:
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=1,
                max_size=pool_size,
                timeout=connect_timeout,
                server_settings={
                    "application_name": "healer",
                    "statement_timeout": str(int(statement_timeout * 1000)),
                },
            )
        except _UNREACHABLE as exc:
            raise unavailable(dsn, exc) from None
        except asyncpg.PostgresError as exc:
            raise JournalUnavailable(redact_dsn(f"{where(dsn)}: cannot open: {exc}")) from None
        return cls(pool, dsn)

    async def close(self) -> None:
        await self.flush()
        self._closed = True
        self._runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._runner
        with contextlib.suppress(*_UNREACHABLE):
            await asyncio.wait_for(self.pool.close(), 10)

    # ---- direct work -------------------------------------------------------------------

    async def read(self, work: Callable[[Conn], Awaitable[T]]) -> T:
        """Run ``work`` on a pooled connection, outside any explicit transaction."""
        return await self._attempt(work, transaction=False)

    async def transaction(self, work: Callable[[Conn], Awaitable[T]]) -> T:
        """Run ``work`` in one transaction; return once it committed. Deadlocks and
        serialization failures are retried (a bounded number of times)."""
        await self.flush()
        return await self._attempt(work, transaction=True)

    async def _attempt(self, work: Callable[[Conn], Awaitable[T]], *, transaction: bool) -> T:
        if self._closed:
            raise JournalUnavailable(f"{where(self.dsn)}: closed")
        stale_retried = False
        attempt = 0
        while True:
            began = False
            try:
                async with self.pool.acquire() as conn:
                    if not transaction:
                        return await work(conn)
                    async with conn.transaction():
                        began = True
                        return await work(conn)
            except _RETRIED:
                attempt += 1
                if attempt == _TRIES:
                    raise
                await asyncio.sleep(0.01 * attempt)
            except _UNREACHABLE as exc:
                # The server went away, maybe only for a restart: every pooled connection
                # is stale now, not just this one; replace them all at their next use.
                with contextlib.suppress(*_UNREACHABLE):
                    await self.pool.expire_connections()
                # Once, on a fresh connection: a read, or a transaction that had not begun
                # (a connection found dead at BEGIN wrote nothing). A transaction that had
                # begun may have committed: never run twice.
                if stale_retried or (transaction and began):
                    raise unavailable(self.dsn, exc) from None
                stale_retried = True

    # ---- queued writes -----------------------------------------------------------------

    def submit(self, work: Callable[[Conn], Awaitable[Any]]) -> asyncio.Future[None]:
        """Queue ``work``; the future is done once it committed (or failed)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._closed:
            future.set_exception(JournalUnavailable(f"{where(self.dsn)}: closed"))
            return future
        self._queue.append((work, future))
        self._idle.clear()
        self._wake.set()
        return future

    async def flush(self) -> None:
        """Wait until every write queued so far is done."""
        await self._idle.wait()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue, []
                await self._write(batch)
            self._idle.set()

    async def _write(
        self, batch: list[tuple[Callable[[Conn], Awaitable[Any]], asyncio.Future[Any]]]
    ) -> None:
        results: list[BaseException | None] = []

        async def together(conn: Conn) -> None:
            results.clear()
            for work, _ in batch:
                await work(conn)
                results.append(None)

        async def isolated(conn: Conn) -> None:
            results.clear()
            for work, _ in batch:
                try:
                    async with conn.transaction():  # a savepoint inside the batch
                        await work(conn)
                    results.append(None)
                except _WORK_ERRORS as exc:
                    if isinstance(exc, _RETRIED + _UNREACHABLE):
                        raise
                    results.append(exc)

        try:
            # Savepoints cost two round trips a write, and writes seldom fail: the batch
            # runs without them, and only if one write fails (the transaction is then
            # rolled back whole) once more with one savepoint per write. A lone write
            # needs none: its failure is its own.
            try:
                await self._attempt(together, transaction=True)
            except _WORK_ERRORS as exc:
                if len(batch) == 1 or isinstance(exc, _RETRIED + _UNREACHABLE):
                    raise
                await self._attempt(isolated, transaction=True)
        except BaseException as exc:  # handed to every waiter
            failure = exc if isinstance(exc, Exception) else JournalUnavailable(str(exc))
            for _, future in batch:
                if not future.done():
                    future.set_exception(failure)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), error in zip(batch, results, strict=True):
            if future.done():
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)
