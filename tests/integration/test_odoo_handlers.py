"""The odoo.* handlers through the real engine, in-process: odoo.unlock_cron against real
PostgreSQL sessions holding real row locks on an ``ir_cron`` table shaped like Odoo 16,
17 and 18's; odoo.restart_workers and odoo.restart_longpoll against a real dockerd.

Prometheus is a dead loopback port: a heal that acts ends ``unverified`` (manual
triggers have nothing to verify), so the outcome says whether healer acted.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from healer.config import Secrets
from tests.support import Sessions, scratch_database
from tests.support.inproc import alert_payload, running_healer
from tests.support.odoo import (
    ODOO_VERSIONS,
    CronWorker,
    create_ir_cron,
    insert_job,
    read_job,
    reference_job,
)

WAIT = 30.0

# ---- odoo.unlock_cron: real PostgreSQL ------------------------------------------------


@dataclass
class OdooDb:
    dsn: str
    version: int
    sessions: Sessions
    admin: asyncpg.Connection

    async def job(self, name: str, *, nextcall_in: float) -> int:
        return await insert_job(self.admin, self.version, name, nextcall_in=nextcall_in)

    async def worker(self, app: str = "odoo-cron") -> CronWorker:
        return CronWorker(await self.sessions.open(application_name=app), None,
                          self.version, app)

    async def alive(self, conn: asyncpg.Connection) -> bool:
        return bool(await self.admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", conn.get_server_pid()))


@pytest.fixture(params=ODOO_VERSIONS, ids=lambda v: f"odoo{v}")
async def odoo(request: pytest.FixtureRequest) -> AsyncIterator[OdooDb]:
    async with scratch_database(prefix="healer_test_odoo") as dsn, Sessions(dsn) as s:
        admin = await s.open(application_name="test-admin")
        await create_ir_cron(admin, request.param)
        yield OdooDb(dsn, request.param, s, admin)


def pg_config(tmp_path: Path, dsn: str, **database: Any) -> dict[str, Any]:
    return {
        "journal": str(tmp_path / "journal.db"),
        "prometheus": {"url": "http://127.0.0.1:9", "timeout": "0.2s"},
        "verify": {"stable_for": "0s", "timeout": "0.3s"},
        # The test sessions log in as the superuser postgres.
        "databases": {"odoo": {"dsn": dsn, "allow_superusers": True, **database}},
        "allow": [{"kind": "postgres", "database": "odoo"}],
        "rules": [{"name": "cron-stuck", "match": 'alertname="OdooCronStuck"',
                   "handler": "odoo.unlock_cron",
                   "params": {"database": "odoo", "overdue": "10m", "min_held": "0s",
                              "cron_id": "{{ labels.cron_id }}"}}],
    }


def secrets(odoo: OdooDb) -> Secrets:
    return Secrets(admin_token="admin-token", databases={"odoo": odoo.dsn})


async def unlock(tmp_path: Path, odoo: OdooDb, database: dict[str, Any] | None = None,
                 **params: Any) -> dict[str, Any]:
    """Trigger odoo.unlock_cron by hand and return the finished heal."""
    async with running_healer(pg_config(tmp_path, odoo.dsn, **(database or {})),
                              secrets=secrets(odoo)) as h:
        resp = await h.client.post("/api/v1/heals", headers=h.admin_headers, json={
            "handler": "odoo.unlock_cron",
            "params": {"database": "odoo", "overdue": "10m", **params}})
        assert resp.status_code == 202, resp.text
        return await h.wait_for_outcome(resp.json()["heal_id"], WAIT)


def event(heal: dict[str, Any], kind: str) -> dict[str, Any]:
    found = [e["data"] for e in heal["timeline"] if e["kind"] == kind]
    assert found, f"no {kind!r} in {[e['kind'] for e in heal['timeline']]}"
    data: dict[str, Any] = found[0]
    return data


@pytest.mark.postgres
async def test_holders_of_overdue_jobs_are_terminated_and_the_jobs_run_again(
        tmp_path: Path, odoo: OdooDb) -> None:
    """Two overdue jobs held by cron workers (one row also FOR KEY SHARE-locked by a job
    cursor, so its xmax is a MultiXactId): exactly those two workers are terminated.
    The job cursor, a session locking a job that is not overdue and an unrelated idle
    transaction that reads ir_cron survive, and a cron worker then takes both jobs."""
    mail = await odoo.job("Mail: Email Queue Manager", nextcall_in=-3600)
    reminder = await odoo.job("Calendar: Event Reminder", nextcall_in=-7200)
    later = await odoo.job("Not due yet", nextcall_in=3600)
    await odoo.job("Overdue, nobody holds it", nextcall_in=-3600)

    mail_worker, reminder_worker = await odoo.worker("odoo-cron-1"), await odoo.worker(
        "odoo-cron-2")
    assert await mail_worker.take(mail)
    assert await reminder_worker.take(reminder)
    job_cursor = await odoo.sessions.open(application_name="odoo-job")
    await job_cursor.execute("BEGIN")
    await reference_job(job_cursor, odoo.version, mail)
    editor = await odoo.sessions.open(application_name="odoo-editor")
    await editor.execute("BEGIN")
    await editor.execute("SELECT id FROM ir_cron WHERE id = $1 FOR NO KEY UPDATE", later)
    idle = await odoo.sessions.open(application_name="odoo-idle")
    await idle.execute("BEGIN")
    await idle.execute("SELECT count(*) FROM ir_cron")
    await idle.execute("SELECT txid_current()")

    heal = await unlock(tmp_path, odoo, min_held="0s")

    assert heal["outcome"] == "unverified", heal["reason"]
    assert sorted(heal["targets"]) == sorted(
        f"postgres:odoo/{w.pid}" for w in (mail_worker, reminder_worker))
    evidence = event(heal, "check")["evidence"]
    jobs = {j["id"]: j for j in evidence["overdue_jobs"]}
    assert later not in jobs
    assert jobs[mail]["cron_name"] == "Mail: Email Queue Manager"
    assert jobs[mail]["locked"] and jobs[reminder]["locked"]
    assert jobs[mail]["delay_s"] >= 3600
    holders = {h["pid"]: h for h in evidence["holders"]}
    assert holders.keys() == {mail_worker.pid, reminder_worker.pid}
    mail_lock = holders[mail_worker.pid]["locks"][0]
    assert (mail_lock["job_id"], mail_lock["via"], mail_lock["lock_mode"]) == (
        mail, "multixact", "fornokeyupd")
    assert holders[reminder_worker.pid]["locks"][0]["via"] == "xid"
    assert holders[mail_worker.pid]["application_name"] == "odoo-cron-1"
    assert event(heal, "act")["summary"].startswith("terminated pid(s)")

    assert not await odoo.alive(mail_worker.conn)
    assert not await odoo.alive(reminder_worker.conn)
    for survivor in (job_cursor, editor, idle):
        assert await survivor.fetchval("SELECT 1") == 1
    await job_cursor.execute("COMMIT")
    runner = await odoo.worker("odoo-cron-3")
    assert await runner.run_once(mail)
    assert await runner.run_once(reminder)
    assert (await read_job(odoo.admin, mail))["scheduled"]


@pytest.mark.postgres
async def test_overdue_job_nobody_holds_is_no_action(tmp_path: Path, odoo: OdooDb) -> None:
    """An overdue job whose row is not locked: nothing to terminate, `no_action`, and the
    reason says so; an idle transaction elsewhere is not touched."""
    job_id = await odoo.job("Overdue but free", nextcall_in=-3600)
    idle = await odoo.sessions.open(application_name="odoo-idle")
    await idle.execute("BEGIN")
    await idle.execute("SELECT txid_current()")

    heal = await unlock(tmp_path, odoo, min_held="0s")

    assert heal["outcome"] == "no_action"
    assert "none locked" in heal["reason"]
    assert await odoo.alive(idle)
    # healer's probe (FOR NO KEY UPDATE SKIP LOCKED) was rolled back: a worker takes the job.
    assert await (await odoo.worker()).run_once(job_id)


@pytest.mark.postgres
async def test_holder_younger_than_min_held_is_left_alone(tmp_path: Path,
                                                          odoo: OdooDb) -> None:
    """A worker that took an overdue job less than min_held ago may simply be running it:
    `no_action`, the reason names min_held, and the worker keeps its lock."""
    job_id = await odoo.job("Long report", nextcall_in=-3600)
    worker = await odoo.worker()
    assert await worker.take(job_id)

    heal = await unlock(tmp_path, odoo, min_held="1h")

    assert heal["outcome"] == "no_action"
    assert "min_held" in heal["reason"]
    assert await odoo.alive(worker.conn)
    assert not await (await odoo.worker("odoo-cron-2")).take(job_id)  # still held


@pytest.mark.postgres
async def test_protected_holder_is_refused(tmp_path: Path, odoo: OdooDb) -> None:
    """A holder whose application name is protected in the database config ends the
    heal `refused` with the reason; the holder survives and keeps the job."""
    job_id = await odoo.job("Held by a protected session", nextcall_in=-3600)
    worker = await odoo.worker("odoo-protected")
    assert await worker.take(job_id)

    heal = await unlock(tmp_path, odoo,
                        {"protect": {"application_names": ["odoo-protected"]}},
                        min_held="0s")

    assert heal["outcome"] == "refused"
    assert f"pid {worker.pid}" in heal["reason"] and "odoo-protected" in heal["reason"]
    assert "act" not in [e["kind"] for e in heal["timeline"]]
    assert event(heal, "holders")["holders"][0]["decision"].startswith("protected")
    assert await odoo.alive(worker.conn)


@pytest.mark.postgres
async def test_more_holders_than_the_termination_cap_is_refused(tmp_path: Path,
                                                                odoo: OdooDb) -> None:
    """Two holders and `max_terminations: 1`: the heal is refused before terminating
    anyone (no half-done unlock); both holders survive."""
    workers = []
    for i in (1, 2):
        job_id = await odoo.job(f"Job {i}", nextcall_in=-3600)
        worker = await odoo.worker(f"odoo-cron-{i}")
        assert await worker.take(job_id)
        workers.append(worker)

    heal = await unlock(tmp_path, odoo, {"max_terminations": 1}, min_held="0s")

    assert heal["outcome"] == "refused"
    assert "max_terminations allows 1" in heal["reason"]
    for worker in workers:
        assert await odoo.alive(worker.conn)


@pytest.mark.postgres
async def test_check_never_queues_behind_a_table_lock(tmp_path: Path, odoo: OdooDb) -> None:
    """While a module upgrade holds ACCESS EXCLUSIVE on ir_cron, the check gives up at
    once on a lock timeout (instead of queueing in front of every other session until
    the statement timeout) and the heal fails; the upgrade is untouched."""
    await odoo.job("Overdue", nextcall_in=-3600)
    upgrade = await odoo.sessions.open(application_name="odoo-upgrade")
    await upgrade.execute("BEGIN")
    await upgrade.execute("LOCK TABLE ir_cron IN ACCESS EXCLUSIVE MODE")

    heal = await unlock(tmp_path, odoo, min_held="0s")

    assert heal["outcome"] == "failed"
    assert "lock timeout" in heal["reason"], heal["reason"]
    assert await odoo.alive(upgrade)


@pytest.mark.postgres
async def test_alert_label_cron_id_limits_the_heal_to_that_job(tmp_path: Path,
                                                               odoo: OdooDb) -> None:
    """An OdooCronStuck alert carrying cron_id=<job> terminates only that job's holder;
    the worker holding another overdue job is left alone."""
    stuck = await odoo.job("Stuck job", nextcall_in=-3600)
    other = await odoo.job("Other overdue job", nextcall_in=-3600)
    stuck_worker, other_worker = await odoo.worker("odoo-cron-1"), await odoo.worker(
        "odoo-cron-2")
    assert await stuck_worker.take(stuck)
    assert await other_worker.take(other)

    async with running_healer(pg_config(tmp_path, odoo.dsn), secrets=secrets(odoo)) as h:
        resp = await h.client.post("/api/v1/alerts", json=alert_payload(
            {"alertname": "OdooCronStuck", "cron_id": str(stuck)}))
        heal = await h.wait_for_outcome(resp.json()["started"][0]["heal_id"], WAIT)

    assert heal["outcome"] == "unverified", heal["reason"]
    assert heal["targets"] == [f"postgres:odoo/{stuck_worker.pid}"]
    assert not await odoo.alive(stuck_worker.conn)
    assert await odoo.alive(other_worker.conn)


# ---- odoo.restart_workers / odoo.restart_longpoll: real dockerd -------------------------


def docker_config(tmp_path: Path, project: str) -> dict[str, Any]:
    return {
        "journal": str(tmp_path / "journal.db"),
        "prometheus": {"url": "http://127.0.0.1:9", "timeout": "0.2s"},
        "verify": {"stable_for": "0s", "timeout": "0.3s"},
        "allow": [{"kind": "docker", "compose_project": project}],
        "rules": [],
    }


def compose(project: str, service: str) -> dict[str, str]:
    return {"com.docker.compose.project": project, "com.docker.compose.service": service}


def started_at(container: Any) -> str:
    container.reload()
    return str(container.attrs["State"]["StartedAt"])


def ns(docker_time: str) -> int:
    """Docker's RFC 3339 time with up to 9 fractional digits, as integer nanoseconds."""
    whole, _, frac = docker_time.rstrip("Z").partition(".")
    seconds = datetime.fromisoformat(whole + "+00:00").timestamp()
    return int(seconds) * 10**9 + int((frac + "000000000")[:9])


