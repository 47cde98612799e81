"""Checkpoints off the commit path: the journal's committed WAL pages are copied into
the database file by a thread and a connection of their own.

SQLite checkpoints by itself inside a COMMIT once the WAL holds ``wal_autocheckpoint``
pages (1,000 by default): that commit, and every write waiting behind it, then also
copies the WAL into the database and fsyncs it. Under a stream of webhook bodies that
was every few hundred posts, and the slowest commits. Here a thread runs
``PRAGMA wal_checkpoint(PASSIVE)`` a second after commits, at most once a second (it
never waits for a lock and never blocks the writer; SQLite's C code runs without the
GIL; each checkpoint fsyncs the database file, so not more often), and the writer keeps a
far higher ``wal_autocheckpoint`` (:data:`WRITER_LIMIT`) only as a bound, should this
thread fall behind or fail. Durability is unchanged: a commit is durable once its WAL
frames are fsynced, whoever copies them later.

The connection opens the file read-write but never creates it (``mode=rw``): a journal
deleted while healer runs is not recreated empty here (the writer refuses to go on).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path
from urllib.parse import quote

import structlog

log = structlog.get_logger("healer.journal")

# The writer's own wal_autocheckpoint (pages of 4 KiB): about 64 MiB of WAL.
WRITER_LIMIT = 16_384


class Checkpointer:
    """Checkpoints ``path``'s WAL on its own thread, ``delay`` seconds after a commit
    nudged it (commits meanwhile share the checkpoint)."""

    def __init__(self, path: Path, delay: float = 1.0) -> None:
        self._uri = f"file:{quote(str(path))}?mode=rw"
        self._delay = delay
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._failed = False
        self._thread = threading.Thread(
            target=self._run, name="healer-journal-checkpoint", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def nudge(self) -> None:
        """A commit happened (called on the writer's thread; cheap)."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread and close its connection (before the writer's own close, so
        that the writer's connection is the last one and removes the WAL)."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        db: sqlite3.Connection | None = None
        try:
            while True:
                self._wake.wait()
                if self._stopping.wait(self._delay):
                    return
                self._wake.clear()
                db = self._checkpoint(db)
        finally:
            if db is not None:
                with contextlib.suppress(sqlite3.Error):
                    db.close()

    def _checkpoint(self, db: sqlite3.Connection | None) -> sqlite3.Connection | None:
        """One passive checkpoint; a failure (disk full, file gone) is logged once and
        leaves the work to the writer's bound until a checkpoint succeeds again."""
        try:
            if db is None:
                db = sqlite3.connect(
                    self._uri, uri=True, isolation_level=None, check_same_thread=False
                )
            db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            if not self._failed:
                log.warning("journal checkpoint failed; the writer checkpoints", error=str(exc))
            self._failed = True
            if db is not None:
                with contextlib.suppress(sqlite3.Error):
                    db.close()
            return None
        if self._failed:
            log.info("journal checkpoints work again")
            self._failed = False
        return db
