"""odoo.unlock_cron through the real engine, in-process, against real PostgreSQL sessions
holding real row locks on ``ir_cron`` tables shaped like Odoo 16, 17, 18 and 19's, with
stand-in cron workers that run jobs on two connections as Odoo does
(:mod:`tests.support.scenarios.odoo`).

Prometheus is a dead loopback port: a heal that acts ends ``unverified`` (manual
triggers have nothing to verify), so the outcome says whether healer acted.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from healer.config import Secrets
from tests.support import Sessions
from tests.support.inprocess.inproc import running_healer
from tests.support.inprocess.inproc import timeline_event as event
from tests.support.inprocess.payloads import alert_payload
from tests.support.scenarios.odoo import (
    ODOO_VERSIONS,
    CronWorker,
    ManualRun,
    Work,
    add_trigger,
    insert_job,
    job_runs,
    read_job,
    reference_job,
    set_module_state,
)
from tests.support.servers.odoo_roles import OdooDatabase, ShippedCluster, odoo_database

pytestmark = pytest.mark.postgres

WAIT = 30.0
MIN_HELD = 1.0  # the tests' min_held: a lock held longer is "held for long"


@dataclass
class OdooDb:
    """One Odoo database of the shipped cluster: Odoo's sessions log in as the ``odoo``
    role, healer as the shipped ``healer`` role."""

    db: OdooDatabase
    version: int
    sessions: Sessions
    admin: asyncpg.Connection
    runs: list[asyncio.Future[Any]]

    async def job(self, name: str, *, nextcall_in: float, **kw: Any) -> int:
        return await insert_job(self.admin, self.version, name, nextcall_in=nextcall_in, **kw)

    async def worker(self, name: str | None = None) -> CronWorker:
        """A cron worker process: lock holder and job connection, one application_name."""
        return await CronWorker.open(self.sessions, self.version, name)

    async def holder(self, name: str) -> CronWorker:
        """A session that only holds job rows (no job connection in its process)."""
        return CronWorker(await self.sessions.open(application_name=name), None, self.version, name)

    def start(self, run: Any) -> asyncio.Future[Any]:
        """Run a job's work in the background; cancelled and awaited at teardown."""
        task = asyncio.ensure_future(run)
        self.runs.append(task)
        return task

    async def alive(self, *pids: int) -> list[bool]:
        rows = await self.admin.fetch(
            "SELECT pid FROM pg_stat_activity WHERE pid = ANY($1::int[])", list(pids)
        )
        found = {r["pid"] for r in rows}
        return [pid in found for pid in pids]

    async def held_for(self, pid: int, seconds: float = MIN_HELD) -> None:
        """Wait (bounded) until ``pid``'s transaction is older than ``seconds``."""
        for _ in range(200):
            age = await self.admin.fetchval(
                "SELECT extract(epoch FROM now() - xact_start) FROM pg_stat_activity "
                "WHERE pid = $1",
                pid,
            )
            if age is not None and age > seconds + 0.2:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"pid {pid} never held a transaction for {seconds}s")

    async def running(self, pid: int, statement: str) -> None:
        """Wait (bounded) until ``pid`` is running a statement starting with ``statement``."""
        for _ in range(200):
            query = await self.admin.fetchval(
                "SELECT query FROM pg_stat_activity WHERE pid = $1 AND state = 'active'", pid
            )
            if query and query.startswith(statement):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"pid {pid} never ran {statement!r}")


@pytest.fixture(params=ODOO_VERSIONS, ids=lambda v: f"odoo{v}")
async def odoo(request: pytest.FixtureRequest, shipped_pg: ShippedCluster) -> AsyncIterator[OdooDb]:
    async with odoo_database(shipped_pg, request.param) as db, Sessions(db.odoo_dsn) as s:
        admin = await s.open(application_name="test-admin")
        odoo = OdooDb(db, request.param, s, admin, [])
        try:
            yield odoo
        finally:
            for run in odoo.runs:
                run.cancel()
            await asyncio.gather(*odoo.runs, return_exceptions=True)