async def trigger(tmp_path: Path, project: str, handler: str,
                  params: dict[str, Any]) -> dict[str, Any]:
    async with running_healer(docker_config(tmp_path, project)) as h:
        resp = await h.client.post("/api/v1/heals", headers=h.admin_headers,
                                   json={"handler": handler, "params": params})
        assert resp.status_code == 202, resp.text
        return await h.wait_for_outcome(resp.json()["heal_id"], 120)


def events_of(client: Any, names: list[str], since: int) -> list[dict[str, Any]]:
    """dockerd's events for ``names`` since ``since`` (bounded read, oldest first)."""
    stream = client.events(since=since, until=int(time.time()) + 1, decode=True,
                           filters={"type": "container"})
    try:
        return [e for e in stream if e.get("Actor", {}).get("Attributes", {}).get("name")
                in names]
    finally:
        stream.close()


def _odoo_services(containers: Any) -> tuple[str, list[str], list[Any]]:
    """Three Odoo-like compose services (core, accounting, marketing) with 64 MiB limits
    and healthchecks, in one fresh project: (project, service order, containers)."""
    tag = uuid.uuid4().hex[:8]
    project = f"odoo{tag}"
    order = ["odoo-core", "odoo-accounting", "odoo-marketing"]
    services = [containers.run_service(name=f"healer-test-{svc}-{tag}", mem_limit="64m",
                                       labels=compose(project, svc), healthcheck=True)
                for svc in order]
    return project, order, services


