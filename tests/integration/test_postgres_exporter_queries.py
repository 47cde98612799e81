"""alerts/postgres_exporter/queries.yml through the real postgres_exporter, logged in as
the shipped postgres_exporter role, against Odoo 16 to 19 databases whose tables the
odoo role created: the metrics the Odoo alerts read come out with the right labels and
values, following Odoo's own notion of a ready job; without ir_cron at all; and for a
real lock wait."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import Sessions, wait_blocked
from tests.support.env import wait_until
from tests.support.inprocess.stack import ALERTS
from tests.support.scenarios.odoo import ODOO_VERSIONS, add_trigger, insert_job
from tests.support.servers.exporters import PostgresExporterFactory
from tests.support.servers.odoo_roles import OdooDatabase, ShippedCluster, odoo_database

pytestmark = [pytest.mark.postgres, pytest.mark.prometheus]

QUERIES = ALERTS / "postgres_exporter" / "queries.yml"
Samples = dict[str, list[tuple[dict[str, str], float]]]
HOUR = 3600.0


def scrape(url: str) -> Samples:
    text = httpx.get(url, timeout=10).text
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


@pytest.fixture(params=ODOO_VERSIONS, ids=lambda v: f"odoo{v}")
def version(request: pytest.FixtureRequest) -> int:
    v: int = request.param
    return v


async def far_from_utc(db: OdooDatabase) -> OdooDatabase:
    """Every session of ``db`` in a zone far from UTC: Odoo's nextcall and call_at are
    UTC without a zone, so a delay computed in the session's zone would be hours off."""
    admin = await asyncpg.connect(db.superuser_dsn)
    try:
        await admin.execute(f"ALTER DATABASE \"{db.name}\" SET timezone TO 'America/New_York'")
    finally:
        await admin.close()
    return db


@pytest.fixture
async def odoo_db(shipped_pg: ShippedCluster, version: int) -> AsyncIterator[OdooDatabase]:
    """An Odoo ``version`` database; dropped afterwards."""
    async with odoo_database(shipped_pg, version, prefix="odoo_exporter") as db:
        yield await far_from_utc(db)


@pytest.fixture
async def bare_db(shipped_pg: ShippedCluster) -> AsyncIterator[OdooDatabase]:
    """A database of the odoo template before Odoo initialised it: no ir_cron."""
    async with odoo_database(shipped_pg, 18, tables=False, prefix="odoo_bare") as db:
        yield await far_from_utc(db)


def metrics_url(factory: PostgresExporterFactory, db: OdooDatabase) -> str:
    """postgres_exporter with the shipped queries, as the postgres_exporter role on
    ``db``; stopped by the fixture at teardown."""
    return f"{factory.start(db.exporter_dsn, queries=QUERIES).url}/metrics"


def cron_delays(samples: Samples) -> dict[int, tuple[dict[str, str], float]]:
    return {
        int(labels["cron_id"]): (labels, value)
        for labels, value in samples.get("odoo_cron_delay_seconds", [])
    }


async def scrape_delays(url: str, db: OdooDatabase) -> dict[int, tuple[dict[str, str], float]]:
    """The cron delays of one scrape, which must not have failed; every series carries
    ``db``'s name."""
    samples = await asyncio.to_thread(scrape, url)
    assert samples["pg_up"][0][1] == 1
    assert samples["pg_exporter_last_scrape_error"][0][1] == 0
    delays = cron_delays(samples)
    assert all(labels["datname"] == db.name for labels, _ in delays.values())
    return delays


async def test_without_ir_cron_there_are_no_cron_rows_and_no_scrape_error(
    bare_db: OdooDatabase, postgres_exporter: PostgresExporterFactory
) -> None:
    """On a database that is not (yet) Odoo's, odoo_cron returns nothing and the scrape
    does not fail (a plain SELECT FROM ir_cron would set pg_exporter_last_scrape_error)."""
    url = metrics_url(postgres_exporter, bare_db)
    assert await scrape_delays(url, bare_db) == {}


