"""The SQLite journal's write path (healer.store.sqlite.writer): group commit, per-write
savepoints, the delivery record and the schema migration from version 1 (real SQLite
files, no fakes)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from healer.api import Alert
from healer.store import SCHEMA_VERSION, HealPlan, SqliteStore
from healer.store.rows import RecentBodies
from healer.store.types import alert_key_time
from tests.support.inprocess.stores import alert_log_counts

STARTS = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
PLAN = HealPlan("poke", "test.noop", {}, {}, False)


def _alert(fp: str, status: str = "firing", **labels: str) -> Alert:
    return Alert(
        fingerprint=fp,
        status=status,
        labels={"alertname": "Poke", **labels},
        annotations={"summary": f"alert {fp}"},
        starts_at=STARTS,
    )


def _count_commits(journal: SqliteStore) -> list[int]:
    """Wrap the SQLite writer's own transaction runner to count transactions (not a fake:
    every call still runs against the real file)."""
    calls: list[int] = []
    original = journal.writer.write

    def counted(fn: Callable[[sqlite3.Connection], Any]) -> Any:
        calls.append(1)
        return original(fn)

    journal.writer.write = counted  # type: ignore[method-assign]
    return calls


async def _alert_log(journal: SqliteStore, columns: str) -> list[tuple[Any, ...]]:
    """These columns of every ``alert_log`` row, by fingerprint."""
    sql = f"SELECT {columns} FROM alert_log ORDER BY fingerprint"
    return await journal.writer.read(lambda db: [tuple(r) for r in db.execute(sql)])


async def test_concurrent_writes_share_transactions(tmp_path: Path) -> None:
    """50 webhook deliveries arriving together are stored in far fewer transactions
    (fsyncs) than 50, and every one of them is answered with its own dispositions."""
    journal = await SqliteStore.open(tmp_path / "journal.db")
    try:
        commits = _count_commits(journal)
        results = await asyncio.gather(
            *(journal.ingest([_alert(f"fp{i}")], lambda _: None) for i in range(50))
        )
        counts = await journal.alert_counts(), await alert_log_counts(journal)
    finally:
        await journal.close()
    assert [r[0].fingerprint for r in results] == [f"fp{i}" for i in range(50)]
    assert all(r[0].status == "ignored" for r in results)
    assert counts == ({}, {"ignored": 50})  # no rows: each in its delivery's body
    assert len(commits) < 50, len(commits)


async def test_a_failing_write_does_not_undo_its_batch_neighbours(tmp_path: Path) -> None:
    """Writes committed together are isolated by savepoints: the one that raises gets its
    own error and leaves nothing behind; the others are stored."""
    journal = await SqliteStore.open(tmp_path / "journal.db")
    try:

        def bad(db: sqlite3.Connection) -> None:
            db.execute("INSERT INTO probe (id, at) VALUES (1, 1.0)")
            raise ValueError("handler of this write failed")

        outcomes = await asyncio.gather(
            journal.ingest([_alert("before")], lambda _: None),
            journal.writer.transaction(bad),
            journal.ingest([_alert("after")], lambda _: None),
            return_exceptions=True,
        )
        probe = await journal.writer.read(
            lambda db: db.execute("SELECT COUNT(*) FROM probe").fetchone()[0]
        )
        counts = await alert_log_counts(journal)
    finally:
        await journal.close()
    assert isinstance(outcomes[1], ValueError)
    assert probe == 0
    assert counts == {"ignored": 2}


async def test_repeats_in_one_batch_count_once_and_keep_the_first_disposition(
    tmp_path: Path,
) -> None:
    """The same alert twice in one POST and again in a concurrent POST (an HA pair):
    one heal, one row, times_seen 3; the repeats are duplicates of that heal."""
    journal = await SqliteStore.open(tmp_path / "journal.db")
    try:
        a, b = await asyncio.gather(
            journal.ingest([_alert("x"), _alert("x")], lambda _: PLAN),
            journal.ingest([_alert("x")], lambda _: PLAN),
        )
        rows = await journal.writer.read(
            lambda db: db.execute("SELECT times_seen, disposition, heal_id FROM alerts").fetchall()
        )
    finally:
        await journal.close()
    # Which of the two POSTs is committed first is not known: one of the three receipts
    # started the heal (the first of ``a`` or ``b``'s only one), the others are its duplicates.
    dispositions = [*a, *b]
    assert sorted(d.status for d in dispositions) == ["duplicate", "duplicate", "started"]
    [heal_id] = {d.heal_id for d in dispositions}
    assert heal_id is not None
    assert a[0].status == "started" or b[0].status == "started"
    assert [tuple(r) for r in rows] == [(3, "started", heal_id)]


async def test_the_delivery_keeps_labels_and_the_heal_its_arrival_time(tmp_path: Path) -> None:
    """Labels are not re-encoded per alert: the POST body is kept once, and the alert_log
    view reads each alert's labels from it. The heal's `matched` event carries the time
    the request arrived (the start of the dispatch path)."""
    body = json.dumps(
        {
            "alerts": [
                {"labels": {"alertname": "Poke", "target": "a"}, "annotations": {}},
                {
                    "labels": {"alertname": "Poke", "target": "b; rm -rf /"},
                    "annotations": {"s": "x"},
                },
            ]
        }
    )
    journal = await SqliteStore.open(tmp_path / "journal.db")
    try:
        alerts = [_alert("a", target="a"), _alert("b", target="b; rm -rf /")]
        started = await journal.ingest(alerts, lambda _: PLAN, body=body, received_at=123.5)
        heal = await journal.get_heal(started[1].heal_id or "")
        rows = await _alert_log(journal, "fingerprint, labels, annotations")
    finally:
        await journal.close()
    assert heal is not None
    assert heal["timeline"][0]["kind"] == "matched"
    assert heal["timeline"][0]["data"]["received_at"] == 123.5
    assert [(r[0], json.loads(r[1])["target"], json.loads(r[2])) for r in rows] == [
        ("a", "a", {}),
        ("b", "b; rm -rf /", {"s": "x"}),
    ]


_V1_ALERTS = """
CREATE TABLE alerts (
    id INTEGER PRIMARY KEY, fingerprint TEXT NOT NULL, starts_at TEXT NOT NULL,
    status TEXT NOT NULL, alertname TEXT NOT NULL, labels TEXT NOT NULL,
    annotations TEXT NOT NULL, first_seen REAL NOT NULL, last_seen REAL NOT NULL,
    times_seen INTEGER NOT NULL DEFAULT 1, disposition TEXT NOT NULL, heal_id TEXT,
    UNIQUE (fingerprint, starts_at, status));
