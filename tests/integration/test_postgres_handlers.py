"""The postgres.* handlers through the real engine (in-process) against a real
PostgreSQL: which sessions they signal, which they refuse, and that alert data only
ever reaches the server as a query parameter.

Prometheus is a dead port: a manual heal has nothing to verify and ends
``unverified`` once it acted; the timeline tells what the handler did.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
import structlog

from handlers.postgres import BlockersParams, TerminateBlockers
from healer.api import HealContext
from healer.config import DatabaseConfig, Secrets
from healer.docker_adapter import DockerAdapter
from healer.postgres_adapter import PostgresAdapter
from tests.support import (
    Sessions,
    scratch_database,
    scratch_role,
    server_dsn,
    wait_blocked,
    with_user,
)
from tests.support.inprocess.inproc import InProcessHealer, running_healer
from tests.support.inprocess.payloads import alert_payload

pytestmark = pytest.mark.postgres

HOSTILE = "x'; DROP TABLE t; --"


@dataclass(frozen=True)
class Db:
    dsn: str

    @property
    def name(self) -> str:
        return urlsplit(self.dsn).path.lstrip("/")


async def _create_table(dsn: str, *grantees: str) -> None:
    admin = await asyncpg.connect(dsn, timeout=5)
    try:
        await admin.execute("CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL DEFAULT 0)")
        await admin.execute("INSERT INTO t (id) SELECT generate_series(1, 6)")
        for role in grantees:
            await admin.execute(f'GRANT SELECT, UPDATE ON t TO "{role}"')
    finally:
        await admin.close()


@pytest.fixture
async def db() -> AsyncIterator[Db]:
    """A scratch database with a table ``t`` of six rows (ids 1..6)."""
    async with scratch_database() as dsn:
        await _create_table(dsn)
        yield Db(dsn)


def _config(
    tmp_path: Path, dsn: str, rules: list[dict[str, Any]] | None = None, **database: Any
) -> dict[str, Any]:
    return {
        "journal": str(tmp_path / "journal.db"),
        "prometheus": {"url": "http://127.0.0.1:9", "timeout": "0.2s"},
        "verify": {"stable_for": "0s", "timeout": "0.3s"},
        "databases": {"app": {"dsn": dsn, **database}},
        "allow": [{"kind": "postgres", "database": "app"}],
        "rules": rules or [],
    }


@asynccontextmanager
async def _healer(
    tmp_path: Path, dsn: str, rules: list[dict[str, Any]] | None = None, **database: Any
) -> AsyncIterator[InProcessHealer]:
    secrets = Secrets(admin_token="admin-token", databases={"app": dsn})
    async with running_healer(_config(tmp_path, dsn, rules, **database), secrets=secrets) as h:
        yield h


async def _heal(h: InProcessHealer, handler: str, **params: Any) -> dict[str, Any]:
    resp = await h.client.post(
        "/api/v1/heals",
        headers=h.admin_headers,
        json={"handler": handler, "params": {"database": "app", **params}},
    )
    assert resp.status_code == 202, resp.text
    return await h.wait_for_outcome(resp.json()["heal_id"], timeout=30)


def _events(heal: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["data"] for e in heal["timeline"] if e["kind"] == kind]


def _pids(records: list[dict[str, Any]]) -> set[int]:
    return {r["pid"] for r in records}


async def _wait_age(
    obs: asyncpg.Connection,
    pids: list[int],
    seconds: float,
    *,
    column: str = "query_start",
    timeout: float = 15,
) -> None:
    """Wait (bounded) until every backend in ``pids`` is ``seconds`` past ``column``."""
    sql = (
        f"SELECT coalesce(min(extract(epoch FROM now() - {column})), 0) "
        "FROM pg_stat_activity WHERE pid = ANY($1::int[])"
    )
    deadline = time.monotonic() + timeout
    while await obs.fetchval(sql, pids) < seconds:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{pids} never got {seconds}s past {column}")
        await asyncio.sleep(0.05)


async def _alive(obs: asyncpg.Connection, pid: int) -> bool:
    return bool(await obs.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid))


async def _wait_gone(obs: asyncpg.Connection, pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while await _alive(obs, pid):
        if time.monotonic() > deadline:
            raise TimeoutError(f"backend {pid} still there after {timeout}s")
        await asyncio.sleep(0.05)


async def _hold_row(s: Sessions, row: int, app: str, user: str | None = None) -> asyncpg.Connection:
    """A session holding ``row``'s lock in an open transaction (idle in transaction)."""
    conn = await s.open(application_name=app, user=user)
    await conn.execute("BEGIN")
    await conn.execute(f"UPDATE t SET v = v + 1 WHERE id = {row}")
    return conn


