"""The Odoo runbook's faults, each on its own closed loop: shared by the end-to-end tests
(tests/e2e/test_odoo_runbook.py, which assert on the outcome and the world) and the
whole-loop benchmark (bench/loop.py, which times the phases).

    with odoo_world(workdir, containers=factory) as world:   # stops all it started
        async with cron_jam(world, version=17) as scenario:    # the world, before the fault
            fault_at = await scenario.inject()                  # break it (epoch seconds)
            heal = await scenario.wait_for_heal()               # the finished heal
            scenario.loop.timings(heal, fault_at)               # seconds to each phase

Every scenario context manager removes what it created (databases, roles, sessions,
a private PostgreSQL server) on exit, even after a failure; processes and containers
belong to the :class:`OdooWorld` and go when it closes. :data:`SCENARIOS` lists one
healing scenario per runbook fault, in the runbook's order.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import asyncpg

from tests.support.scenarios import odoo as ir_cron
from tests.support.scenarios.odoo_loop import (
    EXPORTER_QUERIES,
    OdooLoop,
    RuleTweak,
    shipped_rule,
    start_odoo_loop,
)
from tests.support.servers.containers import ContainerFactory
from tests.support.servers.exporters import (
    BlackboxExporterFactory,
    CadvisorFactory,
    PostgresExporterFactory,
)
from tests.support.servers.odoo_roles import ShippedCluster, odoo_database, shipped_cluster
from tests.support.servers.odoo_standins import (
    LeakyWorker,
    OdooWeb,
    start_leaky_workers,
    start_odoo_web,
    started_at,
)
from tests.support.servers.pgserver import private_postgres
from tests.support.servers.postgres import (
    Sessions,
    scratch_database,
    scratch_role,
    wait_blocked,
    with_database,
    with_user,
)
from tests.support.servers.processes import AlertmanagerFactory, HealerFactory, PrometheusFactory

# --- the components --------------------------------------------------------------------


@dataclass
class OdooWorld:
    """The process factories a scenario starts its loop and exporters with, and the
    container factory of the scenarios that need Docker."""

    workdir: Path
    prometheus: PrometheusFactory
    alertmanager: AlertmanagerFactory
    healer: HealerFactory
    postgres_exporter: PostgresExporterFactory
    blackbox_exporter: BlackboxExporterFactory
    cadvisor: CadvisorFactory
    containers: ContainerFactory | None = None

    def start_loop(self, **kwargs: Any) -> OdooLoop:
        """:func:`start_odoo_loop` on this world's factories."""
        return start_odoo_loop(
            workdir=self.workdir,
            prometheus=self.prometheus,
            alertmanager=self.alertmanager,
            healer=self.healer,
            **kwargs,
        )

    def docker(self) -> ContainerFactory:
        if self.containers is None:
            raise RuntimeError("this scenario runs containers: give the world a ContainerFactory")
        return self.containers


@contextlib.contextmanager
def odoo_world(workdir: Path, *, containers: ContainerFactory | None = None) -> Iterator[OdooWorld]:
    """Fresh factories under ``workdir``; on exit every process they started is stopped
    (healer first) and every container of ``containers`` removed, even after a failure."""
    world = OdooWorld(
        workdir=workdir,
        prometheus=PrometheusFactory(workdir),
        alertmanager=AlertmanagerFactory(workdir),
        healer=HealerFactory(workdir),
        postgres_exporter=PostgresExporterFactory(workdir),
        blackbox_exporter=BlackboxExporterFactory(workdir),
        cadvisor=CadvisorFactory(workdir),
        containers=containers,
    )
    with contextlib.ExitStack() as stack:  # unwinds in reverse: healer is stopped first
        if containers is not None:
            stack.callback(_remove_containers, containers)
        for factory in (
            world.cadvisor,
            world.blackbox_exporter,
            world.postgres_exporter,
            world.prometheus,
            world.alertmanager,
            world.healer,
        ):
            stack.callback(factory.stop_all)
        yield world


def _remove_containers(containers: ContainerFactory) -> None:
    errors = containers.cleanup()
    if errors:
        raise RuntimeError("could not remove containers: " + "; ".join(errors))


# --- the scenarios ---------------------------------------------------------------------