def pg_config(tmp_path: Path, odoo: OdooDb, **database: Any) -> dict[str, Any]:
    return {
        "journal": str(tmp_path / "journal.db"),
        "prometheus": {"url": "http://127.0.0.1:9", "timeout": "0.2s"},
        "verify": {"stable_for": "0s", "timeout": "0.3s"},
        # The password comes with the secrets (as from dsn_file), never in the config.
        "databases": {"odoo": {"dsn": re.sub(r":[^:@/]*@", "@", odoo.db.healer_dsn), **database}},
        "allow": [{"kind": "postgres", "database": "odoo", "user": "odoo"}],
        "rules": [
            {
                "name": "cron-stuck",
                "match": 'alertname="OdooCronStuck"',
                "handler": "odoo.unlock_cron",
                "params": {
                    "database": "odoo",
                    "overdue": "10m",
                    "min_held": "1s",
                    "sample": "0.5s",
                    "cron_id": "{{ labels.cron_id }}",
                },
            }
        ],
    }


def secrets(odoo: OdooDb, dsn: str | None = None) -> Secrets:
    return Secrets(admin_token="admin-token", databases={"odoo": dsn or odoo.db.healer_dsn})


async def unlock(
    tmp_path: Path,
    odoo: OdooDb,
    database: dict[str, Any] | None = None,
    dsn: str | None = None,
    **params: Any,
) -> dict[str, Any]:
    """Trigger odoo.unlock_cron by hand and return the finished heal."""
    params = {
        "database": "odoo",
        "overdue": "10m",
        "min_held": f"{MIN_HELD}s",
        "sample": "0.5s",
        **params,
    }
    async with running_healer(
        pg_config(tmp_path, odoo, **(database or {})), secrets=secrets(odoo, dsn)
    ) as h:
        resp = await h.client.post(
            "/api/v1/heals",
            headers=h.admin_headers,
            json={"handler": "odoo.unlock_cron", "params": params},
        )
        assert resp.status_code == 202, resp.text
        return await h.wait_for_outcome(resp.json()["heal_id"], WAIT)


def kinds(heal: dict[str, Any]) -> list[str]:
    return [e["kind"] for e in heal["timeline"]]


async def stuck_run(
    odoo: OdooDb, job_id: int, hang: str
) -> tuple[CronWorker, asyncio.Future[bool]]:
    """A worker takes ``job_id`` and hangs in it: its thread is stuck (it will not
    reschedule anything), the job connection hung as ``hang`` says, the lock held past
    min_held. The hung statement would end (and commit the job's effect) after 8 s."""
    worker = await odoo.worker()
    assert await worker.acquire(job_id)
    work = Work(hang=hang, hang_for=8.0 if hang == "statement" else 5.0)  # type: ignore[arg-type]
    task = odoo.start(worker.start(job_id, work, hung=True))
    if hang == "statement":
        await odoo.running(worker.job_pid, "SELECT pg_sleep")
    await odoo.held_for(worker.pid)
    return worker, task


# ---- a stuck run is ended whole, and the job runs exactly once -------------------------


