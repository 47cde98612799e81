"""The journal stays usable after a write fails (the disk-full case itself, on a real full
filesystem, is in tests/integration/test_journal_and_postgres_faults.py)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from healer.api import Alert
from healer.errors import JournalUnavailable
from healer.store import HealPlan, SqliteStore


def _alert() -> Alert:
    return Alert(
        fingerprint="feedfacefeedface",
        status="firing",
        labels={"alertname": "Poke", "target": "t1"},
        annotations={},
        starts_at=datetime(2026, 11, 23, 8, 0, tzinfo=UTC),
    )


async def test_a_failed_commit_does_not_wedge_the_journal(tmp_path: Path) -> None:
    """SQLite keeps a transaction open when its COMMIT fails; without a rollback every
    later BEGIN fails ("cannot start a transaction within a transaction") and healer
    would answer 503 until restarted. A COMMIT made to fail for real (a deferred foreign
    key) raises JournalUnavailable, and the next write succeeds."""
    journal = await SqliteStore.open(tmp_path / "journal.db")
    try:

        def schema(db: sqlite3.Connection) -> None:
            db.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
            db.execute(
                "CREATE TABLE child (p INTEGER REFERENCES parent (id)"
                " DEFERRABLE INITIALLY DEFERRED)"
            )

        await journal.writer.call(lambda: journal.writer.write(schema))
        await journal.writer.call(lambda: journal.writer.conn().execute("PRAGMA foreign_keys=ON"))
        with pytest.raises(JournalUnavailable, match="FOREIGN KEY"):
            await journal.writer.call(
                lambda: journal.writer.write(lambda db: db.execute("INSERT INTO child VALUES (42)"))
            )

        await journal.ping()
        [disposition] = await journal.ingest(
            [_alert()], lambda _: HealPlan("poke", "test.noop", {}, {}, False)
        )
    finally:
        await journal.close()
    assert disposition.status == "started"


async def test_a_closed_journal_stays_closed(tmp_path: Path) -> None:
    """Reopening after a failure never resurrects a journal that was closed on purpose."""
    journal = await SqliteStore.open(tmp_path / "journal.db")
    await journal.close()
    with pytest.raises(JournalUnavailable, match="closed"):
        journal.writer.conn()
