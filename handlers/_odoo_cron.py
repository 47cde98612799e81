"""The facts ``odoo.unlock_cron`` acts on, read from PostgreSQL itself: which ``ir_cron``
jobs are overdue, who holds their row locks, and whether the run is making progress.

Used by ``odoo.unlock_cron`` (:mod:`handlers.odoo`)::

    schema = await inspect_database(ctx, "odoo", datname=None)   # also: the role's grants
    jobs = await overdue_jobs(ctx, "odoo", schema, overdue=600, cron_id=None)
    locks = await row_lock_holders(ctx, "odoo", [j["id"] for j in jobs])
    ages = await progress_ages(ctx, "odoo", schema, job_ids)     # 18+: ir_cron_progress
    busy = await modules_changing(ctx, "odoo", schema)           # an install or upgrade

How Odoo runs a job (16 to 19): the cron thread acquires it on its own connection with
``SELECT ... FOR NO KEY UPDATE SKIP LOCKED`` over ready jobs and keeps the row locked
until it commits after the job; the job itself runs on a second connection of the same
process. Both carry ``application_name`` ``odoo-<os pid>``.

Overdue follows Odoo's readiness: ``active``, ``numbercall != 0`` where the column
exists (16, 17), and due since the earlier of ``nextcall`` and the job's oldest due
``ir_cron_trigger`` (``call_at <= now``). Datetimes are Odoo's naive UTC, compared with
``now() AT TIME ZONE 'UTC'`` whatever the session's time zone. ``cron_name`` is jsonb in
some versions and varchar in others; columns that only some versions have are found in
the catalog first, so the SQL never names a column the table lacks.

Row locks are not listed in ``pg_locks``; they live in the row's ``xmax``:

* which rows are locked: the same ``FOR NO KEY UPDATE SKIP LOCKED`` the worker runs;
  the rows it skips are the ones a worker cannot take. It needs UPDATE on one column of
  ``ir_cron``: the shipped role script grants ``UPDATE (write_date)`` and nothing more;
* who locks them: the row's ``xmax`` is either the locking transaction's id or, when
  several transactions lock the row (Odoo's job connection inserting ``ir_cron_progress``
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

Every statement that touches Odoo's tables runs through ``ctx.postgres.probe``: in a
transaction rolled back at once, with a short ``lock_timeout``, so healer never keeps
a row locked and never queues behind (and so in front of others) a table lock such
as a module upgrade's; it fails the heal instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from healer.api import ActionFailed, HealContext, PgSession

_NOW = "(now() AT TIME ZONE 'UTC')"

# What the database is, and what the connected role may do there. Tables and columns
# that only some Odoo versions have are looked up here; privileges only where the table
# exists (has_table_privilege on a NULL oid is NULL).
_DATABASE_SQL = """
SELECT current_database() AS datname, current_user AS role,
       to_regclass('ir_cron') IS NOT NULL AS has_ir_cron,
       EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('ir_cron')
                  AND attname = 'numbercall' AND attnum > 0 AND NOT attisdropped)
           AS has_numbercall,
       to_regclass('ir_cron_trigger') IS NOT NULL AS has_triggers,
       to_regclass('ir_cron_progress') IS NOT NULL AS has_progress,
       to_regclass('ir_module_module') IS NOT NULL AS has_modules,
       has_table_privilege(to_regclass('ir_cron'), 'SELECT') AS read_ir_cron,
       has_any_column_privilege(to_regclass('ir_cron'), 'UPDATE') AS probe_ir_cron,
       has_table_privilege(to_regclass('ir_cron_trigger'), 'SELECT') AS read_triggers,
       has_table_privilege(to_regclass('ir_cron_progress'), 'SELECT') AS read_progress,
       has_table_privilege(to_regclass('ir_module_module'), 'SELECT') AS read_modules
"""

# A text name whether cron_name is varchar or a jsonb of translations.
_CRON_NAME = """
CASE jsonb_typeof(to_jsonb(c.cron_name))
     WHEN 'object' THEN coalesce(to_jsonb(c.cron_name) ->> 'en_US',
                                 (SELECT value FROM jsonb_each_text(to_jsonb(c.cron_name))
                                   ORDER BY key LIMIT 1))
     ELSE to_jsonb(c.cron_name) #>> '{}' END"""