@pytest.mark.docker
async def test_restart_workers_rolls_one_at_a_time_recording_memory(
        tmp_path: Path, containers: Any, docker_client: Any) -> None:
    """Three Odoo-like services with 64 MiB limits and healthchecks are restarted in the
    order the rule lists them, each back healthy before the next one is stopped; every
    StartedAt changes, and memory (working set and limit) is recorded before and after."""
    project, order, services = _odoo_services(containers)
    names = [s.name for s in services]
    before = {s.name: started_at(s.container) for s in services}
    since = int(time.time()) - 1

    heal = await trigger(tmp_path, project, "odoo.restart_workers", {
        "services": order, "project": project, "stop_timeout": 5, "health_timeout": "30s"})

    assert heal["outcome"] == "unverified", heal["reason"]
    assert heal["targets"] == [f"docker:{n}" for n in names]
    restarted = event(heal, "act")["details"]["restarted"]
    assert [r["container"] for r in restarted] == names
    after = [started_at(s.container) for s in services]
    assert all(a != before[n] for a, n in zip(after, names, strict=True))
    assert ns(after[0]) < ns(after[1]) < ns(after[2])
    limit = 64 * 2**20
    for r in restarted:
        assert r["health"] == "healthy"
        for key in ("memory_before", "memory_after"):
            assert r[key]["limit"] == limit, r[key]
            assert 0 < r[key]["usage"] <= limit
    checked = event(heal, "check")["evidence"]["containers"]
    assert [c["mem_limit"] for c in checked] == [limit] * 3
    # dockerd's own record: each container was healthy again before the next was stopped.
    events = events_of(docker_client, names, since)
    restarted_at = dict(zip(names, map(ns, after), strict=True))
    for prev, nxt in itertools.pairwise(names):
        healthy = min(e["timeNano"] for e in events if e["Actor"]["Attributes"]["name"] == prev
                      and e["Action"] == "health_status: healthy"
                      and e["timeNano"] > restarted_at[prev])
        killed = min(e["timeNano"] for e in events
                     if e["Actor"]["Attributes"]["name"] == nxt and e["Action"] == "kill")
        assert healthy < killed, f"{nxt} was stopped before {prev} was healthy again"


