"""Who holds the row locks of overdue ``ir_cron`` jobs, proven from PostgreSQL itself.

Used by ``odoo.unlock_cron`` (:mod:`handlers.odoo`)::

    jobs = await overdue_jobs(ctx, "odoo", overdue=600, cron_id=None)
    locks = await row_lock_holders(ctx, "odoo", [j["id"] for j in jobs])

Odoo's cron worker takes a job with ``SELECT ... FROM ir_cron WHERE id = %s FOR NO KEY
UPDATE SKIP LOCKED`` and keeps that row lock until it commits after the job. Row
locks are not listed in ``pg_locks``; they live in the row's ``xmax``:

* which rows are locked: the same ``FOR NO KEY UPDATE SKIP LOCKED`` the worker runs;
  the rows it skips are the ones a worker cannot take;
* who locks them: the row's ``xmax`` is either the locking transaction's id or, when
  several transactions lock the row (Odoo's job cursor inserting ``ir_cron_progress``
  or ``ir_cron_trigger`` rows takes a FOR KEY SHARE lock through the foreign key), a
  MultiXactId whose members ``pg_get_multixact_members`` lists. PostgreSQL does not
  say which of the two an ``xmax`` is without an extension, so both readings are tried:
  the multixact one only when the number is a MultiXactId that exists (``mxid_age`` within
  the range of ``pg_database.datminmxid``), the xid one only for a transaction still
  in progress (every such transaction holds an ExclusiveLock on its own id in
  ``pg_locks``). A holder counts only if its transaction is in progress, its lock
  mode conflicts with the worker's (KEY SHARE does not) and its backend holds a
  lock on the ``ir_cron`` table itself. When both readings name live holders the
  row is reported as ambiguous and nobody is touched.

Every statement that touches ``ir_cron`` runs through ``ctx.postgres.probe``: in a
transaction rolled back at once, with a short ``lock_timeout``, so healer never keeps
a row locked and never queues behind (and so in front of others) a table lock such
as a module upgrade's; it fails the heal instead.

Only columns common to Odoo 16, 17 and 18 are read (18 dropped ``numbercall`` and
``doall``; ``cron_name`` is jsonb in some versions and varchar in others).
``nextcall`` is Odoo's naive UTC timestamp, compared with ``now() AT TIME ZONE 'UTC'``
whatever the session's time zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from healer.api import ActionFailed, HealContext

# A text name whether cron_name is varchar or a jsonb of translations.
_CRON_NAME = """
CASE jsonb_typeof(to_jsonb(c.cron_name))
     WHEN 'object' THEN coalesce(to_jsonb(c.cron_name) ->> 'en_US',
                                 (SELECT value FROM jsonb_each_text(to_jsonb(c.cron_name))
                                   ORDER BY key LIMIT 1))
     ELSE to_jsonb(c.cron_name) #>> '{}' END"""

_DATABASE_SQL = """
SELECT current_database() AS datname, to_regclass('ir_cron') IS NOT NULL AS has_ir_cron
"""

_OVERDUE_SQL = f"""
SELECT c.id, {_CRON_NAME} AS cron_name, c.nextcall, c.lastcall, c.priority,
       c.interval_number, c.interval_type,
       extract(epoch FROM (now() AT TIME ZONE 'UTC') - c.nextcall)::float8 AS delay
  FROM ir_cron c
 WHERE c.active
   AND c.nextcall < (now() AT TIME ZONE 'UTC') - make_interval(secs => $1::float8)
   AND ($2::int IS NULL OR c.id = $2::int)
 ORDER BY c.nextcall, c.id
 LIMIT 200
"""

_LOCKED_SQL = """
WITH free AS MATERIALIZED (
    SELECT id FROM ir_cron WHERE id = ANY($1::int[]) FOR NO KEY UPDATE SKIP LOCKED
)
SELECT c.id, c.xmax::text AS xmax
  FROM ir_cron c
 WHERE c.id = ANY($1::int[]) AND c.id NOT IN (SELECT id FROM free)
"""

_HOLDERS_SQL = """
WITH locked AS (
    SELECT * FROM unnest($1::int[], $2::text[]) AS l(job_id, xmax)
), live AS (
    SELECT transactionid::text AS xid, pid FROM pg_locks
     WHERE locktype = 'transactionid' AND mode = 'ExclusiveLock' AND granted
), oldest AS (
    SELECT max(mxid_age(datminmxid)) AS age FROM pg_database
), readings AS (
    SELECT k.job_id, k.xmax, 'xid' AS via, k.xmax AS xid, NULL::text AS mode
      FROM locked k
    UNION ALL
    SELECT k.job_id, k.xmax, 'multixact', m.xid::text, m.mode
      FROM locked k CROSS JOIN oldest o
     CROSS JOIN LATERAL pg_get_multixact_members(
           CASE WHEN mxid_age(k.xmax::xid) BETWEEN 1 AND o.age THEN k.xmax::xid END) m
)
SELECT r.job_id, r.xmax, r.via, r.xid, r.mode, v.pid,
       a.backend_start, a.xact_start,
       EXISTS (SELECT 1 FROM pg_locks t
                WHERE t.pid = v.pid AND t.locktype = 'relation' AND t.granted
                  AND t.database = (SELECT oid FROM pg_database
                                     WHERE datname = current_database())
                  AND t.relation = 'ir_cron'::regclass) AS locks_ir_cron
  FROM readings r
  JOIN live v ON v.xid = r.xid
  LEFT JOIN pg_stat_activity a ON a.pid = v.pid
 ORDER BY r.job_id, r.via, v.pid
"""