def _overdue_sql(schema: Schema) -> str:
    """Active, runnable jobs due (``nextcall`` or a due trigger, whichever is earlier)
    more than ``$1`` seconds ago; ``$2``: one job id or NULL. Built from fixed pieces
    only: which pieces depends on the columns and tables the database has."""
    due = f"CASE WHEN c.nextcall <= {_NOW} THEN c.nextcall END"
    triggers, trigger_at = "", "NULL::timestamp"
    if schema.triggers:
        triggers = (
            "LEFT JOIN (SELECT cron_id, min(call_at) AS call_at FROM ir_cron_trigger"
            f" WHERE call_at <= {_NOW} GROUP BY cron_id) t ON t.cron_id = c.id"
        )
        trigger_at = "t.call_at"
    since = f"least({due}, {trigger_at})"
    runnable = " AND c.numbercall != 0" if schema.numbercall else ""
    return f"""
SELECT c.id, {_CRON_NAME} AS cron_name, c.nextcall, {trigger_at} AS trigger_at,
       c.lastcall, c.priority, c.interval_number, c.interval_type,
       extract(epoch FROM {_NOW} - {since})::float8 AS delay
  FROM ir_cron c {triggers}
 WHERE c.active IS TRUE{runnable}
   AND {since} < {_NOW} - make_interval(secs => $1::float8)
   AND ($2::int IS NULL OR c.id = $2::int)
 ORDER BY {since}, c.id
 LIMIT 200
"""


# 18+: when each job last recorded progress (a batch started or reported what it did).
_PROGRESS_SQL = f"""
SELECT cron_id,
       extract(epoch FROM {_NOW} - max(greatest(create_date, write_date)))::float8 AS age
  FROM ir_cron_progress
 WHERE cron_id = ANY($1::int[])
 GROUP BY cron_id
"""

