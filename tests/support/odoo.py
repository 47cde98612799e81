"""Odoo's ``ir_cron`` in a scratch database: the tables as Odoo 16, 17 and 18 create
them, jobs, and a stand-in cron worker that takes a job the way Odoo's does.

    async with scratch_database() as dsn, Sessions(dsn) as s:
        admin = await s.open()
        await create_ir_cron(admin, 17)
        job = await insert_job(admin, 17, "Mail: Email Queue Manager", nextcall_in=-3600)
        worker = CronWorker(await s.open(application_name="odoo-cron"), 17)
        assert await worker.take(job)     # BEGIN; SELECT ... FOR NO KEY UPDATE SKIP LOCKED
        ...                               # the row stays locked: the worker "runs" the job
        await worker.finish()             # nextcall moves on, lastcall = now, COMMIT
        assert await worker.run_once(job) # take + finish in one go

Only what healer and Odoo's cron scheduler touch is modelled: the ``ir_cron``
columns (16/17: ``numbercall``, ``doall``; 18: ``failure_count``,
``first_failure_date`` instead), its foreign key to ``ir_act_server``, and the tables
whose foreign keys point at ``ir_cron`` (``ir_cron_trigger``; ``ir_cron_progress``
from 17), since inserting into those takes a FOR KEY SHARE lock on the job row.
``cron_name`` is jsonb (a translated name) in the 16 table and varchar in 17 and 18:
Odoo databases exist with both. Datetimes are naive UTC, as Odoo stores them.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

ODOO_VERSIONS = (16, 17, 18)

_NOW = "(now() AT TIME ZONE 'UTC')"


def ir_cron_ddl(version: int) -> str:
    """``CREATE TABLE`` statements for ``ir_cron`` and its neighbours in Odoo ``version``."""
    if version not in ODOO_VERSIONS:
        raise ValueError(f"Odoo {version}: only {ODOO_VERSIONS} are modelled")
    name_type = "jsonb" if version == 16 else "varchar"
    per_version = ("numbercall integer,\n    doall boolean," if version < 18 else
                   "failure_count integer DEFAULT 0,\n    first_failure_date timestamp,")
    ddl = f"""
CREATE TABLE ir_act_server (
    id serial PRIMARY KEY,
    name jsonb NOT NULL,
    type varchar NOT NULL DEFAULT 'ir.actions.server',
    usage varchar,
    state varchar NOT NULL DEFAULT 'code',
    code text
);
CREATE TABLE ir_cron (
    id serial PRIMARY KEY,
    ir_actions_server_id integer NOT NULL REFERENCES ir_act_server(id) ON DELETE RESTRICT,
    cron_name {name_type},
    user_id integer NOT NULL,
    active boolean,
    interval_number integer,
    interval_type varchar,
    {per_version}
    nextcall timestamp NOT NULL,
    lastcall timestamp,
    priority integer,
    create_uid integer,
    create_date timestamp,
    write_uid integer,
    write_date timestamp
);
CREATE TABLE ir_cron_trigger (
    id serial PRIMARY KEY,
    cron_id integer REFERENCES ir_cron(id) ON DELETE CASCADE,
    call_at timestamp,
    create_uid integer,
    create_date timestamp,
    write_uid integer,
    write_date timestamp
);
"""
    if version >= 17:
        ddl += """