async def test_cron_delay_follows_nextcall_for_ready_jobs(
    odoo_db: OdooDatabase, postgres_exporter: PostgresExporterFactory
) -> None:
    """odoo_cron_delay_seconds{datname, cron_id, cron_name}: ~2700 for a job 45m
    overdue, 0 for one not due, no series for an inactive one nor (16, 17) for an
    active one with numbercall 0 (Odoo's cron never runs either); a job with calls
    left counts. cron_name is the plain (en_US) name whether the column is jsonb (16)
    or varchar, with control characters turned into spaces."""
    version = odoo_db.version
    odoo = await asyncpg.connect(odoo_db.odoo_dsn)
    try:
        overdue = await insert_job(
            odoo, version, "Mail: Email Queue Manager", nextcall_in=-0.75 * HOUR
        )
        future = await insert_job(odoo, version, "Calendar: Event Reminder", nextcall_in=HOUR)
        await insert_job(odoo, version, "Disabled job", nextcall_in=-3 * HOUR, active=False)
        odd_name = await insert_job(odoo, version, "Line\nbreak\tand tab", nextcall_in=HOUR)
        expected = {overdue, future, odd_name}
        if version < 18:
            await insert_job(odoo, version, "No calls left", nextcall_in=-3 * HOUR, numbercall=0)
            expected.add(
                await insert_job(
                    odoo, version, "Three calls left", nextcall_in=-2 * HOUR, numbercall=3
                )
            )
    finally:
        await odoo.close()

    delays = await scrape_delays(metrics_url(postgres_exporter, odoo_db), odoo_db)
    assert set(delays) == expected
    labels, value = delays[overdue]
    assert labels["cron_id"] == str(overdue)
    assert labels["cron_name"] == "Mail: Email Queue Manager"
    assert 2690 < value < 2800
    assert delays[future] == ({**delays[future][0], "cron_name": "Calendar: Event Reminder"}, 0)
    assert delays[odd_name][0]["cron_name"] == "Line break and tab"
    if version < 18:
        (three_left,) = expected - {overdue, future, odd_name}
        assert 7190 < delays[three_left][1] < 7300


async def test_cron_delay_counts_from_the_oldest_due_trigger(
    odoo_db: OdooDatabase, postgres_exporter: PostgresExporterFactory
) -> None:
    """A job Odoo runs because of a trigger is as late as its oldest due trigger: ~3600
    for a job due in an hour but triggered for an hour ago; the earlier of the two for
    a job both overdue (2h) and triggered (1h ago): ~7200; 0 for a job whose only
    trigger is still to come; and no series for an inactive job, triggered or not."""
    version = odoo_db.version
    odoo = await asyncpg.connect(odoo_db.odoo_dsn)
    try:
        triggered = await insert_job(odoo, version, "Mail: Email Queue Manager", nextcall_in=HOUR)
        await add_trigger(odoo, triggered, call_in=-HOUR)
        await add_trigger(odoo, triggered, call_in=-0.5 * HOUR)
        both = await insert_job(odoo, version, "Both", nextcall_in=-2 * HOUR)
        await add_trigger(odoo, both, call_in=-HOUR)
        later = await insert_job(odoo, version, "Triggered later", nextcall_in=HOUR)
        await add_trigger(odoo, later, call_in=0.5 * HOUR)
        inactive = await insert_job(odoo, version, "Inactive", nextcall_in=HOUR, active=False)
        await add_trigger(odoo, inactive, call_in=-HOUR)
    finally:
        await odoo.close()

    delays = await scrape_delays(metrics_url(postgres_exporter, odoo_db), odoo_db)
    assert set(delays) == {triggered, both, later}
    assert 3590 < delays[triggered][1] < 3700
    assert delays[triggered][0]["cron_name"] == "Mail: Email Queue Manager"
    assert 7190 < delays[both][1] < 7300
    assert delays[later][1] == 0


async def test_blocked_sessions_count_and_wait(
    bare_db: OdooDatabase, postgres_exporter: PostgresExporterFactory
) -> None:
    """With one odoo session waiting on another's table lock, pg_blocked_sessions_count
    is 1 and max_wait_seconds grows, for that database only; back to 0 once released."""
    url = metrics_url(postgres_exporter, bare_db)

    def mine(samples: Samples, name: str) -> float:
        (value,) = [v for labels, v in samples[name] if labels["datname"] == bare_db.name]
        return value

    before = await asyncio.to_thread(scrape, url)
    assert mine(before, "pg_blocked_sessions_count") == 0
    assert mine(before, "pg_blocked_sessions_max_wait_seconds") == 0
    async with Sessions(bare_db.odoo_dsn) as s:
        holder = await s.open(application_name="holder")
        await holder.execute("CREATE TABLE t (id int)")
        await holder.execute("BEGIN")
        await holder.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        waiter = await s.open(application_name="waiter")
        task = s.background(waiter, "SELECT * FROM t")
        await wait_blocked(holder, waiter.get_server_pid())

        def waited() -> Samples | None:
            got = scrape(url)
            return got if mine(got, "pg_blocked_sessions_max_wait_seconds") >= 1 else None

        during = await asyncio.to_thread(
            wait_until,
            waited,
            timeout=20,
            interval=0.5,
            what="a lock wait of 1s in the exporter's metrics",
        )
        assert mine(during, "pg_blocked_sessions_count") == 1
        await holder.execute("ROLLBACK")
        await asyncio.wait_for(task, 10)
    after = await asyncio.to_thread(scrape, url)
    assert mine(after, "pg_blocked_sessions_count") == 0
    assert mine(after, "pg_blocked_sessions_max_wait_seconds") == 0