@pytest.mark.parametrize("hang", ["statement", "idle", "gone"])
async def test_stuck_run_is_ended_whole_and_the_job_runs_exactly_once(
    tmp_path: Path, odoo: OdooDb, hang: str
) -> None:
    """An orphaned lock holder whose job connection is hung in a statement, idle in its
    transaction, or gone: healer terminates the job connection first, then the holder,
    and records both. Another worker then runs the job, and the stuck run never
    finishes: the job's effect is committed exactly once (terminating the holder alone
    would let the hung statement end after 8 s and commit a second run)."""
    job_id = await odoo.job("Mail: Email Queue Manager", nextcall_in=-3600)
    worker, stuck = await stuck_run(odoo, job_id, hang)
    job_pid = None if hang == "gone" else worker.job_pid

    heal = await unlock(tmp_path, odoo)

    assert heal["outcome"] == "unverified", heal["reason"]
    expected = [worker.pid] if job_pid is None else [job_pid, worker.pid]
    assert sorted(heal["targets"]) == sorted(f"postgres:odoo/{p}" for p in expected)
    holder = event(heal, "check")["evidence"]["holders"][0]
    assert holder["decision"] == "terminate"
    assert [j["pid"] for j in holder["job_connections"]] == ([] if job_pid is None else [job_pid])
    ended = [
        (e["data"]["role"], e["data"]["pid"]) for e in heal["timeline"] if e["kind"] == "terminated"
    ]
    assert ended == ([] if job_pid is None else [("job connection", job_pid)]) + [
        ("lock holder", worker.pid)
    ]
    assert await odoo.alive(*expected) == [False] * len(expected)

    assert await asyncio.wait_for(stuck, 15) is False  # the stuck run never finished
    assert await (await odoo.worker()).run_once(job_id)
    assert await job_runs(odoo.admin, job_id) == 1
    assert (await read_job(odoo.admin, job_id))["scheduled"]


async def test_stuck_trigger_driven_job_is_healed(tmp_path: Path, odoo: OdooDb) -> None:
    """A job not due by nextcall (an hour ahead) but by a trigger due two hours ago,
    stuck: it counts as overdue from the trigger, and its run is ended."""
    job_id = await odoo.job("Triggered: Send SMS", nextcall_in=3600)
    await add_trigger(odoo.admin, job_id, call_in=-7200)
    worker, stuck = await stuck_run(odoo, job_id, "statement")

    heal = await unlock(tmp_path, odoo)

    assert heal["outcome"] == "unverified", heal["reason"]
    (job,) = event(heal, "check")["evidence"]["overdue_jobs"]
    assert job["id"] == job_id and job["trigger_at"] is not None
    assert 7000 < job["delay_s"] < 7500
    assert sorted(heal["targets"]) == sorted(
        f"postgres:odoo/{p}" for p in (worker.job_pid, worker.pid)
    )
    assert await asyncio.wait_for(stuck, 15) is False


# ---- healthy work is refused, untouched --------------------------------------------------


async def assert_refused_untouched(
    heal: dict[str, Any], odoo: OdooDb, *pids: int, why: str
) -> None:
    assert heal["outcome"] == "refused", heal["reason"]
    assert why in heal["reason"], heal["reason"]
    assert "act" not in kinds(heal)
    assert await odoo.alive(*pids) == [True] * len(pids)


async def test_slow_job_that_keeps_working_is_refused(tmp_path: Path, odoo: OdooDb) -> None:
    """A run longer than `overdue` and `min_held` whose job connection keeps running
    statements: refused (its progress named), nobody terminated, and the run finishes
    and commits once."""
    job_id = await odoo.job("Slow report", nextcall_in=-3600)
    worker = await odoo.worker()
    assert await worker.acquire(job_id)
    run = odoo.start(worker.start(job_id, Work(steps=50, pause=0.1)))
    await odoo.held_for(worker.pid)

    heal = await unlock(tmp_path, odoo)

    await assert_refused_untouched(heal, odoo, worker.pid, worker.job_pid, why=f"pid {worker.pid}:")
    holder = event(heal, "holders")["holders"][0]
    assert holder["decision"].startswith("left alone")
    assert "made progress between two looks" in holder["decision"]
    assert f"pid {worker.job_pid} " in holder["decision"]
    assert await asyncio.wait_for(run, 30) is True
    assert await job_runs(odoo.admin, job_id) == 1


