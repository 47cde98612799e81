"""Odoo's cron tables in a scratch database, as Odoo 16, 17, 18 and 19 create them, and a
stand-in cron worker that runs jobs the way Odoo's does: two connections.

    async with scratch_database() as dsn, Sessions(dsn) as s:
        admin = await s.open()
        await create_ir_cron(admin, 18)
        job = await insert_job(admin, 18, "Mail: Email Queue Manager", nextcall_in=-3600)
        worker = await CronWorker.open(s, 18)          # application_name odoo-<n>, twice
        assert await worker.acquire(job)               # the cron connection locks the row
        run = worker.start(job, Work(batches=3))       # the job connection runs it
        await run                                       # reschedule on the cron conn, COMMIT
        assert await worker.run_once(job) is False     # not due any more
        assert await job_runs(admin, job) == 1         # the job's visible effect, counted

What real Odoo does, and this models (``odoo/addons/base/models/ir_cron.py``):

* The cron thread acquires a job on its own connection (the *cron* connection) with
  ``SELECT ... FOR NO KEY UPDATE SKIP LOCKED`` over ready jobs and keeps the row locked
  until it commits after the job; the job itself runs on a second connection of the
  same process (the *job* connection). Both carry ``application_name`` ``odoo-<os
  pid>``; the lock holder sits ``idle in transaction`` while the job connection works.
* Ready: ``active`` and ``nextcall <= now`` (naive UTC) or a row of ``ir_cron_trigger``
  with ``call_at <= now``; 16 and 17 also need ``numbercall != 0``.
* 16: ``cron_name`` jsonb, ``numbercall``/``doall``; 17: ``cron_name`` varchar,
  ``numbercall``, no ``ir_cron_progress``; 18 and 19: no ``numbercall``,
  ``failure_count``/``first_failure_date`` and ``ir_cron_progress`` (``cron_id,
  remaining, done, deactivate, timed_out_counter``): a job runs in batches, each one
  a progress row inserted and committed by the job connection (its foreign key takes a
  FOR KEY SHARE lock on the job row, so the row's xmax becomes a MultiXactId), while
  ``nextcall`` stays old. A job left partially done stays due (18) or gets a trigger at
  ``now`` (19); both leave ``nextcall`` alone.
* Tables are created as Odoo creates them: ``CREATE TABLE`` with ``id`` alone, then
  one ``ALTER TABLE ... ADD COLUMN`` per field, so a grant made when a table appears
  must still cover columns that come later. ``ir_cron_trigger.cron_id`` is ``ON DELETE
  SET NULL``, ``ir_cron_progress.cron_id`` ``ON DELETE CASCADE``.

``stand_in_job_runs`` is not Odoo's: each finished run of a job inserts one row there
on the job connection, in the job's last transaction, so a test counts how many times
a job really ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg

ODOO_VERSIONS = (16, 17, 18, 19)

_NOW = "(now() AT TIME ZONE 'UTC')"
_names = itertools.count(1)

_AUDIT = [
    ("create_uid", "integer"),
    ("create_date", "timestamp"),
    ("write_uid", "integer"),
    ("write_date", "timestamp"),
]


def _table(name: str, columns: list[tuple[str, str]]) -> list[str]:
    """The statements Odoo's ORM runs for a new model's table."""
    return [
        f'CREATE TABLE "{name}" (id SERIAL NOT NULL, PRIMARY KEY(id))',
        *(f'ALTER TABLE "{name}" ADD COLUMN "{col}" {typ}' for col, typ in columns),
    ]


def ir_cron_ddl(version: int) -> list[str]:
    """The statements creating ``ir_cron`` and its neighbours in Odoo ``version``."""
    if version not in ODOO_VERSIONS:
        raise ValueError(f"Odoo {version}: only {ODOO_VERSIONS} are modelled")
    counters = (
        [("numbercall", "integer"), ("doall", "boolean")]
        if version < 18
        else [("failure_count", "integer"), ("first_failure_date", "timestamp")]
    )
    ddl = [
        *_table(
            "ir_module_module",
            [
                ("name", "varchar NOT NULL"),
                ("state", "varchar"),
                ("latest_version", "varchar"),
                *_AUDIT,
            ],
        ),
        *_table(
            "ir_act_server",
            [
                ("name", "jsonb NOT NULL"),
                ("type", "varchar NOT NULL"),
                ("usage", "varchar"),
                ("state", "varchar NOT NULL"),
                ("code", "text"),
                *_AUDIT,
            ],
        ),
        *_table(
            "ir_cron",
            [
                ("ir_actions_server_id", "integer NOT NULL"),
                ("cron_name", "jsonb" if version == 16 else "varchar"),
                ("user_id", "integer NOT NULL"),
                ("active", "boolean"),
                ("interval_number", "integer"),
                ("interval_type", "varchar"),
                *counters,
                ("nextcall", "timestamp NOT NULL"),
                ("lastcall", "timestamp"),
                ("priority", "integer"),
                *_AUDIT,
            ],
        ),
        'ALTER TABLE "ir_cron" ADD CONSTRAINT "ir_cron_ir_actions_server_id_fkey" '
        'FOREIGN KEY ("ir_actions_server_id") REFERENCES "ir_act_server"("id") '
        "ON DELETE restrict",
        *_table("ir_cron_trigger", [("cron_id", "integer"), ("call_at", "timestamp"), *_AUDIT]),
        'ALTER TABLE "ir_cron_trigger" ADD CONSTRAINT "ir_cron_trigger_cron_id_fkey" '
        'FOREIGN KEY ("cron_id") REFERENCES "ir_cron"("id") ON DELETE set null',
    ]
    if version >= 18:
        ddl += [
            *_table(
                "ir_cron_progress",
                [
                    ("cron_id", "integer NOT NULL"),
                    ("remaining", "integer"),
                    ("done", "integer"),
                    ("deactivate", "boolean"),
                    ("timed_out_counter", "integer"),
                    *_AUDIT,
                ],
            ),
            'ALTER TABLE "ir_cron_progress" ADD CONSTRAINT '
            '"ir_cron_progress_cron_id_fkey" FOREIGN KEY ("cron_id") '
            'REFERENCES "ir_cron"("id") ON DELETE cascade',
        ]
    ddl += [
        "INSERT INTO ir_module_module (name, state, latest_version) "
        f"VALUES ('base', 'installed', '{version}.0.1.3')",
        # Not Odoo's: one row per finished run of a job (see the module docstring).
        "CREATE TABLE stand_in_job_runs (id serial PRIMARY KEY, job_id integer NOT NULL, "
        "worker text NOT NULL, at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'UTC'))",
        "GRANT SELECT, INSERT ON stand_in_job_runs TO PUBLIC",
        "GRANT USAGE ON SEQUENCE stand_in_job_runs_id_seq TO PUBLIC",
    ]
    return ddl


async def create_ir_cron(conn: asyncpg.Connection, version: int) -> None:
    for statement in ir_cron_ddl(version):
        await conn.execute(statement)


async def insert_job(
    conn: asyncpg.Connection,
    version: int,
    name: str,
    *,
    nextcall_in: float,
    interval_minutes: int = 60,
    active: bool = True,
    priority: int = 5,
    numbercall: int = -1,
) -> int:
    """A job (with its server action) due ``nextcall_in`` seconds from now (negative:
    overdue by that much). ``numbercall`` only exists in 16 and 17 (-1: forever, 0: no
    more runs). Returns its id."""
    label = f'{{"en_US": {json.dumps(name)}}}'
    action = await conn.fetchval(
        "INSERT INTO ir_act_server (name, type, usage, state, code) VALUES ($1::jsonb, "
        "'ir.actions.server', 'ir_cron', 'code', 'model._run()') RETURNING id",
        label,
    )
    cron_name = label if version == 16 else name
    if version < 18:
        extra, values = "numbercall, doall", f"{int(numbercall)}, false"
    else:
        extra, values = "failure_count", "0"
    job_id: int = await conn.fetchval(
        f"INSERT INTO ir_cron (ir_actions_server_id, cron_name, user_id, active, "
        f"interval_number, interval_type, {extra}, nextcall, priority, create_date, "
        f"write_date) VALUES ($1, $2, 1, $3, $4, 'minutes', {values}, "
        f"{_NOW} + make_interval(secs => $5), $6, {_NOW}, {_NOW}) RETURNING id",
        action,
        cron_name,
        active,
        interval_minutes,
        float(nextcall_in),
        priority,
    )
    return job_id


async def add_trigger(conn: asyncpg.Connection, job_id: int, *, call_in: float) -> int:
    """``job._trigger(at)``: a row of ``ir_cron_trigger`` due ``call_in`` s from now."""
    trigger_id: int = await conn.fetchval(
        "INSERT INTO ir_cron_trigger (cron_id, call_at, create_date) "
        f"VALUES ($1, {_NOW} + make_interval(secs => $2), {_NOW}) RETURNING id",
        job_id,
        float(call_in),
    )
    return trigger_id


async def set_module_state(conn: asyncpg.Connection, name: str, state: str) -> None:
    """``ir_module_module.state`` of module ``name`` (added when missing): ``to upgrade``
    and the like say a module install, upgrade or removal is under way."""
    updated = await conn.execute(
        "UPDATE ir_module_module SET state = $2 WHERE name = $1", name, state
    )
    if updated == "UPDATE 0":
        await conn.execute(
            "INSERT INTO ir_module_module (name, state) VALUES ($1, $2)", name, state
        )


async def reference_job(conn: asyncpg.Connection, version: int, job_id: int) -> None:
    """Insert a row whose foreign key points at the job, as Odoo's job connection does
    (``ir_cron_progress`` from 18, ``ir_cron_trigger`` before): a FOR KEY SHARE lock on
    the job row until ``conn``'s transaction ends."""
    if version >= 18:
        await conn.execute(
            "INSERT INTO ir_cron_progress (cron_id, remaining, done, "
            f"timed_out_counter, create_date) VALUES ($1, 0, 0, 0, {_NOW})",
            job_id,
        )
    else:
        await conn.execute(
            f"INSERT INTO ir_cron_trigger (cron_id, call_at) VALUES ($1, {_NOW})", job_id
        )