async def _observer(s: Sessions) -> asyncpg.Connection:
    """A session in the server's ``postgres`` database: outside every handler's datname."""
    return await s.open(application_name="observer", dsn=server_dsn())


# --- postgres.terminate_blockers ------------------------------------------------------


async def test_lock_tree_terminates_only_its_root(tmp_path: Path, db: Db) -> None:
    """In A <- B <- C (C waits on B, B waits on A) with an unrelated busy session, one
    heal terminates A alone: B and C then complete, the busy session runs on, and the
    timeline records A's evidence with the whole subtree it blocked (2)."""
    async with Sessions(db.dsn) as s, _healer(tmp_path, db.dsn, allow_superusers=True) as h:
        obs = await _observer(s)
        a = await _hold_row(s, 1, "holder")
        b = await _hold_row(s, 2, "middle")
        b_waits = s.background(b, "UPDATE t SET v = v + 1 WHERE id = 1")
        await wait_blocked(obs, b.get_server_pid())
        c = await s.open(application_name="tail")
        c_waits = s.background(c, "UPDATE t SET v = v + 1 WHERE id = 2")
        await wait_blocked(obs, c.get_server_pid())
        busy = await s.open(application_name="busy")
        busy_runs = s.background(busy, "SELECT pg_sleep(30)")
        await _wait_age(obs, [b.get_server_pid(), c.get_server_pid()], 0.5)

        heal = await _heal(h, "postgres.terminate_blockers", datname=db.name, min_wait="0.5s")

        assert heal["outcome"] == "unverified", heal["reason"]
        (act,) = _events(heal, "act")
        assert _pids(act["details"]["terminated"]) == {a.get_server_pid()}
        (killed,) = _events(heal, "terminated")
        assert killed["application_name"] == "holder" and killed["user"] == "postgres"
        assert killed["state"] == "idle in transaction" and killed["blocks_total"] == 2
        assert killed["query"].startswith("UPDATE t SET v = v + 1 WHERE id = 1")
        assert killed["xact_age_s"] > 0
        (check,) = _events(heal, "check")
        (tree,) = check["evidence"]["lock_trees"]
        assert _pids(tree["waiting"]) == {b.get_server_pid(), c.get_server_pid()}
        assert heal["targets"] == [f"postgres:app/{a.get_server_pid()}"]

        # The timeline entry is written as the signal goes out; act returned only once
        # A's backend had exited (its locks gone), which its result records.
        assert "gone" not in killed
        (done,) = act["details"]["terminated"]
        assert done["gone"] is True and 0 <= done["exit_s"] < 5
        assert not await _alive(obs, a.get_server_pid())
        await asyncio.wait_for(b_waits, 10)  # B got row 1 once A was gone
        await b.execute("COMMIT")
        await asyncio.wait_for(c_waits, 10)  # then C got row 2
        assert not busy_runs.done() and await _alive(obs, busy.get_server_pid())
        assert await b.fetchval("SELECT v FROM t WHERE id = 2") == 2


