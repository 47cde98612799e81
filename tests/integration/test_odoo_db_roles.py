"""examples/odoo/postgres/initdb.d/10-roles.sh on a private PostgreSQL cluster (it
creates cluster-wide roles, so never on the shared server), with Odoo 16 to 19's cron
tables created by the odoo role as Odoo creates them: the passwords from the secrets
work, healer and postgres_exporter can do their jobs and nothing more."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.support import Sessions
from tests.support.inprocess.stack import ALERTS, load_yaml
from tests.support.scenarios.odoo import ODOO_VERSIONS, CronWorker, add_trigger, insert_job
from tests.support.servers.odoo_roles import (
    PASSWORDS,
    OdooDatabase,
    ShippedCluster,
    odoo_database,
)

pytestmark = pytest.mark.postgres

# The probe handlers/_odoo_cron.py runs, always in a transaction rolled back at once.
PROBE = "SELECT id FROM ir_cron WHERE id = ANY($1::int[]) FOR NO KEY UPDATE SKIP LOCKED"
CRON_TABLES = ("ir_cron", "ir_cron_trigger", "ir_module_module")
# What else of Odoo's data a monitoring role must not read.
PRIVATE_TABLES = ("res_users", "ir_act_server")


@pytest.fixture(params=ODOO_VERSIONS, ids=lambda v: f"odoo{v}")
def version(request: pytest.FixtureRequest) -> int:
    v: int = request.param
    return v


def cron_tables(version: int) -> tuple[str, ...]:
    return (*CRON_TABLES, "ir_cron_progress") if version >= 18 else CRON_TABLES


async def odoo_data(db: OdooDatabase) -> int:
    """What Odoo has in any database: an overdue job with a due trigger, and users."""
    odoo = await asyncpg.connect(db.odoo_dsn)
    try:
        job = await insert_job(odoo, db.version, "Mail: Email Queue Manager", nextcall_in=-3600)
        await add_trigger(odoo, job, call_in=-60)
        await odoo.execute("CREATE TABLE res_users (id serial PRIMARY KEY, login varchar)")
        await odoo.execute("ALTER TABLE res_users ADD COLUMN password varchar")
        await odoo.execute("INSERT INTO res_users (login, password) VALUES ('admin', 'x')")
        return job
    finally:
        await odoo.close()


async def test_roles_log_in_with_their_secrets_and_none_is_superuser(
    shipped_pg: ShippedCluster,
) -> None:
    """Each role logs in over TCP with the password from its secret file and not with
    another; none of odoo, healer, postgres_exporter is a superuser (so healer may
    signal odoo's sessions, and a leaked monitoring password is no superuser's);
    only healer is in odoo_cron_probe."""
    for role, password in PASSWORDS.items():
        conn = await asyncpg.connect(shipped_pg.dsn(role))
        try:
            assert await conn.fetchval("SELECT current_user") == role
            assert not await conn.fetchval(
                "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
            )
        finally:
            await conn.close()
        wrong = shipped_pg.dsn(role).replace(f":{password}@", ":not-the-password@")
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(wrong)
    admin = await asyncpg.connect(shipped_pg.dsn("postgres"))
    try:
        members = await admin.fetch(
            "SELECT r.rolname, pg_has_role(r.rolname, 'odoo_cron_probe', 'MEMBER') AS probe,"
            " pg_has_role(r.rolname, 'odoo_monitor', 'MEMBER') AS monitor"
            " FROM pg_roles r WHERE r.rolname IN ('odoo', 'healer', 'postgres_exporter')"
        )
    finally:
        await admin.close()
    assert {m["rolname"]: (m["monitor"], m["probe"]) for m in members} == {
        "odoo": (False, False),
        "healer": (True, True),
        "postgres_exporter": (True, False),
    }


async def probe(conn: asyncpg.Connection, ids: list[int]) -> list[int]:
    """The probe as the handler runs it: in a transaction rolled back at once."""
    tx = conn.transaction()
    await tx.start()
    try:
        return [r["id"] for r in await conn.fetch(PROBE, ids)]
    finally:
        await tx.rollback()


async def assert_denied(conn: asyncpg.Connection, *statements: str) -> None:
    """Each statement fails for lack of privilege (each in its own transaction)."""
    for sql in statements:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(sql)


async def test_healer_probes_cron_locks_and_reads_only_the_cron_tables(
    shipped_pg: ShippedCluster, version: int
) -> None:
    """Once odoo has created the tables (id first, then a column per ALTER TABLE):
    healer's FOR NO KEY UPDATE SKIP LOCKED probe works, returns a free job and skips one
    a cron worker holds; healer reads ir_cron, ir_cron_trigger, ir_module_module (and
    ir_cron_progress from 18), but may update no column of ir_cron but write_date,
    neither insert nor delete jobs or triggers, nor read any other table of Odoo's."""
    async with odoo_database(shipped_pg, version) as db, Sessions(db.odoo_dsn) as s:
        job = await odoo_data(db)
        healer = await s.open(dsn=db.healer_dsn)
        for table in cron_tables(version):
            await healer.fetch(f"SELECT * FROM {table}")
        assert await healer.fetchval("SELECT count(*) FROM ir_cron_trigger") == 1
        assert (
            await healer.fetchval("SELECT state FROM ir_module_module WHERE name = 'base'")
            == "installed"
        )
        assert await probe(healer, [job]) == [job]
        worker = await CronWorker.open(s, version)
        assert await worker.acquire(job)
        assert await probe(healer, [job]) == []

        writable = await healer.fetch(
            "SELECT column_name::text AS name, has_column_privilege("
            "  'public.ir_cron', column_name, 'UPDATE') AS update"
            " FROM information_schema.columns"
            " WHERE table_schema = 'public' AND table_name = 'ir_cron'"
        )
        assert [c["name"] for c in writable if c["update"]] == ["write_date"]
        others = [c["name"] for c in writable if c["name"] != "write_date"]
        assert {"active", "nextcall", "cron_name", "lastcall"} <= set(others)
        await assert_denied(
            healer,
            *(f'UPDATE ir_cron SET "{column}" = "{column}"' for column in others),
            "UPDATE ir_cron SET active = false",
            "DELETE FROM ir_cron",
            "DELETE FROM ir_cron_trigger",
            "UPDATE ir_module_module SET state = 'installed'",
            *(f"SELECT * FROM {table}" for table in PRIVATE_TABLES),
        )