CREATE TABLE ir_cron_progress (
    id serial PRIMARY KEY,
    cron_id integer NOT NULL REFERENCES ir_cron(id) ON DELETE CASCADE,
    remaining integer DEFAULT 0,
    done integer DEFAULT 0,
    timed_out_counter integer DEFAULT 0,
    create_uid integer,
    create_date timestamp,
    write_uid integer,
    write_date timestamp
);
"""
    return ddl


async def create_ir_cron(conn: asyncpg.Connection, version: int) -> None:
    await conn.execute(ir_cron_ddl(version))


async def insert_job(conn: asyncpg.Connection, version: int, name: str, *,
                     nextcall_in: float, interval_minutes: int = 60, active: bool = True,
                     priority: int = 5) -> int:
    """A job (with its server action) due ``nextcall_in`` seconds from now (negative:
    overdue by that much). Returns its id."""
    label = f'{{"en_US": {json.dumps(name)}}}'
    action = await conn.fetchval(
        "INSERT INTO ir_act_server (name, usage, code) VALUES ($1::jsonb, 'ir_cron', "
        "'model._run()') RETURNING id", label)
    cron_name = label if version == 16 else name
    extra = ("numbercall, doall", "-1, false") if version < 18 else ("failure_count", "0")
    job_id: int = await conn.fetchval(
        f"INSERT INTO ir_cron (ir_actions_server_id, cron_name, user_id, active, "
        f"interval_number, interval_type, {extra[0]}, nextcall, priority, create_date) "
        f"VALUES ($1, $2, 1, $3, $4, 'minutes', {extra[1]}, "
        f"{_NOW} + make_interval(secs => $5), $6, {_NOW}) RETURNING id",
        action, cron_name, active, interval_minutes, float(nextcall_in), priority)
    return job_id


async def reference_job(conn: asyncpg.Connection, version: int, job_id: int) -> None:
    """Insert a row whose foreign key points at the job, as Odoo's job cursor does
    (``ir_cron_progress`` from 17, ``ir_cron_trigger`` in 16): a FOR KEY SHARE lock on
    the job row until ``conn``'s transaction ends."""
    if version >= 17:
        await conn.execute("INSERT INTO ir_cron_progress (cron_id, create_date) "
                           f"VALUES ($1, {_NOW})", job_id)
    else:
        await conn.execute("INSERT INTO ir_cron_trigger (cron_id, call_at) "
                           f"VALUES ($1, {_NOW})", job_id)


async def read_job(conn: asyncpg.Connection, job_id: int) -> dict[str, Any]:
    row = await conn.fetchrow(
        f"SELECT id, active, nextcall, lastcall, nextcall > {_NOW} AS scheduled "
        "FROM ir_cron WHERE id = $1", job_id)
    assert row is not None, f"no ir_cron row {job_id}"
    return dict(row)


class CronWorker:
    """A stand-in for Odoo's cron worker on one connection.

    ``take`` acquires a ready job as ``ir_cron._acquire_one_job`` does (active, due,
    ``FOR NO KEY UPDATE SKIP LOCKED``) and keeps the row locked in an open transaction,
    as Odoo does while the job runs; ``finish`` reschedules it (``nextcall`` one
    interval from now, ``lastcall`` now; 16/17 count ``numbercall`` down when
    positive, 18 resets ``failure_count``) and commits."""

    def __init__(self, conn: asyncpg.Connection, version: int) -> None:
        self.conn = conn
        self.version = version
        self.job_id: int | None = None

    @property
    def pid(self) -> int:
        pid: int = self.conn.get_server_pid()
        return pid

    async def take(self, job_id: int) -> bool:
        """True when the job was acquired (and stays locked); False when it is not ready
        or another transaction holds its row."""
        await self.conn.execute("BEGIN")
        row = await self.conn.fetchrow(
            f"SELECT * FROM ir_cron WHERE id = $1 AND active AND nextcall <= {_NOW} "
            "FOR NO KEY UPDATE SKIP LOCKED", job_id)
        if row is None:
            await self.conn.execute("ROLLBACK")
            return False
        self.job_id = job_id
        return True

    async def finish(self) -> None:
        assert self.job_id is not None, "take() a job first"
        if self.version < 18:
            counters = "numbercall = CASE WHEN numbercall > 0 THEN numbercall - 1 " \
                       "ELSE numbercall END"
        else:
            counters = "failure_count = 0, first_failure_date = NULL"
        await self.conn.execute(
            f"UPDATE ir_cron SET lastcall = {_NOW}, "
            f"nextcall = {_NOW} + (interval_number || ' ' || interval_type)::interval, "
            f"{counters}, write_date = {_NOW} WHERE id = $1", self.job_id)
        await self.conn.execute("COMMIT")
        self.job_id = None

    async def run_once(self, job_id: int) -> bool:
        if not await self.take(job_id):
            return False
        await self.finish()
        return True