@pytest.mark.parametrize(
    ("root_app", "database"),
    [
        pytest.param(
            "pg_dump",
            {"allow_superusers": True, "protect": {"application_names": ["pg_dump"]}},
            id="protected-application",
        ),
        pytest.param("holder", {}, id="superuser"),
    ],
)
async def test_protected_root_is_refused(
    tmp_path: Path, db: Db, root_app: str, database: dict[str, Any]
) -> None:
    """When the only root blocker is protected (a protected application name, or a
    superuser while superusers are not allowed) the heal ends `refused`, records the
    protected root, and terminates nothing."""
    async with Sessions(db.dsn) as s, _healer(tmp_path, db.dsn, **database) as h:
        obs = await _observer(s)
        a = await _hold_row(s, 1, root_app)
        b = await s.open(application_name="waiter")
        b_waits = s.background(b, "UPDATE t SET v = v + 1 WHERE id = 1")
        await wait_blocked(obs, b.get_server_pid())

        heal = await _heal(h, "postgres.terminate_blockers", datname=db.name, min_wait="0s")

        assert heal["outcome"] == "refused", heal["reason"]
        assert "protected" in heal["reason"]
        (protected,) = _events(heal, "protected")
        assert _pids(protected["sessions"]) == {a.get_server_pid()}
        assert not _events(heal, "act") and not _events(heal, "terminated")
        assert await a.fetchval("SELECT 1") == 1
        assert not b_waits.done()


async def test_lock_wait_below_threshold_is_no_action(tmp_path: Path, db: Db) -> None:
    """A lock tree whose waiter has not waited min_wait yet ends `no_action`; the
    blocker survives and the tree is in the evidence."""
    async with Sessions(db.dsn) as s, _healer(tmp_path, db.dsn, allow_superusers=True) as h:
        obs = await _observer(s)
        a = await _hold_row(s, 1, "holder")
        b = await s.open(application_name="waiter")
        s.background(b, "UPDATE t SET v = v + 1 WHERE id = 1")
        await wait_blocked(obs, b.get_server_pid())

        heal = await _heal(h, "postgres.terminate_blockers", datname=db.name, min_wait="1h")

        assert heal["outcome"] == "no_action", heal["reason"]
        assert "min_wait" in heal["reason"]
        (check,) = _events(heal, "check")
        assert check["evidence"]["lock_trees"][0]["root"]["pid"] == a.get_server_pid()
        assert await a.fetchval("SELECT 1") == 1


async def test_termination_cap_is_respected(tmp_path: Path, db: Db) -> None:
    """Three independent lock trees with max_terminations 2: two roots terminated, the
    third recorded as skipped for the cap and still alive."""
    async with (
        Sessions(db.dsn) as s,
        _healer(tmp_path, db.dsn, allow_superusers=True, max_terminations=2) as h,
    ):
        obs = await _observer(s)
        holders = [await _hold_row(s, row, f"holder-{row}") for row in (1, 2, 3)]
        for row in (1, 2, 3):
            waiter = await s.open(application_name=f"waiter-{row}")
            s.background(waiter, f"UPDATE t SET v = v + 1 WHERE id = {row}")
            await wait_blocked(obs, waiter.get_server_pid())

        heal = await _heal(h, "postgres.terminate_blockers", datname=db.name, min_wait="0s")

        assert heal["outcome"] == "unverified", heal["reason"]
        (act,) = _events(heal, "act")
        roots = {c.get_server_pid() for c in holders}
        terminated = _pids(act["details"]["terminated"])
        (skipped,) = act["details"]["skipped"]
        assert len(terminated) == 2 and terminated < roots
        assert {skipped["pid"]} == roots - terminated and "cap" in skipped["reason"]
        assert await _alive(obs, skipped["pid"])
        for pid in terminated:
            await _wait_gone(obs, pid)