class Scenario:
    """One runbook fault on its own loop, set up and not broken yet."""

    title: ClassVar[str]
    alert: ClassVar[str]

    def __init__(self, loop: OdooLoop) -> None:
        self.loop = loop

    @property
    def rule(self) -> str:
        """The name of the shipped healer rule that heals :attr:`alert`."""
        return str(shipped_rule(self.alert)["name"])

    @property
    def handler(self) -> str:
        return str(shipped_rule(self.alert)["handler"])

    async def inject(self) -> float:
        """Break the thing; returns when the fault began (epoch seconds)."""
        raise NotImplementedError

    async def wait_for_heal(self, timeout: float = 60.0) -> dict[str, Any]:
        """The first heal of :attr:`rule` to reach an outcome, with its timeline."""
        return await asyncio.to_thread(self.loop.wait_for_heal, self.rule, timeout)


def database_name(dsn: str) -> str:
    return dsn.rsplit("/", 1)[1].split("?", 1)[0]


def shipped_database(alert: str) -> str:
    """The ``databases:`` name the shipped rule for ``alert`` acts on."""
    return str(shipped_rule(alert)["params"]["database"])


# --- Cron Job Jam -----------------------------------------------------------------------


async def run_scheduler(worker: ir_cron.CronWorker, jobs: list[int], stop: asyncio.Event) -> int:
    """Odoo's cron scheduler in small: every 0.2 s, take each due job as Odoo does (FOR NO
    KEY UPDATE SKIP LOCKED: a locked job is skipped, not waited for) and run it on its job
    connection. Bounded: ends on ``stop`` or after two minutes. Returns how many jobs it
    ran."""
    runs = 0
    for _ in range(600):
        if stop.is_set():
            break
        for job in jobs:
            runs += await worker.run_once(job)
        await asyncio.sleep(0.2)
    return runs


class CronJam(Scenario):
    """A cron worker hangs inside its job: its job connection stuck in a statement, its
    cron connection holding the ``ir_cron`` row idle in transaction, the thread that
    would reschedule it stuck too. The scheduler keeps running the other jobs; an
    unrelated web transaction holds a lock elsewhere. Odoo's sessions log in as the
    shipped ``odoo`` role, healer and postgres_exporter as theirs."""

    title = "Cron Job Jam"
    alert = "OdooCronStuck"

    def __init__(
        self, loop: OdooLoop, sessions: Sessions, version: int, *, trigger: bool = False
    ) -> None:
        super().__init__(loop)
        self.sessions, self.version, self.trigger = sessions, version, trigger
        self.runs = 0
        self.jammed = self.other = 0
        self._stop = asyncio.Event()
        self._runner: asyncio.Future[int] | None = None
        self._stuck_run: asyncio.Future[bool] | None = None

    async def open_sessions(self) -> None:
        s = self.sessions
        self.admin = await s.open(application_name="test-admin")
        self.web = await s.open(application_name="odoo-web")  # a long transaction elsewhere
        await self.web.execute("BEGIN")
        await self.web.execute("UPDATE res_partner SET name = 'Deco Addict' WHERE id = 1")
        self.stuck = await ir_cron.CronWorker.open(s, self.version)
        self.scheduler = await ir_cron.CronWorker.open(s, self.version)

    async def inject(self) -> float:
        # Two jobs fall due now; a worker takes the first and hangs inside it (the job
        # connection in a statement that does not return, the row locked) while the
        # scheduler keeps running.
        # With ``trigger``, the jammed job is due by a trigger (job._trigger()), its
        # nextcall an hour ahead.
        fault_at = time.time()
        self.jammed = await ir_cron.insert_job(
            self.admin,
            self.version,
            "Mail: Email Queue Manager",
            nextcall_in=3600 if self.trigger else 0,
        )
        if self.trigger:
            await ir_cron.add_trigger(self.admin, self.jammed, call_in=0)
        self.other = await ir_cron.insert_job(
            self.admin, self.version, "Calendar: Event Reminder", nextcall_in=0
        )
        if not await self.stuck.acquire(self.jammed):
            raise RuntimeError(f"the stuck worker could not take job {self.jammed}")
        self._stuck_run = self.stuck.start(
            self.jammed, ir_cron.Work(hang="statement", hang_for=300.0), hung=True
        )
        self._runner = asyncio.ensure_future(
            run_scheduler(self.scheduler, [self.jammed, self.other], self._stop)
        )
        return fault_at

    async def wait_for_heal(self, timeout: float = 60.0) -> dict[str, Any]:
        try:
            return await super().wait_for_heal(timeout)
        finally:
            await self.stop_scheduler()

    async def stuck_run_finished(self) -> bool:
        """Whether the stuck run ever committed its job (waits, bounded, for it to end)."""
        assert self._stuck_run is not None, "inject() first"
        return await asyncio.wait_for(self._stuck_run, 10)

    async def stop_scheduler(self) -> None:
        """Stop the scheduler (bounded); :attr:`runs` is how many jobs it ran."""
        runner, self._runner = self._runner, None
        if runner is not None:
            self._stop.set()
            self.runs = await asyncio.wait_for(runner, 10)

    async def close(self) -> None:
        await self.stop_scheduler()
        if self._stuck_run is not None and not self._stuck_run.done():
            self._stuck_run.cancel()
            await asyncio.gather(self._stuck_run, return_exceptions=True)