@pytest.mark.docker
async def test_rollout_stops_at_a_container_that_does_not_come_back(
        tmp_path: Path, containers: Any) -> None:
    """When the second container comes back without serving (never healthy), the heal
    fails naming it, the first was restarted and the third is never touched."""
    project, order, services = _odoo_services(containers)
    first, broken, last = services
    broken.mute()  # runs after a restart, but serves nothing: its healthcheck fails
    before = {s.name: started_at(s.container) for s in services}

    heal = await trigger(tmp_path, project, "odoo.restart_workers", {
        "services": order, "project": project, "stop_timeout": 5, "health_timeout": "3s"})

    assert heal["outcome"] == "failed"
    assert f"rollout stopped at {broken.name}" in heal["reason"]
    assert f"restarted before it: {first.name}" in heal["reason"]
    assert f"not restarted: {last.name}" in heal["reason"]
    stopped = event(heal, "rollout_stopped")
    assert (stopped["restarted"], stopped["not_restarted"]) == ([first.name], [last.name])
    assert started_at(first.container) != before[first.name]
    assert started_at(broken.container) != before[broken.name]
    assert started_at(last.container) == before[last.name]


@pytest.mark.docker
async def test_restart_longpoll_restarts_the_longpoll_service_only(
        tmp_path: Path, containers: Any) -> None:
    """odoo.restart_longpoll restarts the compose service serving the longpoll port, waits
    for it to be healthy and records its state before and after; the web service of the
    same project is untouched."""
    tag = uuid.uuid4().hex[:8]
    project = f"odoo{tag}"
    longpoll = containers.run_service(name=f"healer-test-longpoll-{tag}", healthcheck=True,
                                      labels=compose(project, "odoo-longpoll"))
    web = containers.run_service(name=f"healer-test-web-{tag}",
                                 labels=compose(project, "odoo-web"))
    before = {s.name: started_at(s.container) for s in (longpoll, web)}

    heal = await trigger(tmp_path, project, "odoo.restart_longpoll", {
        "service": "odoo-longpoll", "project": project, "stop_timeout": 5})

    assert heal["outcome"] == "unverified", heal["reason"]
    assert heal["targets"] == [f"docker:{longpoll.name}"]
    record = event(heal, "restarted")
    assert record["before"]["started_at"] == before[longpoll.name]
    assert record["after"]["started_at"] == started_at(longpoll.container)
    assert record["after"]["health"] == "healthy"
    assert record["memory_after"]["usage"] > 0
    assert started_at(web.container) == before[web.name]
    longpoll.wait_for_metric(1)
