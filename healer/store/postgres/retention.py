"""Retention in PostgreSQL: one bounded prune batch (a short transaction), what a prune
would remove, and the store's size. The predicates are the SQLite store's
(:mod:`healer.store.sqlite.retention`; what is kept is :mod:`healer.store.retention`'s
docstring).

Replicas: every replica runs the prune loop; each batch first tries a
transaction-level advisory lock (``retention``) and, when another replica holds it,
does nothing (:func:`prune_batch` returns None), so one prunes at a time. The deletes
re-check their predicate and take the ingest's per-alert locks, so a re-send that
arrives meanwhile either keeps its row (it counted last) or finds it gone and starts
afresh, never a duplicate of a deleted row.

Space: a DELETE leaves dead rows that autovacuum marks reusable; the tables stop
growing once pruning keeps pace, without VACUUM FULL (:func:`reclaim` gives nothing
back, by design).
"""

from __future__ import annotations

from typing import Any

from healer.store.postgres.alerts import alert_lock
from healer.store.postgres.pool import Conn, lock, lock_key
from healer.store.retention import OLDEST_COLUMN, STATS_TABLES, Cutoffs, no_rows

# Version 4: the indexes the prune walks.
DDL = (
    "CREATE INDEX IF NOT EXISTS alerts_by_first_seen ON alerts (first_seen)",
    "CREATE INDEX IF NOT EXISTS alerts_by_delivery ON alerts (delivery_id)",
    "CREATE INDEX IF NOT EXISTS deliveries_by_time ON deliveries (received_at)",
)

_OPEN = "SELECT fingerprint FROM heals WHERE phase != 'done' AND fingerprint IS NOT NULL"
# An alert row past the alerts window (alias a; $1: the alerts cutoff).
_ALERT_GONE = f"a.first_seen < $1 AND a.last_seen < $1 AND a.fingerprint NOT IN ({_OPEN})"
# A delivery only rows past the window read (alias d; $1: the alerts cutoff).
_DELIVERY_GONE = (
    "d.received_at < $1 AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.delivery_id = d.id"
    f" AND NOT ({_ALERT_GONE}))"
)
_HEAL_TABLES = ("events", "approvals", "follow_ups", "target_locks")
_LOCK = lock_key("retention")


def _heal_gone(cut: Cutoffs) -> tuple[str, list[Any]]:
    """SQL true of a heals row (alias h) that may go ($1: the heals cutoff, $2: the
    alerts cutoff, NULL: alerts kept forever), and its arguments."""
    sql = (
        f"h.created_at < $1 AND h.phase = 'done' AND (h.fingerprint IS NULL OR"
        f" (h.fingerprint NOT IN ({_OPEN}) AND NOT EXISTS (SELECT 1 FROM alerts a"
        f" WHERE a.fingerprint = h.fingerprint AND a.heal_id = h.id AND"
        f" ($2::double precision IS NULL OR a.first_seen >= $2 OR a.last_seen >= $2))))"
    )
    return sql, [cut.heals, cut.alerts]


async def prune_batch(db: Conn, cut: Cutoffs, limit: int) -> dict[str, int] | None:
    """As the SQLite store's, inside the caller's transaction; None (nothing done) while
    another replica's batch holds the retention lock."""
    if not await db.fetchval("SELECT pg_try_advisory_xact_lock($1)", _LOCK):
        return None
    removed = no_rows()
    if cut.alerts is not None:
        keys = await db.fetch(
            f"SELECT fingerprint, starts_at, status FROM alerts a WHERE {_ALERT_GONE}"
            " ORDER BY a.first_seen LIMIT $2",
            cut.alerts,
            limit,
        )
        await lock(db, *{alert_lock(k[0], k[1]) for k in keys})
        deleted = await db.fetch(
            "DELETE FROM alerts a USING unnest($2::text[], $3::text[], $4::text[])"
            " AS k(fp, starts, status) WHERE a.fingerprint = k.fp AND a.starts_at = k.starts"
            f" AND a.status = k.status AND {_ALERT_GONE} RETURNING 1",
            cut.alerts,
            [k[0] for k in keys],
            [k[1] for k in keys],
            [k[2] for k in keys],
        )
        removed["alerts"] = len(deleted)
        deleted = await db.fetch(
            "DELETE FROM deliveries WHERE id IN (SELECT d.id FROM deliveries d WHERE"
            f" {_DELIVERY_GONE} ORDER BY d.received_at LIMIT $2) RETURNING 1",
            cut.alerts,
            limit,
        )
        removed["deliveries"] = len(deleted)
    if cut.heals is not None:
        gone, args = _heal_gone(cut)
        heal_ids = [
            r[0]
            for r in await db.fetch(
                f"DELETE FROM heals WHERE id IN (SELECT h.id FROM heals h WHERE {gone}"
                " ORDER BY h.created_at LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING id",
                *args,
                limit,
            )
        ]
        for table in _HEAL_TABLES:  # names from the tuple above only
            rows = await db.fetch(
                f"DELETE FROM {table} WHERE heal_id = ANY($1::text[]) RETURNING 1", heal_ids
            )
            removed[table] = len(rows)
        removed["heals"] = len(heal_ids)
    if cut.circuits is not None:
        rows = await db.fetch(
            "DELETE FROM safety_circuits WHERE (rule, target) IN (SELECT rule, target FROM"
            " safety_circuits WHERE state='closed' AND closed_at < $1 LIMIT $2) RETURNING 1",
            cut.circuits,
            limit,
        )
        removed["safety_circuits"] = len(rows)
    return removed


async def prunable(db: Conn, cut: Cutoffs) -> dict[str, int]:
    """What pruning to the end with ``cut`` would remove now, per table."""
    found = no_rows()
    if cut.alerts is not None:
        found["alerts"] = await db.fetchval(
            f"SELECT COUNT(*)::int FROM alerts a WHERE {_ALERT_GONE}", cut.alerts
        )
        found["deliveries"] = await db.fetchval(
            f"SELECT COUNT(*)::int FROM deliveries d WHERE {_DELIVERY_GONE}", cut.alerts
        )
    if cut.heals is not None:
        gone, args = _heal_gone(cut)
        found["heals"] = await db.fetchval(f"SELECT COUNT(*)::int FROM heals h WHERE {gone}", *args)
        for table in _HEAL_TABLES:
            found[table] = await db.fetchval(
                f"SELECT COUNT(*)::int FROM {table} WHERE heal_id IN"
                f" (SELECT h.id FROM heals h WHERE {gone})",
                *args,
            )
    if cut.circuits is not None:
        found["safety_circuits"] = await db.fetchval(
            "SELECT COUNT(*)::int FROM safety_circuits WHERE state='closed' AND closed_at < $1",
            cut.circuits,
        )
    return found


async def reclaim(db: Conn, pages: int, keep: float) -> int:
    """Nothing: autovacuum makes the freed space reusable in place (module docstring)."""
    return 0


async def stats(db: Conn) -> tuple[dict[str, int], dict[str, float | None], int]:
    """(rows per table, oldest entry per table, bytes of the store's tables)."""
    rows: dict[str, int] = {}
    oldest: dict[str, float | None] = {}
    size = 0
    for table in STATS_TABLES:  # names from the store's own tuple only
        count, first, taken = await db.fetchrow(
            f"SELECT COUNT(*)::bigint, MIN({OLDEST_COLUMN.get(table, 'NULL')}),"
            f" pg_total_relation_size('{table}') FROM {table}"
        )
        rows[table], oldest[table] = int(count), None if first is None else float(first)
        size += int(taken)
    return rows, oldest, size