@contextlib.asynccontextmanager
async def cron_jam(
    world: OdooWorld,
    *,
    version: int = 17,
    cluster: ShippedCluster | None = None,
    trigger: bool = False,
) -> AsyncIterator[CronJam]:
    """Odoo ``version``'s cron tables in a database of a cluster with the shipped roles
    (``cluster``, else a private one for this scenario), postgres_exporter with the
    shipped queries as its shipped role, the shipped OdooCronStuck rule with healer as
    its shipped role. ``trigger``: the jammed job is due by a trigger, not by nextcall."""
    async with contextlib.AsyncExitStack() as stack:
        if cluster is None:
            cluster = await asyncio.to_thread(stack.enter_context, shipped_cluster())
        db = await stack.enter_async_context(odoo_database(cluster, version))
        owner = await asyncpg.connect(db.odoo_dsn, timeout=5)
        try:
            await owner.execute(
                "CREATE TABLE res_partner (id int PRIMARY KEY, name text);"
                "INSERT INTO res_partner VALUES (1, 'Azure Interior')"
            )
        finally:
            await owner.close()
        pg = world.postgres_exporter.start(db.exporter_dsn, queries=EXPORTER_QUERIES)
        dsn_file = world.workdir / f"healer-dsn-{db.name}"
        dsn_file.write_text(db.healer_dsn + "\n")
        dsn_file.chmod(0o600)
        loop = await asyncio.to_thread(
            world.start_loop,
            alerts=["OdooCronStuck"],
            scrape_configs=[pg.scrape_config("postgres")],
            tweaks=[
                RuleTweak(
                    "OdooCronStuck",
                    params={"overdue": "2s", "min_held": "1s", "sample": "0.5s"},
                    match=[f'datname="{db.name}"'],
                )
            ],
            databases={shipped_database("OdooCronStuck"): {"dsn_file": str(dsn_file)}},
            allow=[{"kind": "postgres", "datname": db.name, "user": "odoo"}],
        )
        sessions = await stack.enter_async_context(Sessions(db.odoo_dsn))
        scenario = CronJam(loop, sessions, version, trigger=trigger)
        stack.push_async_callback(scenario.close)
        await scenario.open_sessions()
        yield scenario


# --- Database Deadlock ------------------------------------------------------------------

LOCK_TABLE = """
CREATE TABLE sale_order (id int PRIMARY KEY, amount int NOT NULL DEFAULT 0);
INSERT INTO sale_order (id) SELECT generate_series(1, 4);
"""


def _update_then(first: int, second: int) -> str:
    """One statement that locks row ``first``, then waits for row ``second``."""
    return (
        "DO $$ BEGIN "
        f"UPDATE sale_order SET amount = amount + 1 WHERE id = {first}; "
        f"UPDATE sale_order SET amount = amount + 1 WHERE id = {second}; END $$"
    )


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
        for name, sql in (
            ("a", _update_then(2, 1)),
            ("b", _update_then(3, 2)),
            ("c", "UPDATE sale_order SET amount = amount + 1 WHERE id = 3"),
        ):
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
            list(self.pids.values()),
        )
        names = {pid: name for name, pid in self.pids.items()}
        return {names[r["pid"]]: list(r["by"]) for r in rows}


class DbLockTree(Scenario):
    """A lock tree four sessions deep (:class:`LockJam`) in a scratch database."""

    title = "DB lock jam"
    alert = "OdooDbDeadlock"

    def __init__(self, loop: OdooLoop, jam: LockJam, dsn: str) -> None:
        super().__init__(loop)
        self.jam, self.dsn = jam, dsn

    async def inject(self) -> float:
        return await self.jam.build()