# Odoo's own cron waits while modules are being installed, upgraded or removed.
_MODULES_SQL = """
SELECT name, state FROM ir_module_module WHERE state LIKE 'to %' ORDER BY name LIMIT 20
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
        return {
            "job_id": self.job_id,
            "pid": self.pid,
            "xid": self.xid,
            "via": self.via,
            "lock_mode": self.mode or "(sole locker)",
            "backend_start": _iso(self.backend_start),
            "xact_start": _iso(self.xact_start),
        }


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


@dataclass(frozen=True, slots=True)
class Schema:
    """The Odoo database healer is connected to: its name and which of the version-
    dependent pieces it has (16/17: ``numbercall``; 18+: ``ir_cron_progress``)."""

    datname: str
    numbercall: bool
    triggers: bool
    progress: bool
    modules: bool


def _missing_grants(row: dict[str, Any]) -> list[str]:
    needs = [
        ("read_ir_cron", "SELECT ON ir_cron", True),
        ("probe_ir_cron", "UPDATE (write_date) ON ir_cron", True),
        ("read_triggers", "SELECT ON ir_cron_trigger", row["has_triggers"]),
        ("read_progress", "SELECT ON ir_cron_progress", row["has_progress"]),
        ("read_modules", "SELECT ON ir_module_module", row["has_modules"]),
    ]
    return [grant for key, grant, exists in needs if exists and not row[key]]


async def inspect_database(ctx: HealContext, db: str, datname: str | None) -> Schema:
    """The database healer is connected to as ``db``. Fails, saying what to do, unless
    it is an Odoo database (has ``ir_cron``), is ``datname`` when one is given (ir_cron
    is read where healer connects), and healer's role holds every grant the heal needs:
    a clear message at the first heal instead of ``permission denied`` halfway."""
    row = (await ctx.postgres.fetch(db, _DATABASE_SQL))[0]
    if datname is not None and row["datname"] != datname:
        raise ActionFailed(
            f"database {db!r} connects to {row['datname']!r}, not {datname!r}:"
            " ir_cron is read in the database healer connects to"
        )
    if not row["has_ir_cron"]:
        raise ActionFailed(
            f"database {db!r} ({row['datname']}) has no ir_cron table: not an Odoo database"
        )
    missing = _missing_grants(row)
    if missing:
        grants = "; ".join(f"GRANT {g} TO {row['role']}" for g in missing)
        raise ActionFailed(
            f"role {row['role']!r} in database {row['datname']!r} lacks what "
            f"odoo.unlock_cron needs: {grants} (UPDATE on one column lets it run the cron "
            "worker's own FOR NO KEY UPDATE SKIP LOCKED, always rolled back; "
            "examples/odoo/postgres/initdb.d/10-roles.sh grants exactly these)"
        )
    return Schema(
        datname=str(row["datname"]),
        numbercall=bool(row["has_numbercall"]),
        triggers=bool(row["has_triggers"]),
        progress=bool(row["has_progress"]),
        modules=bool(row["has_modules"]),
    )


async def overdue_jobs(
    ctx: HealContext, db: str, schema: Schema, *, overdue: float, cron_id: int | None
) -> list[dict[str, Any]]:
    """Runnable jobs due for more than ``overdue`` seconds (see the module docstring)."""
    rows = await ctx.postgres.probe(db, _overdue_sql(schema), overdue, cron_id)
    return [
        {
            "id": r["id"],
            "cron_name": r["cron_name"],
            "nextcall": _iso(r["nextcall"]),
            "trigger_at": _iso(r["trigger_at"]),
            "lastcall": _iso(r["lastcall"]),
            "priority": r["priority"],
            "interval": f"{r['interval_number']} {r['interval_type']}",
            "delay_s": round(r["delay"], 1),
        }
        for r in rows
    ]


async def progress_ages(
    ctx: HealContext, db: str, schema: Schema, job_ids: list[int]
) -> dict[int, float]:
    """18+: seconds since each job last started a batch or reported progress
    (``ir_cron_progress``); jobs without a row are absent. {} before 18."""
    if not schema.progress or not job_ids:
        return {}
    rows = await ctx.postgres.probe(db, _PROGRESS_SQL, job_ids)
    return {int(r["cron_id"]): float(r["age"]) for r in rows if r["age"] is not None}


async def modules_changing(ctx: HealContext, db: str, schema: Schema) -> list[str]:
    """Modules being installed, upgraded or removed (``state`` ``to ...``)."""
    if not schema.modules:
        return []
    rows = await ctx.postgres.probe(db, _MODULES_SQL)
    return [f"{r['name']} ({r['state']})" for r in rows]


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
            unproven[job_id] = (
                f"xmax {xmax[job_id]} reads as a live transaction and as a "
                "live MultiXactId: ambiguous, nobody is touched"
            )
            continue
        found = as_xid or as_multi
        if not found:
            unproven[job_id] = (
                f"xmax {xmax[job_id]}: no transaction in progress holds "
                "the row (released meanwhile?)"
            )
            continue
        for r in found:
            # The transaction may be a subtransaction (a savepoint) of the backend's: its
            # own ExclusiveLock in pg_locks is what ties it to the pid.
            if r["backend_start"] is None:
                unproven[job_id] = f"transaction {r['xid']} has no backend (prepared?)"
            elif not r["locks_ir_cron"]:
                unproven[job_id] = (
                    f"pid {r['pid']}: transaction {r['xid']} holds no lock on ir_cron: not proven"
                )
            elif any(h.job_id == job_id and h.pid == r["pid"] for h in holders):
                continue
            else:
                holders.append(
                    Holder(
                        job_id=job_id,
                        pid=int(r["pid"]),
                        xid=str(r["xid"]),
                        via=str(r["via"]),
                        mode=r["mode"],
                        backend_start=r["backend_start"],
                        xact_start=r["xact_start"],
                    )
                )
    return RowLocks(locked, holders, unproven)


def fingerprint(session: PgSession) -> list[str | None]:
    """What changes when a session does anything at all: a new statement, a new
    transaction, a change of state, or another backend behind the pid."""
    return [
        _iso(session.backend_start),
        session.state,
        _iso(session.xact_start),
        _iso(session.query_start),
    ]


def same_worker(holder: PgSession, other: PgSession) -> bool:
    """``other`` is a connection of the Odoo process whose cron connection is ``holder``:
    the same database, ``application_name`` (``odoo-<os pid>``) and client address."""
    return (
        other.pid != holder.pid
        and other.database == holder.database
        and other.application_name == holder.application_name
        and other.client_addr == holder.client_addr
    )