async def test_act_skips_a_root_whose_transaction_changed_since_check(db: Db) -> None:
    """act re-reads the sessions: a root blocker that ended the transaction check saw
    and now blocks again in a new one (same pid, new xact_start) is skipped, not
    terminated. (The handler is driven directly to get between check and act.)"""
    pg = PostgresAdapter(
        {"app": DatabaseConfig(dsn=db.dsn, allow_superusers=True)}, {"app": db.dsn}
    )
    events: list[tuple[str, dict[str, Any]]] = []

    async def record(kind: str, data: dict[str, Any]) -> None:
        events.append((kind, data))

    ctx = HealContext(
        heal_id="h1",
        rule="(manual)",
        handler="postgres.terminate_blockers",
        alert=None,
        dry_run=False,
        log=structlog.get_logger(),
        docker=DockerAdapter(),
        postgres=pg.for_heal(),
        record=record,
    )
    handler = TerminateBlockers()
    params = BlockersParams(database="app", datname=db.name, min_wait=0)
    try:
        async with Sessions(db.dsn) as s:
            obs = await _observer(s)
            a = await _hold_row(s, 1, "holder")
            b = await s.open(application_name="waiter")
            b_waits = s.background(b, "UPDATE t SET v = v + 1 WHERE id = 1")
            await wait_blocked(obs, b.get_server_pid())
            check = await handler.check(ctx, params)
            assert [t.name for t in check.targets] == [f"app/{a.get_server_pid()}"]

            await a.execute("COMMIT")
            await asyncio.wait_for(b_waits, 10)
            await a.execute("BEGIN")
            await a.execute("UPDATE t SET v = v + 1 WHERE id = 1")
            c = await s.open(application_name="waiter")
            s.background(c, "UPDATE t SET v = v + 1 WHERE id = 1")
            await wait_blocked(obs, c.get_server_pid())

            result = await handler.act(ctx, params, check)

            assert result.details["terminated"] == []
            (skipped,) = result.details["skipped"]
            assert skipped == {"pid": a.get_server_pid(), "reason": "xact changed since check"}
            assert await a.fetchval("SELECT 1") == 1
            assert not [kind for kind, _ in events if kind == "terminated"]
    finally:
        await pg.aclose()


# --- postgres.cancel_slow --------------------------------------------------------------


async def test_cancel_slow_cancels_old_statements_only(tmp_path: Path, db: Db) -> None:
    """cancel_slow cancels the old statement of a listed application (its session stays
    connected) and leaves a recent statement and another application's old one alone."""
    async with Sessions(db.dsn) as s, _healer(tmp_path, db.dsn, allow_superusers=True) as h:
        obs = await _observer(s)
        slow, other = (
            await s.open(application_name="report"),
            await s.open(application_name="backup"),
        )
        slow_runs = s.background(slow, "SELECT pg_sleep(30)")
        other_runs = s.background(other, "SELECT pg_sleep(30)")
        await _wait_age(obs, [slow.get_server_pid(), other.get_server_pid()], 2)
        short = await s.open(application_name="report")
        short_runs = s.background(short, "SELECT pg_sleep(30)")

        heal = await _heal(
            h,
            "postgres.cancel_slow",
            datname=db.name,
            min_duration="2s",
            application_names=["report"],
        )

        assert heal["outcome"] == "unverified", heal["reason"]
        (act,) = _events(heal, "act")
        assert _pids(act["details"]["cancelled"]) == {slow.get_server_pid()}
        with pytest.raises(asyncpg.QueryCanceledError):
            await asyncio.wait_for(slow_runs, 10)
        assert await slow.fetchval("SELECT 1") == 1  # cancelled, not terminated
        assert not other_runs.done() and not short_runs.done()


# --- postgres.terminate_idle -----------------------------------------------------------