INSERT INTO alerts (fingerprint, starts_at, status, alertname, labels, annotations,
                    first_seen, last_seen, disposition, heal_id)
VALUES ('old1', '2026-11-23T08:00:00+00:00', 'firing', 'Poke', '{"alertname":"Poke"}', '{}',
        1.0, 1.0, 'started', 'h1');
"""


async def test_a_version_1_journal_is_migrated_and_remembers_its_alerts(tmp_path: Path) -> None:
    """A journal written by the previous schema opens: its alerts still count for
    exactly-once (a re-send is a duplicate, no second heal) and their labels stay
    readable in alerts_v1."""
    path = tmp_path / "journal.db"
    with sqlite3.connect(path) as db:
        db.executescript(_V1_ALERTS)
    journal = await SqliteStore.open(path)
    try:
        [again] = await journal.ingest([_alert("old1")], lambda _: PLAN)
        version = await journal.writer.read(lambda db: db.execute("PRAGMA user_version").fetchone())
        legacy = await journal.writer.read(
            lambda db: db.execute("SELECT labels FROM alerts_v1").fetchall()
        )
    finally:
        await journal.close()
    assert (again.status, again.heal_id) == ("duplicate", "h1")
    assert version[0] == SCHEMA_VERSION
    assert [r[0] for r in legacy] == ['{"alertname":"Poke"}']


async def test_rows_an_older_healer_kept_for_unmatched_alerts_are_listed_once(
    tmp_path: Path,
) -> None:
    """Before schema 6 an unmatched alert had a row of its own, pointing at its body:
    ``alert_log`` lists such an alert once (from its row, not again from the body), and
    a re-send of it is answered ignored like any unmatched alert."""
    journal = await SqliteStore.open(tmp_path / "journal.db")
    body = json.dumps({"alerts": [{"fingerprint": "old", "status": "firing", "labels": {}}]})

    def older_healer(db: sqlite3.Connection) -> None:
        delivery = db.execute(
            "INSERT INTO deliveries (received_at, body) VALUES (1.0, ?)", (body,)
        ).lastrowid
        db.execute(
            "INSERT INTO alerts (fingerprint, starts_at, status, alertname, delivery_id, idx,"
            " first_seen, last_seen, times_seen, disposition) VALUES"
            " ('old', ?, 'firing', 'Poke', ?, 0, 1.0, 1.0, 3, 'ignored')",
            (alert_key_time(STARTS), delivery),
        )

    try:
        await journal.writer.transaction(older_healer)
        [again] = await journal.ingest([_alert("old")], lambda _: None)
        log = await _alert_log(journal, "fingerprint, disposition, times_seen")
    finally:
        await journal.close()
    assert again.status == "ignored"
    assert log == [("old", "ignored", 3)]


async def test_a_journal_from_a_newer_healer_is_refused(tmp_path: Path) -> None:
    """Opening a journal whose schema is newer than this healer's fails loudly instead of
    writing rows the newer version would misread."""
    path = tmp_path / "journal.db"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(Exception, match="newer"):
        await SqliteStore.open(path)


def test_the_memory_of_kept_bodies_is_bounded() -> None:
    """Past its size the oldest kept bodies are forgotten (their next re-send keeps its
    body again), so a flood of distinct noise cannot grow healer's memory; a body that
    differs in any way is news."""
    recent = RecentBodies(size=3)
    bodies = [f'{{"alerts": [{{"fingerprint": "fp{i}"}}]}}' for i in range(5)]
    for body in bodies[:3]:
        recent.add(RecentBodies.key(body))
    assert all(recent.kept(RecentBodies.key(b)) for b in bodies[:3])
    assert not recent.kept(RecentBodies.key(bodies[0] + " "))
    for body in bodies[3:]:
        recent.add(RecentBodies.key(body))
    assert [recent.kept(RecentBodies.key(b)) for b in bodies] == [False, False, True, True, True]
