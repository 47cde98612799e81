"""Checkpoints off the commit path (healer/store/sqlite/checkpoint.py): the journal's
committed WAL pages reach the database file through the checkpoint thread, not inside
a commit, and that thread never recreates a journal deleted while healer runs. Real
SQLite files; nothing asserts how long anything took (waits are bounded polls)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from healer.store import SqliteStore
from healer.store.sqlite.checkpoint import WRITER_LIMIT, Checkpointer


async def _until(check: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.05)
    return check()


async def test_committed_pages_reach_the_database_file_through_the_checkpoint_thread(
    tmp_path: Path,
) -> None:
    """The writer's own checkpoint bound is far above what these posts write, yet their
    bodies reach the database file: the checkpoint thread copied them, after the
    commits, and every row stays readable."""
    path = tmp_path / "journal.db"
    journal = await SqliteStore.open(path)
    try:
        bound = await journal.writer.read(
            lambda db: db.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        )
        start = path.stat().st_size
        body = '{"alerts": [], "padding": "' + "x" * 20_000 + '"}'
        for i in range(20):
            await journal.writer.transaction(
                lambda db, i=i: db.execute(
                    "INSERT INTO deliveries (received_at, body) VALUES (?, ?)", (i, body)
                )
            )
        grew = await _until(lambda: path.stat().st_size >= start + 20 * 20_000)
        kept = await journal.writer.read(
            lambda db: db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0]
        )
    finally:
        await journal.close()
    assert bound == WRITER_LIMIT
    assert WRITER_LIMIT > 20 * 20_000 // 4096  # the writer alone would not have copied them
    assert grew, (start, path.stat().st_size)
    assert kept == 20
    assert not Path(f"{path}-wal").exists()  # the writer's close was the last one


async def test_the_checkpoint_thread_never_recreates_a_deleted_journal(tmp_path: Path) -> None:
    """A journal removed from under a running checkpoint thread stays removed: the thread
    opens the file read-write only, fails (logged once), and creates nothing."""
    path = tmp_path / "journal.db"
    sqlite3.connect(path).execute("PRAGMA journal_mode=WAL").close()
    checkpointer = Checkpointer(path, delay=0.01)
    checkpointer.start()
    try:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        for _ in range(5):
            checkpointer.nudge()
            await asyncio.sleep(0.05)
    finally:
        checkpointer.stop()
    assert not path.exists()