async def test_terminate_idle_terminates_old_idle_sessions_only(tmp_path: Path, db: Db) -> None:
    """terminate_idle terminates the listed application's idle and idle-in-transaction
    sessions past min_idle; its active session and another application's idle session
    survive."""
    async with Sessions(db.dsn) as s, _healer(tmp_path, db.dsn, allow_superusers=True) as h:
        obs = await _observer(s)
        idle = await s.open(application_name="worker")
        await idle.execute("SELECT 1")
        in_tx = await s.open(application_name="worker")
        await in_tx.execute("BEGIN")
        await in_tx.execute("SELECT 1")
        cron = await s.open(application_name="cron")
        await cron.execute("SELECT 1")
        active = await s.open(application_name="worker")
        active_runs = s.background(active, "SELECT pg_sleep(30)")
        await _wait_age(
            obs,
            [
                idle.get_server_pid(),
                in_tx.get_server_pid(),
                cron.get_server_pid(),
                active.get_server_pid(),
            ],
            0.5,
            column="state_change",
        )

        heal = await _heal(
            h,
            "postgres.terminate_idle",
            datname=db.name,
            min_idle="0.5s",
            application_names=["worker"],
        )

        assert heal["outcome"] == "unverified", heal["reason"]
        (act,) = _events(heal, "act")
        assert _pids(act["details"]["terminated"]) == {
            idle.get_server_pid(),
            in_tx.get_server_pid(),
        }
        assert {r["state"] for r in act["details"]["terminated"]} == {"idle", "idle in transaction"}
        for conn in (idle, in_tx):
            await _wait_gone(obs, conn.get_server_pid())
        assert await cron.fetchval("SELECT 1") == 1
        assert not active_runs.done() and await _alive(obs, active.get_server_pid())


# --- alert data stays data -------------------------------------------------------------


async def test_hostile_datname_label_is_only_a_parameter(tmp_path: Path, db: Db) -> None:
    """An alert label carrying SQL, used as datname, reaches PostgreSQL as a parameter:
    the heal finds no such database (`no_action`), table t and the idle session are
    untouched; the same rule with the real name does terminate that session."""
    rule = {
        "name": "idle-by-db",
        "match": 'alertname="PgTooManyConnections"',
        "handler": "postgres.terminate_idle",
        "params": {
            "database": "app",
            "datname": "{{ labels.datname }}",
            "min_idle": "0s",
            "application_names": ["worker"],
        },
    }
    async with Sessions(db.dsn) as s, _healer(tmp_path, db.dsn, [rule], allow_superusers=True) as h:
        obs = await _observer(s)
        idle = await s.open(application_name="worker")
        await idle.execute("SELECT 1")

        async def fire(datname: str, fingerprint: str) -> dict[str, Any]:
            resp = await h.client.post(
                "/api/v1/alerts",
                json=alert_payload(
                    {"alertname": "PgTooManyConnections", "datname": datname},
                    fingerprint=fingerprint,
                ),
            )
            assert resp.status_code == 200, resp.text
            (started,) = resp.json()["started"]
            return await h.wait_for_outcome(started["heal_id"], timeout=30)

        heal = await fire(HOSTILE, "00000000000000a1")
        assert heal["outcome"] == "no_action", heal["reason"]
        (check,) = _events(heal, "check")
        assert check["evidence"]["datname"] == HOSTILE
        assert await idle.fetchval("SELECT count(*) FROM t") == 6
        assert await idle.fetchval("SELECT 1") == 1

        heal = await fire(db.name, "00000000000000a2")
        assert heal["outcome"] == "unverified", heal["reason"]
        (act,) = _events(heal, "act")
        assert _pids(act["details"]["terminated"]) == {idle.get_server_pid()}
        await _wait_gone(obs, idle.get_server_pid())


# --- least privilege -------------------------------------------------------------------


@dataclass(frozen=True)
class LeastPrivilege:
    db: Db
    healer_dsn: str
    user1: str
    user2: str


@pytest.fixture
async def least_privilege() -> AsyncIterator[LeastPrivilege]:
    """healer connecting as a role with only pg_signal_backend + pg_read_all_stats (no
    superuser), and two ordinary roles whose sessions it heals. Roles are created before
    the database so the database is dropped first; every role is dropped on exit."""
    async with (
        scratch_role(
            "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE IN ROLE pg_signal_backend, pg_read_all_stats"
        ) as healer_role,
        scratch_role("LOGIN NOSUPERUSER") as user1,
        scratch_role("LOGIN NOSUPERUSER") as user2,
        scratch_database() as dsn,
    ):
        await _create_table(dsn, user1, user2)
        yield LeastPrivilege(Db(dsn), with_user(dsn, healer_role), user1, user2)