@pytest.mark.parametrize("odoo", [18, 19], indirect=True, ids=lambda v: f"odoo{v}")
async def test_job_between_batches_is_refused(tmp_path: Path, odoo: OdooDb) -> None:
    """18/19: a job working through its batches (a progress row per batch) keeps the row
    locked and nextcall old; the recent ir_cron_progress rows refuse the heal."""
    job_id = await odoo.job("Batched: Recompute", nextcall_in=-3600)
    worker = await odoo.worker()
    assert await worker.acquire(job_id)
    run = odoo.start(worker.start(job_id, Work(batches=60, steps=1, pause=0.05)))
    await odoo.held_for(worker.pid)

    heal = await unlock(tmp_path, odoo)

    await assert_refused_untouched(heal, odoo, worker.pid, worker.job_pid, why="recorded progress")
    assert "ir_cron_progress" in heal["reason"]
    assert await asyncio.wait_for(run, 30) is True
    assert await job_runs(odoo.admin, job_id) == 1


async def test_manual_run_is_refused(tmp_path: Path, odoo: OdooDb) -> None:
    """ "Run Manually" on an overdue job: 16/17 run it on the HTTP request's own
    connection (the holder itself is busy), 18/19 on a second connection of the HTTP
    worker. Either way its statements change between the two looks: refused."""
    job_id = await odoo.job("Run by hand", nextcall_in=-3600)
    if odoo.version < 18:
        http = await odoo.sessions.open(application_name="odoo-9001")
        manual = ManualRun(http)
        run = odoo.start(manual.run(job_id, steps=50, pause=0.1))
        pids = [http.get_server_pid()]
    else:
        worker = await odoo.worker("odoo-9001")
        assert await worker.acquire(job_id, manual=True)
        run = odoo.start(worker.start(job_id, Work(steps=50, pause=0.1)))
        pids = [worker.pid, worker.job_pid]
    await odoo.held_for(pids[0])

    heal = await unlock(tmp_path, odoo)

    await assert_refused_untouched(heal, odoo, *pids, why=f"pid {pids[0]}:")
    await asyncio.wait_for(run, 30)
    assert await job_runs(odoo.admin, job_id) == 1


async def test_module_upgrade_under_way_is_refused(tmp_path: Path, odoo: OdooDb) -> None:
    """While a module is marked `to upgrade`, even a run that looks stuck is left
    alone (Odoo's own cron waits for the upgrade too): refused, named."""
    job_id = await odoo.job("During upgrade", nextcall_in=-3600)
    worker, _ = await stuck_run(odoo, job_id, "idle")
    await set_module_state(odoo.admin, "sale", "to upgrade")

    heal = await unlock(tmp_path, odoo)

    await assert_refused_untouched(heal, odoo, worker.pid, worker.job_pid, why="sale (to upgrade)")


@pytest.mark.parametrize("odoo", [16, 17], indirect=True, ids=lambda v: f"odoo{v}")
async def test_job_with_no_calls_left_is_never_overdue(tmp_path: Path, odoo: OdooDb) -> None:
    """16/17: an active job with numbercall = 0 never runs again, so it is not overdue
    however old its nextcall, even while a session holds its row: `no_action`."""
    job_id = await odoo.job("No calls left", nextcall_in=-86400, numbercall=0)
    holder = await odoo.holder("odoo-7001")
    await holder.conn.execute("BEGIN")
    await holder.conn.execute("SELECT id FROM ir_cron WHERE id = $1 FOR NO KEY UPDATE", job_id)

    heal = await unlock(tmp_path, odoo)

    assert heal["outcome"] == "no_action", heal["reason"]
    assert "no runnable ir_cron job is overdue" in heal["reason"]
    assert await odoo.alive(holder.pid) == [True]


# ---- the holder proof and the gates --------------------------------------------------------


