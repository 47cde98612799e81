"""Retention in SQLite: one bounded prune batch (a short write on the writer thread, so
ingest waits at most one batch), what a prune would remove (a read), the space given
back (incremental vacuum) and the journal's size. What is kept whatever its age is
:mod:`healer.store.retention`'s docstring; the predicates below are that list.

Each candidate query walks an index in time order (``alerts_by_first_seen``,
``deliveries_by_time``, ``heals_by_time``) and stops at ``limit`` rows or the cutoff, so
a batch costs the rows it removes, not the journal's size.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from healer.store.retention import OLDEST_COLUMN, STATS_TABLES, Cutoffs, no_rows

# Version 5: the indexes the prune walks (appended to in time order, so cheap at ingest).
DDL = (
    "CREATE INDEX IF NOT EXISTS alerts_by_first_seen ON alerts (first_seen)",
    "CREATE INDEX IF NOT EXISTS alerts_by_delivery ON alerts (delivery_id)",
    "CREATE INDEX IF NOT EXISTS deliveries_by_time ON deliveries (received_at)",
)

# Fingerprints with a heal not done: their alert rows stay (one subquery, run once).
_OPEN = "SELECT fingerprint FROM heals WHERE phase != 'done' AND fingerprint IS NOT NULL"
# An alert row past the alerts window (alias a; arguments: the cutoff twice).
_ALERT_GONE = f"a.first_seen < ? AND a.last_seen < ? AND a.fingerprint NOT IN ({_OPEN})"


def _heal_gone(cut: Cutoffs) -> tuple[str, list[float]]:
    """SQL true of a heals row (alias h) that may go, and its arguments."""
    assert cut.heals is not None
    args: list[float] = [cut.heals]
    kept_alert = "1"  # alerts kept forever: any row pointing at the heal keeps it
    if cut.alerts is not None:
        kept_alert = f"NOT ({_ALERT_GONE})"
        args += [cut.alerts, cut.alerts]
    sql = (
        f"h.created_at < ? AND h.phase = 'done' AND (h.fingerprint IS NULL OR"
        f" (h.fingerprint NOT IN ({_OPEN}) AND NOT EXISTS (SELECT 1 FROM alerts a"
        f" WHERE a.fingerprint = h.fingerprint AND a.heal_id = h.id AND {kept_alert})))"
    )
    return sql, args


def _delivery_gone(cut: Cutoffs) -> tuple[str, list[float]]:
    assert cut.alerts is not None
    sql = (
        "d.received_at < ? AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.delivery_id = d.id"
        f" AND NOT ({_ALERT_GONE}))"
    )
    return sql, [cut.alerts, cut.alerts, cut.alerts]


_HEAL_TABLES = ("events", "approvals", "follow_ups", "target_locks")


def prune_batch(db: sqlite3.Connection, cut: Cutoffs, limit: int) -> dict[str, int]:
    """Remove up to ``limit`` alert rows, deliveries, heals (with their timelines,
    approvals, follow-ups and locks) and closed circuits past their windows; rows removed
    per table. Runs inside the caller's write. One statement per table: the rows never
    come through Python (the writer thread keeps out of the event loop's way)."""
    removed = no_rows()
    if cut.alerts is not None:
        removed["alerts"] = db.execute(
            "DELETE FROM alerts WHERE (fingerprint, starts_at, status) IN (SELECT fingerprint,"
            f" starts_at, status FROM alerts a WHERE {_ALERT_GONE} ORDER BY a.first_seen"
            " LIMIT ?)",
            (cut.alerts, cut.alerts, limit),
        ).rowcount
        gone, args = _delivery_gone(cut)
        removed["deliveries"] = db.execute(
            f"DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries d WHERE {gone}"
            " ORDER BY d.received_at LIMIT ?)",
            (*args, limit),
        ).rowcount
    if cut.heals is not None:
        gone, args = _heal_gone(cut)
        heal_ids = [
            r[0]
            for r in db.execute(
                f"SELECT id FROM heals h WHERE {gone} ORDER BY h.created_at LIMIT ?",
                (*args, limit),
            )
        ]
        if heal_ids:
            ids = json.dumps(heal_ids)
            for table in _HEAL_TABLES:  # names from the tuple above only
                removed[table] = db.execute(
                    f"DELETE FROM {table} WHERE heal_id IN (SELECT value FROM json_each(?))",
                    (ids,),
                ).rowcount
            removed["heals"] = db.execute(
                "DELETE FROM heals WHERE id IN (SELECT value FROM json_each(?))", (ids,)
            ).rowcount
    if cut.circuits is not None:
        removed["safety_circuits"] = db.execute(
            "DELETE FROM safety_circuits WHERE rowid IN (SELECT rowid FROM safety_circuits"
            " WHERE state='closed' AND closed_at < ? LIMIT ?)",
            (cut.circuits, limit),
        ).rowcount
    return removed


def prunable(db: sqlite3.Connection, cut: Cutoffs) -> dict[str, int]:
    """What pruning to the end with ``cut`` would remove now, per table (a read)."""
    found = no_rows()

    def count(sql: str, args: Sequence[float]) -> int:
        return int(db.execute(sql, tuple(args)).fetchone()[0])

    if cut.alerts is not None:
        found["alerts"] = count(
            f"SELECT COUNT(*) FROM alerts a WHERE {_ALERT_GONE}", [cut.alerts] * 2
        )
        gone, args = _delivery_gone(cut)
        found["deliveries"] = count(f"SELECT COUNT(*) FROM deliveries d WHERE {gone}", args)
    if cut.heals is not None:
        gone, args = _heal_gone(cut)
        found["heals"] = count(f"SELECT COUNT(*) FROM heals h WHERE {gone}", args)
        for table in _HEAL_TABLES:
            found[table] = count(
                f"SELECT COUNT(*) FROM {table} WHERE heal_id IN"
                f" (SELECT h.id FROM heals h WHERE {gone})",
                args,
            )
    if cut.circuits is not None:
        found["safety_circuits"] = count(
            "SELECT COUNT(*) FROM safety_circuits WHERE state='closed' AND closed_at < ?",
            [cut.circuits],
        )
    return found


def reclaim(db: sqlite3.Connection, pages: int, keep: float) -> int:
    """Give up to ``pages`` free pages back to the file system while more than ``keep``
    of the file's pages are free (the journal is in ``auto_vacuum=INCREMENTAL`` mode,
    :mod:`healer.store.sqlite.schema`); pages given back. Free pages below ``keep`` stay
    for new rows: moving pages to shrink a file that would grow again costs writes."""
    free = free_pages(db)
    total = int(db.execute("PRAGMA page_count").fetchone()[0])
    spare = min(pages, free - int(keep * total))
    # Python's sqlite3 steps this pragma once per execute, and each step frees one page.
    for _ in range(max(spare, 0)):
        db.execute("PRAGMA incremental_vacuum(1)")
    return free - free_pages(db)


def free_pages(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA freelist_count").fetchone()[0])


def stats(
    db: sqlite3.Connection, path: Path
) -> tuple[dict[str, int], dict[str, float | None], int, int]:
    """(rows per table, oldest entry per table, bytes on disk, free bytes)."""
    rows: dict[str, int] = {}
    oldest: dict[str, float | None] = {}
    for table in STATS_TABLES:  # names from the store's own tuple only
        count, first = db.execute(
            f"SELECT COUNT(*), MIN({OLDEST_COLUMN.get(table, 'NULL')}) FROM {table}"
        ).fetchone()
        rows[table], oldest[table] = int(count), None if first is None else float(first)
    page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
    free = free_pages(db) * page_size
    size = sum(
        (path.parent / f"{path.name}{suffix}").stat().st_size
        for suffix in ("", "-wal")
        if (path.parent / f"{path.name}{suffix}").exists()
    )
    return rows, oldest, size, free