async def test_least_privilege_role_terminates_a_blocker(
    tmp_path: Path, least_privilege: LeastPrivilege
) -> None:
    """As the least-privilege role, terminate_blockers terminates an ordinary role's
    root blocker, and the other role's waiter proceeds."""
    lp = least_privilege
    async with Sessions(lp.db.dsn) as s, _healer(tmp_path, lp.healer_dsn) as h:
        obs = await _observer(s)
        a = await _hold_row(s, 1, "holder", user=lp.user1)
        b = await s.open(application_name="waiter", user=lp.user2)
        b_waits = s.background(b, "UPDATE t SET v = v + 1 WHERE id = 1")
        await wait_blocked(obs, b.get_server_pid())

        heal = await _heal(h, "postgres.terminate_blockers", datname=lp.db.name, min_wait="0s")

        assert heal["outcome"] == "unverified", heal["reason"]
        (killed,) = _events(heal, "terminated")
        assert killed["pid"] == a.get_server_pid() and killed["user"] == lp.user1
        assert killed["query"].startswith("UPDATE t")  # pg_read_all_stats shows it
        await asyncio.wait_for(b_waits, 10)


async def test_least_privilege_role_filters_idle_by_user(
    tmp_path: Path, least_privilege: LeastPrivilege
) -> None:
    """As the least-privilege role, terminate_idle with users=[user2] terminates only
    user2's idle session; with users=[postgres] the only candidate is a superuser, so
    the heal is `refused` and that session survives."""
    lp = least_privilege
    async with Sessions(lp.db.dsn) as s, _healer(tmp_path, lp.healer_dsn) as h:
        obs = await _observer(s)
        one = await s.open(application_name="pool", user=lp.user1)
        two = await s.open(application_name="pool", user=lp.user2)
        root = await s.open(application_name="pool")
        for conn in (one, two, root):
            await conn.execute("SELECT 1")
        pids = [c.get_server_pid() for c in (one, two, root)]
        await _wait_age(obs, pids, 0.3, column="state_change")

        heal = await _heal(
            h, "postgres.terminate_idle", datname=lp.db.name, min_idle="0.3s", users=[lp.user2]
        )
        assert heal["outcome"] == "unverified", heal["reason"]
        (act,) = _events(heal, "act")
        assert _pids(act["details"]["terminated"]) == {two.get_server_pid()}
        await _wait_gone(obs, two.get_server_pid())

        heal = await _heal(
            h, "postgres.terminate_idle", datname=lp.db.name, min_idle="0.3s", users=["postgres"]
        )
        assert heal["outcome"] == "refused", heal["reason"]
        assert "superuser" in heal["reason"]
        assert await root.fetchval("SELECT 1") == 1
        assert await one.fetchval("SELECT 1") == 1


async def test_least_privilege_role_cancels_a_slow_statement(
    tmp_path: Path, least_privilege: LeastPrivilege
) -> None:
    """As the least-privilege role, cancel_slow cancels an ordinary role's statement."""
    lp = least_privilege
    async with Sessions(lp.db.dsn) as s, _healer(tmp_path, lp.healer_dsn) as h:
        obs = await _observer(s)
        slow = await s.open(application_name="report", user=lp.user1)
        slow_runs = s.background(slow, "SELECT pg_sleep(30)")
        await _wait_age(obs, [slow.get_server_pid()], 0.3)

        heal = await _heal(h, "postgres.cancel_slow", datname=lp.db.name, min_duration="0.3s")

        assert heal["outcome"] == "unverified", heal["reason"]
        with pytest.raises(asyncpg.QueryCanceledError):
            await asyncio.wait_for(slow_runs, 10)
        assert await slow.fetchval("SELECT 1") == 1
