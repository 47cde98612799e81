"""alerts/postgres_exporter/queries.yml through the real postgres_exporter against a
real database: the metrics the Odoo alerts read come out, with the right labels and
values, for both ir_cron schemas, without ir_cron at all, and for a real lock wait."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import Sessions, scratch_database, wait_blocked
from tests.support.env import require_service, wait_until
from tests.support.processes import ManagedProcess, find_binary
from tests.support.stack import ALERTS

pytestmark = [pytest.mark.postgres, pytest.mark.prometheus]

QUERIES = ALERTS / "postgres_exporter" / "queries.yml"
Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(url: str) -> Samples:
    text = httpx.get(url, timeout=10).text
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


@pytest.fixture
async def db_dsn() -> AsyncIterator[str]:
    """A scratch database whose sessions run in a zone far from UTC: Odoo's nextcall is
    UTC without a zone, so a delay computed in the session's zone would be hours off."""
    async with scratch_database(prefix="healer_alerts") as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f"ALTER DATABASE \"{dsn.rsplit('/', 1)[1]}\" "
                               "SET timezone TO 'America/New_York'")
        finally:
            await conn.close()
        yield dsn


@pytest.fixture
def exporter(db_dsn: str, tmp_path: Path) -> Iterator[str]:
    """postgres_exporter with the queries file, DSN on the scratch database; yields the
    /metrics URL."""
    exe = find_binary(Path("/usr/bin/prometheus-postgres-exporter"), "postgres_exporter")
    if exe is None:
        require_service("postgres_exporter", "Debian package prometheus-postgres-exporter")
    sep = "&" if "?" in db_dsn else "?"
    env = {**os.environ, "DATA_SOURCE_NAME": f"{db_dsn}{sep}sslmode=disable"}
    proc = ManagedProcess(
        "postgres-exporter",
        lambda port: [str(exe), f"--web.listen-address=127.0.0.1:{port}",
                      f"--extend.query-path={QUERIES}"],
        workdir=tmp_path, ready_path="/metrics", env=env)
    proc.start()
    try:
        yield f"{proc.url}/metrics"
    finally:
        proc.stop()


def cron_delays(samples: Samples) -> dict[str, tuple[dict[str, str], float]]:
    return {labels["cron_id"]: (labels, value)
            for labels, value in samples.get("odoo_cron_delay_seconds", [])}


async def make_ir_cron(dsn: str, name_type: str) -> None:
    """The ir_cron columns the query reads, as Odoo 16 (jsonb) or 17/18 (varchar) has them,
    with an overdue, a future and an inactive job. nextcall is UTC, as Odoo stores it."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"""
            CREATE TABLE ir_cron (id serial PRIMARY KEY, cron_name {name_type},
                                  nextcall timestamp NOT NULL, active boolean,
                                  interval_number int, lastcall timestamp)
        """)
        name = (lambda n: f"""'{{"en_US": "{n}", "fr_FR": "x"}}'""") if name_type == "jsonb" \
            else (lambda n: f"'{n}'")
        await conn.execute(f"""
            INSERT INTO ir_cron (id, cron_name, nextcall, active) VALUES
              (7, {name("Mail: Email Queue Manager")},
                  (now() AT TIME ZONE 'UTC') - interval '45 minutes', true),
              (8, {name("Calendar: Event Reminder")},
                  (now() AT TIME ZONE 'UTC') + interval '1 hour', true),
              (9, {name("Disabled job")},
                  (now() AT TIME ZONE 'UTC') - interval '3 hours', false)
        """)
    finally:
        await conn.close()


async def test_without_ir_cron_there_are_no_cron_rows_and_no_scrape_error(
        db_dsn: str, exporter: str) -> None:
    """On a database that is not (yet) Odoo's, odoo_cron returns nothing and the scrape
    does not fail (a plain SELECT FROM ir_cron would set pg_exporter_last_scrape_error)."""
    samples = await asyncio.to_thread(scrape, exporter)
    assert samples["pg_up"][0][1] == 1
    assert "odoo_cron_delay_seconds" not in samples
    assert samples["pg_exporter_last_scrape_error"][0][1] == 0


@pytest.mark.parametrize("name_type", ["varchar", "jsonb"])
async def test_cron_delay_per_active_job(db_dsn: str, exporter: str, name_type: str) -> None:
    """odoo_cron_delay_seconds{datname, cron_id, cron_name}: ~2700 for the job 45m
    overdue, 0 for the future one, nothing for the inactive one; cron_name is the plain
    (en_US) name whether the column is varchar (Odoo 17/18) or jsonb (Odoo 16)."""
    await make_ir_cron(db_dsn, name_type)
    samples = await asyncio.to_thread(scrape, exporter)
    delays = cron_delays(samples)
    assert set(delays) == {"7", "8"}
    labels, value = delays["7"]
    datname = db_dsn.rsplit("/", 1)[1].split("?")[0]
    assert labels["datname"] == datname
    assert labels["cron_name"] == "Mail: Email Queue Manager"
    assert 2690 < value < 2760
    assert delays["8"] == ({**delays["8"][0], "cron_name": "Calendar: Event Reminder"}, 0)
    assert samples["pg_exporter_last_scrape_error"][0][1] == 0


async def test_blocked_sessions_count_and_wait(db_dsn: str, exporter: str) -> None:
    """With one session waiting on another's table lock, pg_blocked_sessions_count is 1
    and max_wait_seconds grows, for that database only; back to 0 once released."""
    datname = db_dsn.rsplit("/", 1)[1].split("?")[0]

    def mine(samples: Samples, name: str) -> float:
        (value,) = [v for labels, v in samples[name] if labels["datname"] == datname]
        return value

    before = await asyncio.to_thread(scrape, exporter)
    assert mine(before, "pg_blocked_sessions_count") == 0
    assert mine(before, "pg_blocked_sessions_max_wait_seconds") == 0
    async with Sessions(db_dsn) as s:
        holder = await s.open(application_name="holder")
        await holder.execute("CREATE TABLE t (id int)")
        await holder.execute("BEGIN")
        await holder.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        waiter = await s.open(application_name="waiter")
        task = s.background(waiter, "SELECT * FROM t")
        await wait_blocked(holder, waiter.get_server_pid())

        def waited() -> Samples | None:
            got = scrape(exporter)
            return got if mine(got, "pg_blocked_sessions_max_wait_seconds") >= 1 else None

        during = await asyncio.to_thread(wait_until, waited, timeout=20, interval=0.5,
                                         what="a lock wait of 1s in the exporter's metrics")
        assert mine(during, "pg_blocked_sessions_count") == 1
        await holder.execute("ROLLBACK")
        await asyncio.wait_for(task, 10)
    after = await asyncio.to_thread(scrape, exporter)
    assert mine(after, "pg_blocked_sessions_count") == 0
    assert mine(after, "pg_blocked_sessions_max_wait_seconds") == 0