_GONE_SQL = "SELECT pid FROM pg_stat_activity WHERE pid = ANY($1::int[])"


@dataclass(frozen=True, slots=True)
class Holder:
    """One backend proven to hold the row lock of ``job_id``. ``backend_start`` +
    ``xact_start`` + ``xid`` identify the exact backend and transaction."""

    job_id: int
    pid: int
    xid: str
    via: str  # "xid" | "multixact"
    mode: str | None
    backend_start: datetime | None
    xact_start: datetime | None

    @property
    def identity(self) -> tuple[int, str, datetime | None, datetime | None]:
        return (self.pid, self.xid, self.backend_start, self.xact_start)

    def evidence(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "pid": self.pid, "xid": self.xid, "via": self.via,
                "lock_mode": self.mode or "(sole locker)",
                "backend_start": _iso(self.backend_start),
                "xact_start": _iso(self.xact_start)}


@dataclass(frozen=True, slots=True)
class RowLocks:
    """What :func:`row_lock_holders` found: holders, plus locked rows it could not pin
    on a terminable backend (``unproven``: job id -> why)."""

    locked: list[int]
    holders: list[Holder]
    unproven: dict[int, str]


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    # Odoo's datetimes are naive UTC: say so.
    return value.isoformat() + ("Z" if value.tzinfo is None else "")


async def current_database(ctx: HealContext, db: str, datname: str | None) -> str:
    """The database healer is connected to as ``db``; fails unless it has ``ir_cron``
    (and is ``datname`` when one is given: ir_cron is read where healer connects)."""
    row = (await ctx.postgres.fetch(db, _DATABASE_SQL))[0]
    if datname is not None and row["datname"] != datname:
        raise ActionFailed(f"database {db!r} connects to {row['datname']!r}, not {datname!r}:"
                           " ir_cron is read in the database healer connects to",
                           heal_id=ctx.heal_id)
    if not row["has_ir_cron"]:
        raise ActionFailed(f"database {db!r} ({row['datname']}) has no ir_cron table: "
                           "not an Odoo database", heal_id=ctx.heal_id)
    return str(row["datname"])


async def overdue_jobs(ctx: HealContext, db: str, *, overdue: float,
                       cron_id: int | None) -> list[dict[str, Any]]:
    """Active jobs whose ``nextcall`` is more than ``overdue`` seconds in the past."""
    rows = await ctx.postgres.probe(db, _OVERDUE_SQL, overdue, cron_id)
    return [{"id": r["id"], "cron_name": r["cron_name"], "nextcall": _iso(r["nextcall"]),
             "lastcall": _iso(r["lastcall"]), "priority": r["priority"],
             "interval": f"{r['interval_number']} {r['interval_type']}",
             "delay_s": round(r["delay"], 1)} for r in rows]


async def row_lock_holders(ctx: HealContext, db: str, job_ids: list[int]) -> RowLocks:
    """Which of ``job_ids`` a cron worker could not take right now, and who holds them."""
    if not job_ids:
        return RowLocks([], [], {})
    rows = await ctx.postgres.probe(db, _LOCKED_SQL, job_ids)
    xmax = {int(r["id"]): str(r["xmax"]) for r in rows}
    locked = sorted(xmax)
    if not locked:
        return RowLocks([], [], {})
    readings = await ctx.postgres.fetch(db, _HOLDERS_SQL, locked, [xmax[j] for j in locked])
    holders: list[Holder] = []
    unproven: dict[int, str] = {}
    for job_id in locked:
        mine = [r for r in readings if r["job_id"] == job_id]
        as_xid = [r for r in mine if r["via"] == "xid"]
        # FOR KEY SHARE (foreign keys) does not stop a worker's FOR NO KEY UPDATE.
        as_multi = [r for r in mine if r["via"] == "multixact" and r["mode"] != "keysh"]
        if as_xid and as_multi:
            unproven[job_id] = (f"xmax {xmax[job_id]} reads as a live transaction and as a "
                                "live MultiXactId: ambiguous, nobody is touched")
            continue
        found = as_xid or as_multi
        if not found:
            unproven[job_id] = (f"xmax {xmax[job_id]}: no transaction in progress holds "
                                "the row (released meanwhile?)")
            continue
        for r in found:
            # The transaction may be a subtransaction (a savepoint) of the backend's: its
            # own ExclusiveLock in pg_locks is what ties it to the pid.
            if r["backend_start"] is None:
                unproven[job_id] = f"transaction {r['xid']} has no backend (prepared?)"
            elif not r["locks_ir_cron"]:
                unproven[job_id] = (f"pid {r['pid']}: transaction {r['xid']} holds no lock "
                                    "on ir_cron: not proven")
            elif any(h.job_id == job_id and h.pid == r["pid"] for h in holders):
                continue
            else:
                holders.append(Holder(job_id=job_id, pid=int(r["pid"]), xid=str(r["xid"]),
                                      via=str(r["via"]), mode=r["mode"],
                                      backend_start=r["backend_start"],
                                      xact_start=r["xact_start"]))
    return RowLocks(locked, holders, unproven)


async def still_running(ctx: HealContext, db: str, pids: list[int]) -> list[int]:
    """Which of ``pids`` still have a backend."""
    rows = await ctx.postgres.fetch(db, _GONE_SQL, pids)
    return sorted(int(r["pid"]) for r in rows)