@contextlib.asynccontextmanager
async def db_lock_tree(world: OdooWorld, **database: Any) -> AsyncIterator[DbLockTree]:
    """``sale_order`` in a scratch database, sessions as a plain role, the shipped
    OdooDbDeadlock rule; ``database`` is merged over its ``databases:`` entry (e.g.
    ``protect=...``)."""
    async with scratch_role("LOGIN") as role, scratch_database() as dsn:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            await conn.execute(LOCK_TABLE)
            await conn.execute(f'GRANT ALL ON sale_order TO "{role}"')
        finally:
            await conn.close()
        datname = database_name(dsn)
        pg = world.postgres_exporter.start(dsn, queries=EXPORTER_QUERIES)
        loop = await asyncio.to_thread(
            world.start_loop,
            alerts=["OdooDbDeadlock"],
            scrape_configs=[pg.scrape_config("postgres")],
            # The server is shared: only this scenario's database is the rule's business.
            tweaks=[
                RuleTweak(
                    "OdooDbDeadlock", params={"min_wait": "2s"}, match=[f'datname="{datname}"']
                )
            ],
            databases={shipped_database("OdooDbDeadlock"): {"dsn": dsn, **database}},
            allow=[{"kind": "postgres", "datname": datname}],
        )
        async with Sessions(with_user(dsn, role)) as s:
            jam = LockJam(s, await s.open(dsn=dsn, application_name="test-observer"))
            yield DbLockTree(loop, jam, dsn)


def _compose_scoped(alert: str, project: str) -> dict[str, Any]:
    """``start_loop`` arguments for the shipped rule of ``alert`` kept to one compose
    project (dockerd is shared): its alerts only, its project, its ``odoo*`` services."""
    params = shipped_rule(alert)["params"]
    return {
        "alerts": [alert],
        "databases": {},
        "tweaks": [
            RuleTweak(
                alert,
                params={"project": project} if "project" in params else {},
                match=[f'compose_project="{project}"'],
            )
        ],
        "allow": [{"kind": "docker", "compose_project": project, "compose_service": "odoo*"}],
    }


# --- Memory Leak ------------------------------------------------------------------------


class MemoryLeak(Scenario):
    """A worker of one of the shipped rule's Odoo services leaks past 80% of its 64 MiB
    limit while a worker of another stays small (cAdvisor stand-in)."""

    title = "Memory leak"
    alert = "OdooMemoryLeak"

    def __init__(self, loop: OdooLoop, leaky: LeakyWorker, healthy: LeakyWorker) -> None:
        super().__init__(loop)
        self.leaky, self.healthy = leaky, healthy
        self.started = {w.name: started_at(w.container) for w in (leaky, healthy)}

    async def inject(self) -> float:
        fault_at = time.time()
        await asyncio.to_thread(self.leaky.start_leak)
        return fault_at


def _memory_leak(world: OdooWorld) -> MemoryLeak:
    containers = world.docker()
    project = f"odoo-{uuid.uuid4().hex[:8]}"
    params = shipped_rule("OdooMemoryLeak")["params"]
    # A rule naming its services restarts all of them: one worker in the first and one
    # in the last. A rule taking the service from the alert restarts its replicas: two.
    named = [s for s in params.get("services", []) if "{{" not in s]
    services = [named[0], named[-1]] if named else ["odoo", "odoo"]
    leaky, healthy = start_leaky_workers(
        containers, project=project, services=services, mem_limit_mib=64, leak_mib=56, step_s=0.05
    )
    exporter = world.cadvisor.start({"com.docker.compose.project": project})
    loop = world.start_loop(
        scrape_configs=[exporter.scrape_config("cadvisor")],
        **_compose_scoped("OdooMemoryLeak", project),
    )
    return MemoryLeak(loop, leaky, healthy)


@contextlib.asynccontextmanager
async def memory_leak(world: OdooWorld) -> AsyncIterator[MemoryLeak]:
    yield await asyncio.to_thread(_memory_leak, world)


# --- Bus/Longpoll Stalls ----------------------------------------------------------------


class LongpollStall(Scenario):
    """The Odoo stand-in's longpoll endpoint hangs until the container restarts; the
    blackbox exporter probes it."""

    title = "Longpoll stall"
    alert = "OdooLongpollLatencyHigh"

    def __init__(self, loop: OdooLoop, web: OdooWeb) -> None:
        super().__init__(loop)
        self.web = web
        self.started = started_at(web.container)

    async def inject(self) -> float:
        fault_at = time.time()
        await asyncio.to_thread(self.web.stall)
        return fault_at


