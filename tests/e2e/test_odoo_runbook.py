"""The Odoo runbook (../shared/runbooks/odoo-auto-healing.md) end to end, on real components.

Each scenario breaks a real thing the way Odoo breaks, lets the shipped alert rule
(alerts/*.rules.yml, sped up: tests/support/odoo_loop.py TEST_SPEED) fire in a real
Prometheus from real exporters (postgres_exporter with alerts/postgres_exporter/
queries.yml, blackbox exporter, the cAdvisor stand-in), lets a real Alertmanager post
it to a real ``healer serve`` running the shipped rule of examples/odoo/healer.yml,
and ends on the heal's outcome in the journal (GET /api/v1/heals) and on the state of
the world: which sessions and containers survived.

Phase timings (fault -> pending -> firing -> webhook -> check -> act -> outcome) are
printed per scenario; run with ``-s`` to see them.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.support import ContainerFactory, Sessions, scratch_database, wait_blocked
from tests.support import odoo as ir_cron
from tests.support.exporters import (
    BlackboxExporterFactory,
    CadvisorFactory,
    PostgresExporterFactory,
)
from tests.support.odoo_loop import (
    EXPORTER_QUERIES,
    OdooLoop,
    RuleTweak,
    shipped_rule,
    start_odoo_loop,
)
from tests.support.odoo_standins import start_leaky_workers, start_odoo_web, started_at
from tests.support.pgserver import private_postgres
from tests.support.postgres import scratch_role, with_user

pytestmark = [pytest.mark.e2e, pytest.mark.prometheus]

StartLoop = Callable[..., OdooLoop]


@pytest.fixture
def start_loop(tmp_path: Path, prometheus, alertmanager, healer_process) -> StartLoop:
    return partial(start_odoo_loop, workdir=tmp_path, prometheus=prometheus,
                   alertmanager=alertmanager, healer=healer_process)


def report(name: str, loop: OdooLoop, heal: dict[str, Any], fault_at: float) -> None:
    """Print the phase timings (seconds after the fault) of one scenario."""
    timings = loop.timings(heal, fault_at)
    acted = [e["data"].get("summary") for e in heal["timeline"] if e["kind"] == "act"]
    print(f"\n[timings] {name}: {json.dumps(timings)} outcome={heal['outcome']} "
          f"durations={json.dumps(heal.get('durations'))} act={acted}")


def events(heal: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["data"] for e in heal["timeline"] if e["kind"] == kind]


def terminated_pids(heal: dict[str, Any]) -> list[int]:
    return sorted(d["pid"] for d in events(heal, "terminated"))


def database_name(dsn: str) -> str:
    return dsn.rsplit("/", 1)[1].split("?", 1)[0]


def shipped_database(alert: str) -> str:
    """The ``databases:`` name the shipped rule for ``alert`` acts on."""
    return str(shipped_rule(alert)["params"]["database"])


async def backends(dsn: str) -> dict[int, dict[str, Any]]:
    """pid -> {state, application_name} of every backend of the server, read fresh."""
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        rows = await conn.fetch("SELECT pid, state, application_name FROM pg_stat_activity"
                                " WHERE pid <> pg_backend_pid()")
    finally:
        await conn.close()
    return {r["pid"]: dict(r) for r in rows}


# --- Cron Job Jam -----------------------------------------------------------------------

async def run_scheduler(worker: ir_cron.CronWorker, jobs: list[int], stop: asyncio.Event) -> int:
    """Odoo's cron scheduler in small: every 0.2 s, take each due job as Odoo does (FOR NO
    KEY UPDATE SKIP LOCKED: a locked job is skipped, not waited for) and run it. Bounded:
    ends on ``stop`` or after two minutes. Returns how many jobs it ran."""
    runs = 0
    for _ in range(600):
        if stop.is_set():
            break
        for job in jobs:
            runs += await worker.run_once(job)
        await asyncio.sleep(0.2)
    return runs


@pytest.mark.postgres
@pytest.mark.parametrize("version", ir_cron.ODOO_VERSIONS)
async def test_cron_jam_lock_holder_terminated_then_job_runs(
        start_loop: StartLoop, postgres_exporter: PostgresExporterFactory,
        version: int) -> None:
    """A cron worker hangs inside its job, holding the ir_cron row in an idle transaction;
    the scheduler skips the locked job, its delay (postgres_exporter's odoo_cron query)
    crosses the threshold and OdooCronStuck fires; healer terminates that worker's
    session and no other; the scheduler then takes the job, the delay clears, and the
    heal ends `recovered` (Odoo 16, 17 and 18 ir_cron tables)."""
    rule = shipped_rule("OdooCronStuck")["name"]
    async with scratch_role("LOGIN") as role, scratch_database() as dsn:
        datname = database_name(dsn)
        admin = await asyncpg.connect(dsn, timeout=5)
        try:
            await ir_cron.create_ir_cron(admin, version)
            await admin.execute("CREATE TABLE res_partner (id int PRIMARY KEY, name text);"
                                "INSERT INTO res_partner VALUES (1, 'Azure Interior')")
            await admin.execute(f'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{role}"')
        finally:
            await admin.close()
        pg = postgres_exporter.start(dsn, queries=EXPORTER_QUERIES)
        loop = await asyncio.to_thread(
            start_loop, alerts=["OdooCronStuck"], scrape_configs=[pg.scrape_config("postgres")],
            tweaks=[RuleTweak("OdooCronStuck", params={"overdue": "2s", "min_held": "1s"},
                              match=[f'datname="{datname}"'])],
            databases={shipped_database("OdooCronStuck"): {"dsn": dsn}},
            allow=[{"kind": "postgres", "datname": datname, "user": role}])

        async with Sessions(with_user(dsn, role)) as s:
            admin = await s.open(dsn=dsn, application_name="test-admin")
            web = await s.open(application_name="odoo-web")  # long transaction elsewhere
            await web.execute("BEGIN")
            await web.execute("UPDATE res_partner SET name = 'Deco Addict' WHERE id = 1")
            stuck = ir_cron.CronWorker(await s.open(application_name="odoo-cron"), version)
            scheduler = ir_cron.CronWorker(await s.open(application_name="odoo-cron"), version)
            # Two jobs fall due now; a worker takes the first and hangs inside it (idle in
            # transaction, the row locked) while the scheduler keeps running.
            fault_at = time.time()
            jammed = await ir_cron.insert_job(admin, version, "Mail: Email Queue Manager",
                                              nextcall_in=0)
            other = await ir_cron.insert_job(admin, version, "Calendar: Event Reminder",
                                             nextcall_in=0)
            assert await stuck.take(jammed)
            stop = asyncio.Event()
            runner = asyncio.ensure_future(run_scheduler(scheduler, [jammed, other], stop))
            try:
                heal = await asyncio.to_thread(loop.wait_for_heal, rule, 60)
            finally:
                stop.set()
                runs = await asyncio.wait_for(runner, 10)
            report(f"cron jam (Odoo {version})", loop, heal, fault_at)

            assert heal["outcome"] == "recovered", (heal["reason"], loop.healer.log_tail())
            assert terminated_pids(heal) == [stuck.pid]
            assert heal["labels"]["cron_id"] == str(jammed)
            assert await web.fetchval("SELECT name FROM res_partner WHERE id = 1") == \
                "Deco Addict", "the unrelated transaction must survive"
            assert runs >= 2, "the scheduler ran the other job, then the freed one"
            job = await ir_cron.read_job(scheduler.conn, jammed)
            assert job["scheduled"] and job["lastcall"] is not None
            assert loop.value(f'odoo_cron_delay_seconds{{cron_id="{jammed}"}}') == 0


# --- Database Deadlock ------------------------------------------------------------------

LOCK_TABLE = """
CREATE TABLE sale_order (id int PRIMARY KEY, amount int NOT NULL DEFAULT 0);
INSERT INTO sale_order (id) SELECT generate_series(1, 4);
"""


def _update_then(first: int, second: int) -> str:
    """One statement that locks row ``first``, then waits for row ``second``."""
    return ("DO $$ BEGIN "
            f"UPDATE sale_order SET amount = amount + 1 WHERE id = {first}; "
            f"UPDATE sale_order SET amount = amount + 1 WHERE id = {second}; END $$")


class LockJam:
    """root (idle in transaction, holds row 1) <- a (holds 2, wants 1) <- b (holds 3,
    wants 2) <- c (wants 3): a lock tree four sessions deep, plus an unrelated session
    busy with a long statement. All run as a plain (non-superuser) role."""

    def __init__(self, sessions: Sessions, observer: asyncpg.Connection) -> None:
        self.s = sessions
        self.observer = observer
        self.waiters: list[asyncio.Task[Any]] = []
        self.pids: dict[str, int] = {}

    async def build(self) -> float:
        """Build the tree; returns when the first waiter started to wait (the fault)."""
        root = await self.s.open(application_name="odoo-root")
        await root.execute("BEGIN")
        await root.execute("UPDATE sale_order SET amount = amount + 1 WHERE id = 1")
        self.pids["root"] = root.get_server_pid()
        fault_at = 0.0
        for name, sql in (("a", _update_then(2, 1)), ("b", _update_then(3, 2)),
                          ("c", "UPDATE sale_order SET amount = amount + 1 WHERE id = 3")):
            conn = await self.s.open(application_name=f"odoo-worker-{name}")
            self.pids[name] = conn.get_server_pid()
            self.waiters.append(self.s.background(conn, sql))
            await wait_blocked(self.observer, self.pids[name])
            fault_at = fault_at or time.time()
        busy = await self.s.open(application_name="odoo-report")
        self.pids["busy"] = busy.get_server_pid()
        self.s.background(busy, "SELECT pg_sleep(120)")
        return fault_at

    async def blocked_by(self) -> dict[str, list[int]]:
        rows = await self.observer.fetch(
            "SELECT pid, pg_blocking_pids(pid) AS by FROM pg_stat_activity WHERE pid = ANY($1)",
            list(self.pids.values()))
        names = {pid: name for name, pid in self.pids.items()}
        return {names[r["pid"]]: list(r["by"]) for r in rows}


@pytest.fixture
async def lock_db() -> AsyncIterator[tuple[str, str]]:
    """(superuser DSN, the same database as a plain role) with the sale_order table."""
    async with scratch_role("LOGIN") as role, scratch_database() as dsn:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            await conn.execute(LOCK_TABLE)
            await conn.execute(f'GRANT ALL ON sale_order TO "{role}"')
        finally:
            await conn.close()
        yield dsn, with_user(dsn, role)


def _deadlock_loop(start_loop: StartLoop, exporter: PostgresExporterFactory, dsn: str,
                   **database: Any) -> OdooLoop:
    datname = database_name(dsn)
    pg = exporter.start(dsn, queries=EXPORTER_QUERIES)
    return start_loop(
        alerts=["OdooDbDeadlock"], scrape_configs=[pg.scrape_config("postgres")],
        # The server is shared: only this test's database is the rule's business.
        tweaks=[RuleTweak("OdooDbDeadlock", params={"min_wait": "2s"},
                          match=[f'datname="{datname}"'])],
        databases={shipped_database("OdooDbDeadlock"): {"dsn": dsn, **database}},
        allow=[{"kind": "postgres", "datname": datname}])


@pytest.mark.postgres
async def test_db_lock_tree_only_the_root_blocker_is_terminated(
        start_loop: StartLoop, postgres_exporter: PostgresExporterFactory,
        lock_db: tuple[str, str]) -> None:
    """A lock tree four sessions deep makes OdooDbDeadlock fire; healer terminates the
    root blocker and nothing else: the three waiters complete their updates, the unrelated
    busy session keeps running, and the heal ends `recovered`."""
    dsn, user_dsn = lock_db
    loop = await asyncio.to_thread(_deadlock_loop, start_loop, postgres_exporter, dsn)
    rule = shipped_rule("OdooDbDeadlock")["name"]
    async with Sessions(user_dsn) as s:
        jam = LockJam(s, await s.open(dsn=dsn, application_name="test-observer"))
        fault_at = await jam.build()
        assert await jam.blocked_by() == {"root": [], "a": [jam.pids["root"]],
                                          "b": [jam.pids["a"]], "c": [jam.pids["b"]],
                                          "busy": []}

        heal = await asyncio.to_thread(loop.wait_for_heal, rule, 60)
        report("db lock tree", loop, heal, fault_at)

        assert heal["outcome"] == "recovered", (heal["reason"], loop.healer.log_tail())
        assert terminated_pids(heal) == [jam.pids["root"]]
        await asyncio.wait_for(asyncio.gather(*jam.waiters), 10)  # every waiter completed
        alive = await backends(dsn)
        assert jam.pids["root"] not in alive
        assert alive[jam.pids["busy"]]["state"] == "active"
        amounts = dict(await jam.observer.fetch("SELECT id, amount FROM sale_order"))
        assert amounts == {1: 1, 2: 2, 3: 2, 4: 0}, "the root's update rolled back, all others"
        assert heal["targets"] == [f"postgres:{shipped_database('OdooDbDeadlock')}/"
                                   f"{jam.pids['root']}"]


@pytest.mark.postgres
async def test_db_lock_tree_with_protected_root_is_refused_untouched(
        start_loop: StartLoop, postgres_exporter: PostgresExporterFactory,
        lock_db: tuple[str, str]) -> None:
    """When the root blocker's application is protected, OdooDbDeadlock still fires but the
    heal ends `refused` and no session is terminated: the root still holds its lock and
    every waiter still waits."""
    dsn, user_dsn = lock_db
    loop = await asyncio.to_thread(
        _deadlock_loop, start_loop, postgres_exporter, dsn,
        protect={"application_names": ["odoo-root"]})
    rule = shipped_rule("OdooDbDeadlock")["name"]
    async with Sessions(user_dsn) as s:
        jam = LockJam(s, await s.open(dsn=dsn, application_name="test-observer"))
        fault_at = await jam.build()

        heal = await asyncio.to_thread(loop.wait_for_heal, rule, 60)
        report("db lock tree, protected root", loop, heal, fault_at)

        assert heal["outcome"] == "refused", (heal["reason"], loop.healer.log_tail())
        assert "protected" in heal["reason"]
        assert terminated_pids(heal) == []
        assert "act" not in [e["kind"] for e in heal["timeline"]]
        assert set(await backends(dsn)) >= set(jam.pids.values()), "a session was terminated"
        assert await jam.blocked_by() == {"root": [], "a": [jam.pids["root"]],
                                          "b": [jam.pids["a"]], "c": [jam.pids["b"]],
                                          "busy": []}
        assert not any(t.done() for t in jam.waiters)
        assert loop.firing("OdooDbDeadlock"), "nothing was healed: the alert still fires"


# --- Memory Leak ------------------------------------------------------------------------

@pytest.mark.docker
def test_memory_leak_rolling_restart_frees_memory(
        start_loop: StartLoop, containers: ContainerFactory, cadvisor: CadvisorFactory) -> None:
    """A worker of one of the shipped rule's Odoo services leaks past 80% of its 64 MiB
    limit while a worker of another stays small; OdooMemoryLeak fires from the
    cAdvisor-named series; healer restarts the services' workers one at a time and the
    heal ends `recovered` with the leak gone."""
    project = f"odoo-{uuid.uuid4().hex[:8]}"
    params = shipped_rule("OdooMemoryLeak")["params"]
    # A rule naming its services restarts all of them: one worker in the first and one
    # in the last. A rule taking the service from the alert restarts its replicas: two.
    named = [s for s in params.get("services", []) if "{{" not in s]
    services = [named[0], named[-1]] if named else ["odoo", "odoo"]
    leaky, healthy = start_leaky_workers(containers, project=project, services=services,
                                         mem_limit_mib=64, leak_mib=56, step_s=0.05)
    exporter = cadvisor.start({"com.docker.compose.project": project})
    loop = start_loop(
        alerts=["OdooMemoryLeak"], scrape_configs=[exporter.scrape_config("cadvisor")],
        tweaks=[RuleTweak("OdooMemoryLeak", params={"project": project} if "project" in params
                          else {}, match=[f'compose_project="{project}"'])],
        databases={}, allow=[{"kind": "docker", "compose_project": project,
                              "compose_service": "odoo*"}])
    before = {w.name: started_at(w.container) for w in (leaky, healthy)}

    fault_at = time.time()
    leaky.start_leak()
    heal = loop.wait_for_heal(shipped_rule("OdooMemoryLeak")["name"], 60)
    report("memory leak", loop, heal, fault_at)

    assert heal["outcome"] == "recovered", (heal["reason"], loop.healer.log_tail())
    assert heal["labels"]["name"] == leaky.name
    assert leaky.leaked_mib() == 0
    assert leaky.working_set_mib() < 0.8 * 64
    restarted = [e["container"] for e in events(heal, "restarted")]
    assert sorted(restarted) == sorted([leaky.name, healthy.name]), "one rollout over both"
    for worker in (leaky, healthy):
        assert started_at(worker.container) != before[worker.name]
        worker.container.reload()
        assert worker.container.status == "running"


# --- Bus/Longpoll Stalls ----------------------------------------------------------------

@pytest.mark.docker
def test_longpoll_stall_is_healed_by_restarting_the_longpoll_service(
        start_loop: StartLoop, containers: ContainerFactory,
        blackbox_exporter: BlackboxExporterFactory) -> None:
    """The Odoo stand-in's longpoll endpoint hangs; the blackbox probe fails and
    OdooLongpollLatencyHigh fires; healer restarts the longpoll service and the heal ends
    `recovered` with the endpoint answering again."""
    project = f"odoo-{uuid.uuid4().hex[:8]}"
    web = start_odoo_web(containers, project=project, service="odoo")
    blackbox = blackbox_exporter.start()
    params = shipped_rule("OdooLongpollLatencyHigh")["params"]
    loop = start_loop(
        alerts=["OdooLongpollLatencyHigh"],
        scrape_configs=[blackbox.probe_config(
            "odoo-longpoll", [web.longpoll_url],
            labels={"compose_project": project, "compose_service": "odoo"})],
        tweaks=[RuleTweak("OdooLongpollLatencyHigh",
                          params={"project": project} if "project" in params else {},
                          match=[f'compose_project="{project}"'])],
        databases={}, allow=[{"kind": "docker", "compose_project": project,
                              "compose_service": "odoo*"}])
    loop.wait_for('probe_success{job="odoo-longpoll"} == 1', what="a passing probe")
    before = started_at(web.container)

    fault_at = time.time()
    web.stall()
    heal = loop.wait_for_heal(shipped_rule("OdooLongpollLatencyHigh")["name"], 60)
    report("longpoll stall", loop, heal, fault_at)

    assert heal["outcome"] == "recovered", (heal["reason"], loop.healer.log_tail())
    assert started_at(web.container) != before
    assert web.poll() is not None
    assert heal["targets"] == [f"docker:{web.name}"]


# --- Too many connections ---------------------------------------------------------------

@pytest.mark.postgres
async def test_too_many_connections_idle_sessions_terminated_active_kept(
        start_loop: StartLoop, postgres_exporter: PostgresExporterFactory) -> None:
    """On a private server (max_connections 20, so the shipped 80% threshold is reached
    without starving the shared one), twelve idle Odoo sessions and two busy ones make
    PostgresTooManyConnections fire; healer terminates idle sessions only, the busy ones
    keep running, and the heal ends `recovered`."""
    with private_postgres(max_connections=20) as server:
        admin = await asyncpg.connect(server.dsn, timeout=5)
        try:
            await admin.execute("CREATE ROLE odoo LOGIN")
            await admin.execute("CREATE DATABASE odoo OWNER odoo")
        finally:
            await admin.close()
        dsn = server.dsn.rsplit("/", 1)[0] + "/odoo"
        pg = postgres_exporter.start(dsn, queries=EXPORTER_QUERIES)
        loop = await asyncio.to_thread(
            start_loop, alerts=["PostgresTooManyConnections"],
            scrape_configs=[pg.scrape_config("postgres")],
            tweaks=[RuleTweak("PostgresTooManyConnections", params={"min_idle": "1s"})],
            # One heal may end the whole surplus here; the cap has its own tests.
            databases={shipped_database("PostgresTooManyConnections"): {
                "dsn": dsn, "max_terminations": 20}},
            allow=[{"kind": "postgres"}])
        async with Sessions(with_user(dsn, "odoo")) as s:
            fault_at = time.time()
            idle = []
            for _ in range(12):
                conn = await s.open(application_name="odoo-worker")
                await conn.execute("SELECT 1")
                idle.append(conn.get_server_pid())
            # The busy ones come last, so every idle one is idle since before the alert.
            busy = []
            for _ in range(2):
                conn = await s.open(application_name="odoo-report")
                busy.append(conn.get_server_pid())
                s.background(conn, "SELECT pg_sleep(120)")

            heal = await asyncio.to_thread(
                loop.wait_for_heal, shipped_rule("PostgresTooManyConnections")["name"], 60)
            report("too many connections", loop, heal, fault_at)

            assert heal["outcome"] == "recovered", (heal["reason"], loop.healer.log_tail())
            killed = terminated_pids(heal)
            assert killed == sorted(idle), "exactly the idle sessions are terminated"
            alive = await backends(server.dsn)
            assert not set(killed) & set(alive)
            assert all(alive[pid]["state"] == "active" for pid in busy)