async def test_holders_of_overdue_jobs_are_proven_and_terminated(
    tmp_path: Path, odoo: OdooDb
) -> None:
    """Two overdue jobs held by lock holders (one row also FOR KEY SHARE-locked by a job
    cursor, so its xmax is a MultiXactId): exactly those two holders are terminated.
    The job cursor, a session locking a job that is not overdue and an unrelated idle
    transaction that reads ir_cron survive, and a cron worker then takes both jobs."""
    mail = await odoo.job("Mail: Email Queue Manager", nextcall_in=-3600)
    reminder = await odoo.job("Calendar: Event Reminder", nextcall_in=-7200)
    later = await odoo.job("Not due yet", nextcall_in=3600)
    await odoo.job("Overdue, nobody holds it", nextcall_in=-3600)

    mail_holder, reminder_holder = await odoo.holder("odoo-101"), await odoo.holder("odoo-102")
    assert await mail_holder.acquire(mail)
    assert await reminder_holder.acquire(reminder)
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
    await odoo.held_for(reminder_holder.pid)

    heal = await unlock(tmp_path, odoo)

    assert heal["outcome"] == "unverified", heal["reason"]
    assert sorted(heal["targets"]) == sorted(
        f"postgres:odoo/{w.pid}" for w in (mail_holder, reminder_holder)
    )
    evidence = event(heal, "check")["evidence"]
    jobs = {j["id"]: j for j in evidence["overdue_jobs"]}
    assert later not in jobs
    assert jobs[mail]["cron_name"] == "Mail: Email Queue Manager"
    assert jobs[mail]["locked"] and jobs[reminder]["locked"]
    assert jobs[mail]["delay_s"] >= 3600
    holders = {h["pid"]: h for h in evidence["holders"]}
    assert holders.keys() == {mail_holder.pid, reminder_holder.pid}
    mail_lock = holders[mail_holder.pid]["locks"][0]
    assert (mail_lock["job_id"], mail_lock["via"], mail_lock["lock_mode"]) == (
        mail,
        "multixact",
        "fornokeyupd",
    )
    assert holders[reminder_holder.pid]["locks"][0]["via"] == "xid"
    assert holders[mail_holder.pid]["application_name"] == "odoo-101"
    assert event(heal, "act")["summary"].startswith("ended the stuck run of ir_cron job(s)")

    assert await odoo.alive(mail_holder.pid, reminder_holder.pid) == [False, False]
    for survivor in (job_cursor, editor, idle):
        assert await survivor.fetchval("SELECT 1") == 1
    await job_cursor.execute("COMMIT")
    runner = await odoo.worker()
    assert await runner.run_once(mail)
    assert await runner.run_once(reminder)
    assert (await read_job(odoo.admin, mail))["scheduled"]


async def test_overdue_job_nobody_holds_is_no_action(tmp_path: Path, odoo: OdooDb) -> None:
    """An overdue job whose row is not locked: nothing to terminate, `no_action`, and the
    reason says so; an idle transaction elsewhere is not touched, and healer's probe
    (the worker's own FOR NO KEY UPDATE SKIP LOCKED) was rolled back."""
    job_id = await odoo.job("Overdue but free", nextcall_in=-3600)
    idle = await odoo.sessions.open(application_name="odoo-idle")
    await idle.execute("BEGIN")
    await idle.execute("SELECT txid_current()")

    heal = await unlock(tmp_path, odoo)

    assert heal["outcome"] == "no_action"
    assert "none locked" in heal["reason"]
    assert await odoo.alive(idle.get_server_pid()) == [True]
    assert await (await odoo.worker()).run_once(job_id)


async def test_holder_younger_than_min_held_is_left_alone(tmp_path: Path, odoo: OdooDb) -> None:
    """A worker that took an overdue job less than min_held ago may simply be running it:
    `no_action`, the reason names min_held, and the worker keeps its lock."""
    job_id = await odoo.job("Long report", nextcall_in=-3600)
    worker = await odoo.worker()
    assert await worker.acquire(job_id)

    heal = await unlock(tmp_path, odoo, min_held="1h")

    assert heal["outcome"] == "no_action"
    assert "min_held" in heal["reason"]
    assert await odoo.alive(worker.pid, worker.job_pid) == [True, True]
    assert not await (await odoo.worker()).acquire(job_id)  # still held