def _longpoll_stall(world: OdooWorld) -> LongpollStall:
    project = f"odoo-{uuid.uuid4().hex[:8]}"
    web = start_odoo_web(world.docker(), project=project, service="odoo")
    blackbox = world.blackbox_exporter.start()
    loop = world.start_loop(
        scrape_configs=[
            blackbox.probe_config(
                "odoo-longpoll",
                [web.longpoll_url],
                labels={"compose_project": project, "compose_service": "odoo"},
            )
        ],
        **_compose_scoped("OdooLongpollLatencyHigh", project),
    )
    loop.wait_for('probe_success{job="odoo-longpoll"} == 1', what="a passing probe")
    return LongpollStall(loop, web)


@contextlib.asynccontextmanager
async def longpoll_stall(world: OdooWorld) -> AsyncIterator[LongpollStall]:
    yield await asyncio.to_thread(_longpoll_stall, world)


# --- Too many connections ---------------------------------------------------------------


class TooManyConnections(Scenario):
    """Twelve idle Odoo sessions and two busy ones on a private server with
    max_connections 20, so the shipped 80% threshold is reached without starving the
    shared server."""

    title = "Too many connections"
    alert = "PostgresTooManyConnections"

    def __init__(self, loop: OdooLoop, sessions: Sessions, server_dsn: str) -> None:
        super().__init__(loop)
        self.sessions, self.server_dsn = sessions, server_dsn
        self.idle: list[int] = []
        self.busy: list[int] = []

    async def inject(self) -> float:
        fault_at = time.time()
        for _ in range(12):
            conn = await self.sessions.open(application_name="odoo-worker")
            await conn.execute("SELECT 1")
            self.idle.append(conn.get_server_pid())
        # The busy ones come last, so every idle one is idle since before the alert.
        for _ in range(2):
            conn = await self.sessions.open(application_name="odoo-report")
            self.busy.append(conn.get_server_pid())
            self.sessions.background(conn, "SELECT pg_sleep(120)")
        return fault_at


@contextlib.asynccontextmanager
async def too_many_connections(world: OdooWorld) -> AsyncIterator[TooManyConnections]:
    with private_postgres(max_connections=20) as server:
        admin = await asyncpg.connect(server.dsn, timeout=5)
        try:
            await admin.execute("CREATE ROLE odoo LOGIN")
            await admin.execute("CREATE DATABASE odoo OWNER odoo")
        finally:
            await admin.close()
        dsn = with_database(server.dsn, "odoo")
        pg = world.postgres_exporter.start(dsn, queries=EXPORTER_QUERIES)
        loop = await asyncio.to_thread(
            world.start_loop,
            alerts=["PostgresTooManyConnections"],
            scrape_configs=[pg.scrape_config("postgres")],
            tweaks=[RuleTweak("PostgresTooManyConnections", params={"min_idle": "1s"})],
            # One heal may end the whole surplus here; the cap has its own tests.
            databases={
                shipped_database("PostgresTooManyConnections"): {"dsn": dsn, "max_terminations": 20}
            },
            allow=[{"kind": "postgres"}],
        )
        async with Sessions(with_user(dsn, "odoo")) as s:
            yield TooManyConnections(loop, s, server.dsn)


# --- all of them ------------------------------------------------------------------------

ScenarioFactory = Callable[[OdooWorld], contextlib.AbstractAsyncContextManager[Scenario]]


@dataclass(frozen=True)
class ScenarioKind:
    """A scenario class and the context manager that sets it up on a world."""

    cls: type[Scenario]
    start: ScenarioFactory
    needs_docker: bool = False


SCENARIOS: dict[str, ScenarioKind] = {
    "cron_jam": ScenarioKind(CronJam, cron_jam),
    "db_lock_tree": ScenarioKind(DbLockTree, db_lock_tree),
    "memory_leak": ScenarioKind(MemoryLeak, memory_leak, needs_docker=True),
    "longpoll_stall": ScenarioKind(LongpollStall, longpoll_stall, needs_docker=True),
    "too_many_connections": ScenarioKind(TooManyConnections, too_many_connections),
}
"""One healing scenario per runbook fault, in the runbook's order (the e2e tests run
each of them; bench/loop.py times them)."""
