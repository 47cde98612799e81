"""The SQLite journal's one connection, on one dedicated thread: group commit,
savepoints, broken-file and corruption detection.

SQLite in WAL mode with ``synchronous=FULL``: when a write returns, what it wrote
survives a crash. One connection lives on one dedicated thread, so writes are
serialised without locks and the event loop never blocks on disk.

Group commit: writes that arrive while a transaction is being committed wait for it
and then go to disk together, in one transaction and one fsync, each in its own
savepoint (one write failing does not undo the others). An idle journal commits a
lone write at once; a busy one commits many per fsync. Nothing answers before its
own data is durable.

Broken files: each write batch (and so each readiness probe) checks that the database
and WAL files at ``path`` are still the ones opened; if one was deleted or replaced, or
SQLite reports corruption (SQLITE_CORRUPT, SQLITE_NOTADB) from any read or write, the
journal refuses everything until restart (JournalBroken, logged once): acknowledging
into a file the next start will not read would lose alerts and safety state.

Checkpoints run on a thread of their own (:mod:`healer.store.sqlite.checkpoint`), not
inside a commit.

Only :mod:`healer.store.sqlite` hands it ``sqlite3`` callbacks; everyone else goes
through the store contract (:mod:`healer.store.contract`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import structlog

from healer.errors import JournalBroken, JournalUnavailable
from healer.store.sqlite import schema
from healer.store.sqlite.checkpoint import WRITER_LIMIT, Checkpointer
from healer.store.sqlite.schema import check_hint

T = TypeVar("T")
log = structlog.get_logger("healer.journal")

# What sqlite3 reports for a damaged file (SQLITE_CORRUPT) or one that is not a
# database at all (SQLITE_NOTADB).
_CORRUPTION = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def is_corruption(exc: BaseException) -> bool:
    return (
        isinstance(exc, sqlite3.DatabaseError)
        and getattr(exc, "sqlite_errorcode", None) in _CORRUPTION
    )


def open_error(path: Path, exc: BaseException) -> str:
    """Why ``path`` cannot be used as a journal, in one line naming the file."""
    if path.is_dir():
        why = "is a directory, not a journal file"
    elif isinstance(exc, PermissionError) or (
        path.exists() and not os.access(path, os.R_OK | os.W_OK)
    ):
        why = f"permission denied (healer runs as uid {os.getuid()})"
    elif not path.exists() and path.parent.is_dir() and not os.access(path.parent, os.W_OK):
        why = f"cannot create it: permission denied on {path.parent}"
    elif is_corruption(exc):
        why = f"the file is corrupt or not a healer journal ({exc})"
    else:
        why = str(exc)
    return f"journal {path}: cannot open: {why}; {check_hint(path)}"


_Identity = tuple[int, int]


def _identity(path: Path | str) -> _Identity | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


class SqliteWriter:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="healer-journal")
        self._db: sqlite3.Connection | None = None
        self._closed = False
        # The files this journal was opened on (the database and its WAL): a write goes
        # only where the next start will read it.
        self._files: dict[str, _Identity] = {}
        self._broken: str | None = None  # why it is refused until restart; never cleared
        self._queued: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
        self._committer: asyncio.Task[None] | None = None
        self._checkpointer: Checkpointer | None = None

    @classmethod
    async def open(cls, path: Path) -> SqliteWriter:
        """Open (or create) the journal, migrate it and check its pages
        (``PRAGMA quick_check``); any problem is a JournalUnavailable naming the file."""
        writer = cls(path)
        try:
            await writer.call(writer._open)
        except BaseException:
            writer._pool.shutdown(wait=False)
            raise
        writer._checkpointer = Checkpointer(path)
        writer._checkpointer.start()
        return writer

    @classmethod
    def check_can_open(cls, path: Path) -> None:
        """Open, migrate and check the journal once, synchronously, then close it.
        Raises JournalUnavailable."""
        writer = cls(path)
        try:
            writer._open()
        finally:
            if writer._db is not None:
                writer._db.close()
            writer._pool.shutdown(wait=False)

    def _open(self) -> None:
        try:
            if self.path.is_dir():
                raise IsADirectoryError(str(self.path))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except (sqlite3.Error, OSError) as exc:
            raise JournalUnavailable(open_error(self.path, exc)) from exc
        try:
            db.row_factory = sqlite3.Row
            schema.refuse_unknown(db, self.path)
            schema.incremental_vacuum_mode(db, self.path)  # before WAL: a new file's mode
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=5000")
            db.execute(f"PRAGMA wal_autocheckpoint={WRITER_LIMIT}")  # a bound: see checkpoint
            schema.migrate(db)
            if not self._files:  # the first open: are all pages sound?
                problem = " ".join(db.execute("PRAGMA quick_check(1)").fetchone()[0].split())
                if problem != "ok":
                    raise JournalUnavailable(
                        f"journal {self.path}: cannot open: the file is corrupt ({problem});"
                        f" {check_hint(self.path)}"
                    )
            self._note_files()
        except (sqlite3.Error, OSError) as exc:
            db.close()
            raise JournalUnavailable(open_error(self.path, exc)) from exc
        except BaseException:
            db.close()
            raise
        self._db = db

    def _note_files(self) -> None:
        """Remember the files just opened; a reopen must find the same database file
        (its WAL may be new: closing the last connection deletes it)."""
        db_file = _identity(self.path)
        if db_file is None or self._files.get("db", db_file) != db_file:
            raise self._break("was deleted or replaced while healer ran")
        self._files["db"] = db_file
        wal = _identity(f"{self.path}-wal")
        if wal is not None:
            self._files["wal"] = wal
        else:
            self._files.pop("wal", None)

    def _check_files(self) -> None:
        """Cheap (two stat calls, once per write batch and per readiness probe): the
        database and WAL files at the journal's path are still the ones healer writes.
        After ``rm journal.db*``, a restore from backup or a moved directory, what
        healer wrote would be lost at the next start, so it stops acknowledging."""
        for kind, suffix in (("db", ""), ("wal", "-wal")):
            expected = self._files.get(kind)
            if expected is None:
                continue
            found = _identity(f"{self.path}{suffix}")
            if found != expected:
                what = "database" if kind == "db" else "write-ahead log"
                how = "was deleted" if found is None else "was replaced by another file"
                raise self._break(f"{what} file {self.path}{suffix} {how} while healer ran")

    def _break(self, why: str, then: str = "") -> JournalBroken:
        """Refuse every further read and write until restart, logging it once."""
        if self._broken is None:
            self._broken = f"journal {self.path}: {why}; refused until healer restarts{then}"
            log.error("journal broken", error=self._broken, journal=str(self.path))
        return JournalBroken(self._broken)

    def _storage_error(self, exc: sqlite3.Error) -> JournalUnavailable:
        """A storage error as JournalUnavailable naming the file; corruption breaks the
        journal for good (until restart)."""
        if is_corruption(exc):
            return self._break(f"corrupt ({exc})", f"; {check_hint(self.path)}")
        return JournalUnavailable(f"journal {self.path}: {exc}")

    async def close(self) -> None:
        if self._committer is not None:  # let queued writes reach the disk first
            await asyncio.wait([self._committer])
        if self._checkpointer is not None:
            await asyncio.to_thread(self._checkpointer.stop)

        def _close() -> None:
            self._closed = True
            if self._db is not None:
                self._db.close()
                self._db = None

        await self.call(_close)
        self._pool.shutdown(wait=True)

    async def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` on the connection's thread; a storage error names the file."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, partial(self._guarded, fn))

    def _guarded(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except sqlite3.Error as exc:  # a read (writes convert their own): name the file
            raise self._storage_error(exc) from exc

    def conn(self) -> sqlite3.Connection:
        """The connection (on its thread only); JournalUnavailable once closed or broken."""
        if self._closed:
            raise JournalUnavailable("journal is closed")
        if self._broken is not None:
            raise JournalBroken(self._broken)
        if self._db is None:  # dropped after a failure that left it unusable: reopen
            self._open()
        assert self._db is not None
        return self._db

    def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one IMMEDIATE transaction; any storage error -> JournalUnavailable.

        A failed write leaves the journal usable: once the disk has room again (or is
        writable again) the next call succeeds, without a restart.
        """
        db = self.conn()
        self._check_files()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(db)
                db.execute("COMMIT")
                if self._checkpointer is not None:
                    self._checkpointer.nudge()
            except BaseException:
                self._abandon(db)
                raise
            return result
        except sqlite3.Error as exc:
            raise self._storage_error(exc) from exc

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(db)`` on the journal's thread."""
        return await self.call(lambda: fn(self.conn()))

    async def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(db)`` as one write on the journal's thread: what it reads and writes is
        atomic against every other journal write, and durable when this returns.

        Writes queued meanwhile share one transaction (group commit), each in a
        savepoint: an exception from ``fn`` undoes ``fn``'s writes only and is raised
        here (``sqlite3.Error`` as JournalUnavailable); a failed COMMIT fails them all.
        """
        return await self.submit(fn)

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queue ``fn`` as a write now, in order with every other write; the future is
        done once it is durable (as :meth:`transaction`, for a caller that has other
        work to do meanwhile and awaits the future before depending on the write)."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queued.append((fn, future))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(
                self._commit_queued(), name="healer-journal-commit"
            )
        return future

    async def _commit_queued(self) -> None:
        while self._queued:
            batch, self._queued = self._queued, []
            try:
                outcomes = await self.call(
                    partial(self.write, partial(self._savepoints, [fn for fn, _ in batch]))
                )
            except BaseException as exc:  # the COMMIT (or BEGIN) failed: nothing was stored
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
                if future.done():  # its caller was cancelled; the write stands
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    def _savepoints(
        self, fns: list[Callable[[sqlite3.Connection], Any]], db: sqlite3.Connection
    ) -> list[tuple[bool, Any]]:
        return [self._savepoint(db, fn) for fn in fns]

    def _savepoint(
        self, db: sqlite3.Connection, fn: Callable[[sqlite3.Connection], Any]
    ) -> tuple[bool, Any]:
        db.execute("SAVEPOINT w")
        try:
            value = fn(db)
        except Exception as exc:
            # Undo this write alone. If even that fails, the transaction is unusable:
            # raising fails the whole batch, and write() rolls it back.
            db.execute("ROLLBACK TO w")
            db.execute("RELEASE w")
            if isinstance(exc, sqlite3.Error):
                exc = self._storage_error(exc)
            return False, exc
        db.execute("RELEASE w")
        return True, value

    def _abandon(self, db: sqlite3.Connection) -> None:
        """Undo a failed transaction. SQLite may keep it open after a failed COMMIT (disk
        full, I/O error), and every later BEGIN would then fail: roll back, and if even
        that fails, drop the connection so that the next call opens a fresh one."""
        if not db.in_transaction:
            return
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:
            self._db = None
            with contextlib.suppress(sqlite3.Error):
                db.close()