async def test_protected_holder_is_refused(tmp_path: Path, odoo: OdooDb) -> None:
    """A holder whose application name is protected in the database config ends the
    heal `refused` with the reason; the holder survives and keeps the job."""
    job_id = await odoo.job("Held by a protected session", nextcall_in=-3600)
    worker, _ = await stuck_run(odoo, job_id, "idle")

    heal = await unlock(tmp_path, odoo, {"protect": {"application_names": [worker.name]}})

    await assert_refused_untouched(
        heal, odoo, worker.pid, worker.job_pid, why=f"pid {worker.pid} is protected"
    )
    assert event(heal, "holders")["holders"][0]["decision"].startswith("protected")


async def test_more_sessions_than_the_termination_cap_is_refused(
    tmp_path: Path, odoo: OdooDb
) -> None:
    """A stuck run is two sessions (job connection and holder) and `max_terminations:
    1`: refused before terminating anyone (no half-ended run); both survive."""
    job_id = await odoo.job("Job", nextcall_in=-3600)
    worker, _ = await stuck_run(odoo, job_id, "idle")

    heal = await unlock(tmp_path, odoo, {"max_terminations": 1})

    await assert_refused_untouched(
        heal, odoo, worker.pid, worker.job_pid, why="max_terminations allows 1"
    )


async def test_check_never_queues_behind_a_table_lock(tmp_path: Path, odoo: OdooDb) -> None:
    """While a module upgrade holds ACCESS EXCLUSIVE on ir_cron, the check gives up at
    once on a lock timeout (instead of queueing in front of every other session until
    the statement timeout) and the heal fails; the upgrade is untouched."""
    await odoo.job("Overdue", nextcall_in=-3600)
    upgrade = await odoo.sessions.open(application_name="odoo-upgrade")
    await upgrade.execute("BEGIN")
    await upgrade.execute("LOCK TABLE ir_cron IN ACCESS EXCLUSIVE MODE")

    heal = await unlock(tmp_path, odoo)

    assert heal["outcome"] == "failed"
    assert "lock timeout" in heal["reason"], heal["reason"]
    assert await odoo.alive(upgrade.get_server_pid()) == [True]


async def test_a_role_without_the_grants_fails_saying_which(tmp_path: Path, odoo: OdooDb) -> None:
    """healer connected as a role that may read ir_cron but not lock its rows (here the
    shipped postgres_exporter role): the heal fails before touching anything, and the
    reason gives the GRANT to run."""
    job_id = await odoo.job("Stuck", nextcall_in=-3600)
    worker, _ = await stuck_run(odoo, job_id, "idle")

    heal = await unlock(tmp_path, odoo, dsn=odoo.db.exporter_dsn)

    assert heal["outcome"] == "failed"
    assert "GRANT UPDATE (write_date) ON ir_cron TO postgres_exporter" in heal["reason"]
    assert await odoo.alive(worker.pid, worker.job_pid) == [True, True]


async def test_alert_label_cron_id_limits_the_heal_to_that_job(
    tmp_path: Path, odoo: OdooDb
) -> None:
    """An OdooCronStuck alert carrying cron_id=<job> ends only that job's run; the
    worker stuck in another overdue job is left alone."""
    stuck_job = await odoo.job("Stuck job", nextcall_in=-3600)
    other_job = await odoo.job("Other overdue job", nextcall_in=-3600)
    stuck, _ = await stuck_run(odoo, stuck_job, "statement")
    other, _ = await stuck_run(odoo, other_job, "statement")

    async with running_healer(pg_config(tmp_path, odoo), secrets=secrets(odoo)) as h:
        resp = await h.client.post(
            "/api/v1/alerts",
            json=alert_payload({"alertname": "OdooCronStuck", "cron_id": str(stuck_job)}),
        )
        heal = await h.wait_for_outcome(resp.json()["started"][0]["heal_id"], WAIT)

    assert heal["outcome"] == "unverified", heal["reason"]
    assert sorted(heal["targets"]) == sorted(
        f"postgres:odoo/{p}" for p in (stuck.job_pid, stuck.pid)
    )
    assert await odoo.alive(stuck.pid, other.pid, other.job_pid) == [False, True, True]