async def read_job(conn: asyncpg.Connection, job_id: int) -> dict[str, Any]:
    row = await conn.fetchrow(
        f"SELECT id, active, nextcall, lastcall, nextcall > {_NOW} AS scheduled "
        "FROM ir_cron WHERE id = $1",
        job_id,
    )
    assert row is not None, f"no ir_cron row {job_id}"
    return dict(row)


async def job_runs(conn: asyncpg.Connection, job_id: int) -> int:
    """How many runs of ``job_id`` finished (their effect committed)."""
    n: int = await conn.fetchval("SELECT count(*) FROM stand_in_job_runs WHERE job_id = $1", job_id)
    return n


def ready_condition(version: int) -> str:
    """Odoo's ``_get_ready_sql_condition``, for ``ir_cron`` aliased ``c``."""
    numbercall = " AND c.numbercall != 0" if version < 18 else ""
    return (
        f"c.active IS TRUE{numbercall} AND (c.nextcall <= {_NOW} OR c.id IN ("
        f"SELECT cron_id FROM ir_cron_trigger WHERE call_at <= {_NOW}))"
    )


Hang = Literal["statement", "idle", "gone"]


@dataclass(frozen=True)
class Work:
    """What a job's server action does on the job connection.

    ``batches``: 18 and 19 run a job in batches, one ``ir_cron_progress`` row each
    (16 and 17: one run). ``steps`` statements per batch, ``pause`` seconds each (a
    slow job that keeps making progress). ``hang``: the first batch never ends:
    ``"statement"`` (one statement that does not return for ``hang_for`` seconds, then
    the run goes on), ``"idle"`` (idle in transaction) or ``"gone"`` (the job connection
    closes: only the lock holder is left, orphaned). ``remaining``: work left after
    the last batch (18/19: the job is partially done and stays due)."""

    batches: int = 1
    steps: int = 1
    pause: float = 0.0
    hang: Hang | None = None
    hang_for: float = 3600.0
    remaining: int = 0