async def test_exporter_reads_the_cron_tables_but_never_locks_a_job(
    shipped_pg: ShippedCluster, version: int
) -> None:
    """postgres_exporter reads the cron tables and the shipped odoo_cron query runs as
    it (the overdue job: ~3600 s), but it cannot take the probe's row lock, write, or
    read any other table of Odoo's."""
    query = load_yaml(ALERTS / "postgres_exporter" / "queries.yml")["odoo_cron"]["query"]
    async with odoo_database(shipped_pg, version) as db, Sessions(db.odoo_dsn) as s:
        job = await odoo_data(db)
        exporter = await s.open(dsn=db.exporter_dsn)
        for table in cron_tables(version):
            await exporter.fetch(f"SELECT * FROM {table}")
        (row,) = await exporter.fetch(query)
        assert row["cron_id"] == str(job)
        assert row["cron_name"] == "Mail: Email Queue Manager"
        assert 3590 < row["delay_seconds"] < 3700
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await probe(exporter, [job])
        await assert_denied(
            exporter,
            "UPDATE ir_cron SET write_date = write_date",
            *(f"SELECT * FROM {table}" for table in PRIVATE_TABLES),
        )


async def test_later_ddl_neither_fails_nor_widens_the_grants(shipped_pg: ShippedCluster) -> None:
    """The event trigger fires again on every later CREATE/ALTER TABLE of Odoo's (a
    module upgrade adding a column to ir_cron, an unrelated new table): the DDL
    succeeds, the new column is not writable for healer, the new table not readable."""
    async with odoo_database(shipped_pg, 18) as db, Sessions(db.odoo_dsn) as s:
        odoo = await s.open()
        await odoo.execute('ALTER TABLE "ir_cron" ADD COLUMN "model_id" integer')
        await odoo.execute('CREATE TABLE "ir_cron_extra" (id SERIAL NOT NULL, PRIMARY KEY(id))')
        await odoo.execute('ALTER TABLE "ir_cron_extra" ADD COLUMN "write_date" timestamp')
        healer = await s.open(dsn=db.healer_dsn)
        assert await healer.fetchval("SELECT count(model_id) FROM ir_cron") == 0
        await assert_denied(
            healer, "UPDATE ir_cron SET model_id = 1", "SELECT * FROM ir_cron_extra"
        )


async def test_healer_sees_odoo_queries_and_may_terminate_odoo_sessions(
    shipped_pg: ShippedCluster,
) -> None:
    """healer (pg_monitor, pg_signal_backend) sees what an odoo session runs in
    pg_stat_activity and may pg_terminate_backend it: odoo is not a superuser."""
    async with odoo_database(shipped_pg, 17, tables=False) as db, Sessions(db.odoo_dsn) as s:
        odoo = await s.open()
        healer = await s.open(dsn=db.healer_dsn)
        sleeper = s.background(odoo, "SELECT pg_sleep(60)")
        pid = odoo.get_server_pid()
        query = None
        for _ in range(100):
            query = await healer.fetchval(
                "SELECT query FROM pg_stat_activity WHERE pid = $1 AND state = 'active'", pid
            )
            if query:
                break
            await asyncio.sleep(0.05)
        assert query == "SELECT pg_sleep(60)"
        assert await healer.fetchval("SELECT pg_terminate_backend($1)", pid) is True
        with pytest.raises((asyncpg.PostgresError, asyncpg.ConnectionDoesNotExistError)):
            await asyncio.wait_for(sleeper, 10)
