"""The Odoo runbook (docs/runbooks/odoo-auto-healing.md) end to end, on real components.

Each scenario (tests/support/scenarios/odoo_scenarios.py, which bench/loop.py times) breaks a
real thing the way Odoo breaks, lets the shipped alert rule (alerts/*.rules.yml, sped
up: tests/support/scenarios/odoo_loop.py TEST_SPEED) fire in a real Prometheus from real
exporters (postgres_exporter with alerts/postgres_exporter/queries.yml, blackbox
exporter, the cAdvisor stand-in), lets a real Alertmanager post it to a real ``healer
serve`` running the shipped rule of examples/odoo/healer.yml, and ends on the heal's
outcome in the journal (GET /api/v1/heals) and on the state of the world: which
sessions and containers survived.

Phase timings (fault -> pending -> firing -> webhook -> check -> act -> gone -> seen
-> outcome) are printed per scenario; run with ``-s`` to see them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.support import ContainerFactory
from tests.support.scenarios import odoo as ir_cron
from tests.support.scenarios.odoo_scenarios import (
    DbLockTree,
    OdooWorld,
    Scenario,
    cron_jam,
    db_lock_tree,
    longpoll_stall,
    memory_leak,
    odoo_world,
    shipped_database,
    too_many_connections,
)
from tests.support.servers.odoo_roles import ShippedCluster
from tests.support.servers.odoo_standins import started_at

pytestmark = [pytest.mark.e2e, pytest.mark.prometheus]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[OdooWorld]:
    with odoo_world(tmp_path) as world:
        yield world


@pytest.fixture
def docker_world(world: OdooWorld, containers: ContainerFactory) -> OdooWorld:
    world.containers = containers
    return world


async def healed(scenario: Scenario, fault_at: float, name: str) -> dict[str, Any]:
    """Wait for the heal of the fault injected at ``fault_at`` and print its phase
    timings (seconds after the fault)."""
    heal = await scenario.wait_for_heal(60)
    timings = scenario.loop.timings(heal, fault_at)
    acted = [e["data"].get("summary") for e in heal["timeline"] if e["kind"] == "act"]
    print(
        f"\n[timings] {name}: {json.dumps(timings)} outcome={heal['outcome']} "
        f"durations={json.dumps(heal.get('durations'))} act={acted}"
    )
    return heal


def events(heal: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["data"] for e in heal["timeline"] if e["kind"] == kind]


def terminated_pids(heal: dict[str, Any]) -> list[int]:
    return sorted(d["pid"] for d in events(heal, "terminated"))


async def backends(dsn: str) -> dict[int, dict[str, Any]]:
    """pid -> {state, application_name} of every backend of the server, read fresh."""
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        rows = await conn.fetch(
            "SELECT pid, state, application_name FROM pg_stat_activity"
            " WHERE pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return {r["pid"]: dict(r) for r in rows}


# --- Cron Job Jam -----------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("version", ir_cron.ODOO_VERSIONS)
async def test_cron_jam_stuck_run_ended_then_job_runs_once(
    world: OdooWorld, version: int, shipped_pg: ShippedCluster
) -> None:
    """A cron worker hangs inside its job (job connection stuck in a statement, the row
    locked by its idle cron connection); the scheduler skips the locked job, its delay
    (postgres_exporter's odoo_cron query, as the shipped exporter role) crosses the
    threshold and OdooCronStuck fires; healer (as the shipped healer role) terminates
    that worker's job connection, then its lock holder, and no other session; the
    scheduler then runs the job, the delay clears and the heal ends `recovered`. The
    stuck run never commits: the job ran exactly once (Odoo 16, 17, 18 and 19)."""
    async with cron_jam(world, version=version, cluster=shipped_pg) as jam:
        fault_at = await jam.inject()
        heal = await healed(jam, fault_at, f"cron jam (Odoo {version})")

        assert heal["outcome"] == "recovered", (heal["reason"], jam.loop.healer.log_tail())
        ended = [(d["role"], d["pid"]) for d in events(heal, "terminated")]
        assert ended == [("job connection", jam.stuck.job_pid), ("lock holder", jam.stuck.pid)]
        assert heal["labels"]["cron_id"] == str(jam.jammed)
        assert (
            await jam.web.fetchval("SELECT name FROM res_partner WHERE id = 1") == "Deco Addict"
        ), "the unrelated transaction must survive"
        assert jam.runs >= 2, "the scheduler ran the other job, then the freed one"
        job = await ir_cron.read_job(jam.admin, jam.jammed)
        assert job["scheduled"] and job["lastcall"] is not None
        assert await jam.stuck_run_finished() is False
        assert await ir_cron.job_runs(jam.admin, jam.jammed) == 1
        assert jam.loop.value(f'odoo_cron_delay_seconds{{cron_id="{jam.jammed}"}}') == 0


@pytest.mark.postgres
@pytest.mark.parametrize("version", [16, 19])
async def test_cron_jam_of_a_trigger_driven_job_fires_and_is_healed(
    world: OdooWorld, version: int, shipped_pg: ShippedCluster
) -> None:
    """A job due by a trigger (its nextcall an hour ahead) jams: the exporter counts its
    delay from the trigger, OdooCronStuck fires, healer ends the stuck run, and the
    scheduler runs the job once, clearing the trigger and the delay."""
    async with cron_jam(world, version=version, cluster=shipped_pg, trigger=True) as jam:
        fault_at = await jam.inject()
        heal = await healed(jam, fault_at, f"trigger-driven cron jam (Odoo {version})")

        assert heal["outcome"] == "recovered", (heal["reason"], jam.loop.healer.log_tail())
        assert heal["labels"]["cron_id"] == str(jam.jammed)
        ended = [(d["role"], d["pid"]) for d in events(heal, "terminated")]
        assert ended == [("job connection", jam.stuck.job_pid), ("lock holder", jam.stuck.pid)]
        assert await ir_cron.job_runs(jam.admin, jam.jammed) == 1
        assert (
            await jam.admin.fetchval(
                "SELECT count(*) FROM ir_cron_trigger WHERE cron_id = $1", jam.jammed
            )
            == 0
        )
        assert jam.loop.value(f'odoo_cron_delay_seconds{{cron_id="{jam.jammed}"}}') == 0


# --- Database Deadlock ------------------------------------------------------------------


async def _lock_tree_built(scenario: DbLockTree) -> float:
    fault_at = await scenario.inject()
    jam = scenario.jam
    assert await jam.blocked_by() == {
        "root": [],
        "a": [jam.pids["root"]],
        "b": [jam.pids["a"]],
        "c": [jam.pids["b"]],
        "busy": [],
    }
    return fault_at


@pytest.mark.postgres
async def test_db_lock_tree_only_the_root_blocker_is_terminated(world: OdooWorld) -> None:
    """A lock tree four sessions deep makes OdooDbDeadlock fire; healer terminates the
    root blocker and nothing else: the three waiters complete their updates, the unrelated
    busy session keeps running, and the heal ends `recovered`."""
    async with db_lock_tree(world) as scenario:
        jam = scenario.jam
        heal = await healed(scenario, await _lock_tree_built(scenario), "db lock tree")

        assert heal["outcome"] == "recovered", (heal["reason"], scenario.loop.healer.log_tail())
        assert terminated_pids(heal) == [jam.pids["root"]]
        await asyncio.wait_for(asyncio.gather(*jam.waiters), 10)  # every waiter completed
        alive = await backends(scenario.dsn)
        assert jam.pids["root"] not in alive
        assert alive[jam.pids["busy"]]["state"] == "active"
        amounts = dict(await jam.observer.fetch("SELECT id, amount FROM sale_order"))
        assert amounts == {1: 1, 2: 2, 3: 2, 4: 0}, "the root's update rolled back, all others"
        assert heal["targets"] == [
            f"postgres:{shipped_database('OdooDbDeadlock')}/{jam.pids['root']}"
        ]


@pytest.mark.postgres
async def test_db_lock_tree_with_protected_root_is_refused_untouched(world: OdooWorld) -> None:
    """When the root blocker's application is protected, OdooDbDeadlock still fires but the
    heal ends `refused` and no session is terminated: the root still holds its lock and
    every waiter still waits."""
    async with db_lock_tree(world, protect={"application_names": ["odoo-root"]}) as scenario:
        jam = scenario.jam
        heal = await healed(
            scenario, await _lock_tree_built(scenario), "db lock tree, protected root"
        )

        assert heal["outcome"] == "refused", (heal["reason"], scenario.loop.healer.log_tail())
        assert "protected" in heal["reason"]
        assert terminated_pids(heal) == []
        assert "act" not in [e["kind"] for e in heal["timeline"]]
        assert set(await backends(scenario.dsn)) >= set(jam.pids.values()), (
            "a session was terminated"
        )
        assert await jam.blocked_by() == {
            "root": [],
            "a": [jam.pids["root"]],
            "b": [jam.pids["a"]],
            "c": [jam.pids["b"]],
            "busy": [],
        }
        assert not any(t.done() for t in jam.waiters)
        assert scenario.loop.firing("OdooDbDeadlock"), "nothing was healed: the alert still fires"


# --- Memory Leak ------------------------------------------------------------------------


@pytest.mark.docker
async def test_memory_leak_rolling_restart_frees_memory(docker_world: OdooWorld) -> None:
    """A worker of one of the shipped rule's Odoo services leaks past 80% of its 64 MiB
    limit while a worker of another stays small; OdooMemoryLeak fires from the
    cAdvisor-named series; healer restarts the services' workers one at a time and the
    heal ends `recovered` with the leak gone."""
    async with memory_leak(docker_world) as scenario:
        leaky, healthy = scenario.leaky, scenario.healthy
        heal = await healed(scenario, await scenario.inject(), "memory leak")

        assert heal["outcome"] == "recovered", (heal["reason"], scenario.loop.healer.log_tail())
        assert heal["labels"]["name"] == leaky.name
        assert leaky.leaked_mib() == 0
        assert leaky.working_set_mib() < 0.8 * 64
        restarted = [e["container"] for e in events(heal, "restarted")]
        assert sorted(restarted) == sorted([leaky.name, healthy.name]), "one rollout over both"
        for worker in (leaky, healthy):
            assert started_at(worker.container) != scenario.started[worker.name]
            worker.container.reload()
            assert worker.container.status == "running"


# --- Bus/Longpoll Stalls ----------------------------------------------------------------


@pytest.mark.docker
async def test_longpoll_stall_is_healed_by_restarting_the_longpoll_service(
    docker_world: OdooWorld,
) -> None:
    """The Odoo stand-in's longpoll endpoint hangs; the blackbox probe fails and
    OdooLongpollLatencyHigh fires; healer restarts the longpoll service and the heal ends
    `recovered` with the endpoint answering again."""
    async with longpoll_stall(docker_world) as scenario:
        web = scenario.web
        heal = await healed(scenario, await scenario.inject(), "longpoll stall")

        assert heal["outcome"] == "recovered", (heal["reason"], scenario.loop.healer.log_tail())
        assert started_at(web.container) != scenario.started
        assert web.poll() is not None
        assert heal["targets"] == [f"docker:{web.name}"]


# --- Too many connections ---------------------------------------------------------------


@pytest.mark.postgres
async def test_too_many_connections_idle_sessions_terminated_active_kept(world: OdooWorld) -> None:
    """On a private server (max_connections 20, so the shipped 80% threshold is reached
    without starving the shared one), twelve idle Odoo sessions and two busy ones make
    PostgresTooManyConnections fire; healer terminates idle sessions only, the busy ones
    keep running, and the heal ends `recovered`."""
    async with too_many_connections(world) as scenario:
        heal = await healed(scenario, await scenario.inject(), "too many connections")

        assert heal["outcome"] == "recovered", (heal["reason"], scenario.loop.healer.log_tail())
        killed = terminated_pids(heal)
        assert killed == sorted(scenario.idle), "exactly the idle sessions are terminated"
        alive = await backends(scenario.server_dsn)
        assert not set(killed) & set(alive)
        assert all(alive[pid]["state"] == "active" for pid in scenario.busy)