class CronWorker:
    """One Odoo cron worker process: a cron connection and a job connection sharing the
    ``application_name`` ``odoo-<n>`` (Odoo: ``odoo-<os pid>``), as a prefork cron worker
    has. ``job_conn`` may be None for a worker that only takes locks."""

    def __init__(
        self,
        cron_conn: asyncpg.Connection,
        job_conn: asyncpg.Connection | None,
        version: int,
        name: str = "odoo-cron",
    ) -> None:
        self.conn = cron_conn
        self.job_conn = job_conn
        self.version = version
        self.name = name
        self.job_id: int | None = None
        self.failed: BaseException | None = None

    @classmethod
    async def open(cls, sessions: Any, version: int, name: str | None = None) -> CronWorker:
        """A worker with both connections from ``sessions`` (:class:`Sessions`)."""
        name = name or f"odoo-{4000 + next(_names)}"
        cron = await sessions.open(application_name=name)
        job = await sessions.open(application_name=name)
        return cls(cron, job, version, name)

    @property
    def pid(self) -> int:
        """The cron connection's backend: the lock holder."""
        pid: int = self.conn.get_server_pid()
        return pid

    @property
    def job_pid(self) -> int:
        assert self.job_conn is not None
        pid: int = self.job_conn.get_server_pid()
        return pid

    async def acquire(self, job_id: int, *, manual: bool = False) -> bool:
        """``_acquire_one_job``: BEGIN, then lock the job if ready (``manual``: whether
        ready or not, as "Run Manually" does) and a worker may take it. The row stays
        locked in the open transaction. False when it is not ready or someone holds it."""
        await self.conn.execute("BEGIN")
        where = "TRUE" if manual else ready_condition(self.version)
        if self.version >= 18:
            sql = (
                "WITH last_cron_progress AS (SELECT id AS progress_id, cron_id, "
                "timed_out_counter, done, remaining FROM ir_cron_progress WHERE "
                "cron_id = $1 ORDER BY id DESC LIMIT 1) SELECT * FROM ir_cron c LEFT "
                "JOIN last_cron_progress lcp ON lcp.cron_id = c.id "
                f"WHERE c.id = $1 AND {where} FOR NO KEY UPDATE OF c SKIP LOCKED"
            )
        else:
            sql = (
                f"SELECT * FROM ir_cron c WHERE c.id = $1 AND {where} FOR NO KEY UPDATE SKIP LOCKED"
            )
        row = await self.conn.fetchrow(sql, job_id)
        if row is None:
            await self.conn.execute("ROLLBACK")
            return False
        self.job_id = job_id
        return True

    # Kept for tests that only need a lock holder.
    take = acquire

    def start(self, job_id: int, work: Work = Work(), *, hung: bool = False) -> asyncio.Task[bool]:
        """Run the acquired job on the job connection, then reschedule it on the cron
        connection and commit, as ``_process_job`` does. ``hung``: the worker's thread is
        stuck (an orphaned lock holder): when its job connection fails it does nothing
        more, so the row stays locked until someone ends the cron connection. The task's
        result says whether the run finished (its effect committed)."""
        assert self.job_id == job_id, "acquire() the job first"
        return asyncio.ensure_future(self._process(job_id, work, hung))

    async def _process(self, job_id: int, work: Work, hung: bool) -> bool:
        await self.conn.execute(
            f"DELETE FROM ir_cron_trigger WHERE cron_id = $1 AND call_at <= {_NOW}", job_id
        )
        try:
            finished = await self._run(job_id, work)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            self.failed = exc
            if hung:
                return False
            finished = False
        with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            await self._reschedule(job_id, partial=finished and work.remaining > 0)
        return finished

    async def _run(self, job_id: int, work: Work) -> bool:
        conn = self.job_conn
        assert conn is not None, "this worker has no job connection"
        batches = work.batches if self.version >= 18 else 1
        for batch in range(batches):
            progress = None
            if self.version >= 18:
                progress = await conn.fetchval(
                    "INSERT INTO ir_cron_progress (cron_id, remaining, done, deactivate, "
                    "timed_out_counter, create_date, write_date) VALUES ($1, 0, 0, false, "
                    f"0, {_NOW}, {_NOW}) RETURNING id",
                    job_id,
                )
            await conn.execute("BEGIN")
            if batch == 0 and work.hang is not None:
                await self._hang(conn, work)
            for _ in range(work.steps):
                await conn.execute("SELECT pg_sleep($1)", work.pause)
            if progress is not None:
                left = work.remaining + batches - batch - 1
                await conn.execute(
                    f"UPDATE ir_cron_progress SET done = done + 1, "
                    f"remaining = $2, write_date = {_NOW} WHERE id = $1",
                    progress,
                    left,
                )
            if batch == batches - 1:
                await conn.execute(
                    "INSERT INTO stand_in_job_runs (job_id, worker) VALUES ($1, $2)",
                    job_id,
                    self.name,
                )
            await conn.execute("COMMIT")
        return True

    async def _hang(self, conn: asyncpg.Connection, work: Work) -> None:
        if work.hang == "statement":
            await conn.execute("SELECT pg_sleep($1)", work.hang_for)
        elif work.hang == "idle":
            await conn.execute("SELECT 1")
            await asyncio.sleep(work.hang_for)
        else:  # "gone": the job connection closes, the lock holder stays
            await conn.close()
            raise asyncpg.InterfaceError("the job connection is gone")

    async def _reschedule(self, job_id: int, *, partial: bool) -> None:
        if partial and self.version >= 19:
            await self.conn.execute(
                f"INSERT INTO ir_cron_trigger (cron_id, call_at) VALUES ($1, {_NOW})", job_id
            )
        elif not partial:
            counters = (
                "numbercall = CASE WHEN numbercall > 0 THEN numbercall - 1 ELSE numbercall END"
                if self.version < 18
                else "failure_count = 0, first_failure_date = NULL"
            )
            await self.conn.execute(
                f"UPDATE ir_cron SET lastcall = {_NOW}, nextcall = {_NOW} + "
                f"(interval_number || ' ' || interval_type)::interval, {counters} "
                "WHERE id = $1",
                job_id,
            )
        await self.conn.execute("COMMIT")
        self.job_id = None

    async def finish(self) -> None:
        """Reschedule the acquired job without running it and commit (a lock-only
        worker's end of run)."""
        assert self.job_id is not None, "acquire() a job first"
        await self._reschedule(self.job_id, partial=False)

    async def run_once(self, job_id: int, work: Work = Work()) -> bool:
        """Acquire and run ``job_id`` to the end; False when it was not ready or held."""
        if not await self.acquire(job_id):
            return False
        if self.job_conn is None:
            await self.finish()
            return True
        return await self.start(job_id, work)


class ManualRun:
    """ "Run Manually" from Odoo's UI, on one HTTP worker's connection.

    16 and 17 (``method_direct_trigger``): the request's own cursor locks the row
    (``FOR NO KEY UPDATE NOWAIT``) and runs the server action itself in that
    transaction, so the holder is *active*, its statements changing. 18 and 19 acquire
    the job as the scheduler does and run it on a second connection: use
    :meth:`CronWorker.acquire` with ``manual=True`` for those."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def run(self, job_id: int, *, steps: int, pause: float) -> None:
        await self.conn.execute("BEGIN")
        await self.conn.execute(
            "SELECT id FROM ir_cron WHERE id = $1 FOR NO KEY UPDATE NOWAIT", job_id
        )
        for _ in range(steps):
            await self.conn.execute("SELECT pg_sleep($1)", pause)
        await self.conn.execute(
            "INSERT INTO stand_in_job_runs (job_id, worker) VALUES ($1, 'manual')", job_id
        )
        await self.conn.execute("COMMIT")
