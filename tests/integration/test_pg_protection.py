"""The protections as SQL (healer/pg_protection.py, the statement that re-reads and signals
in one round trip) against the same rules in Python, on the same real sessions of a real
server: every session gets the same verdict and the same recorded reason either way, and
terminate_blockers' "still a root blocker" reads the same in both. The statements run
with a cap of 0, so nothing is ever signalled here."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from handlers._pgsessions import record
from handlers.postgres import ROOT_BLOCKER, root_blocker
from healer.config import DatabaseConfig
from healer.pg_protection import protection_rule
from healer.postgres_adapter import PostgresAdapter
from tests.support import Sessions, scratch_database, scratch_role, wait_blocked

pytestmark = pytest.mark.postgres


@pytest.fixture
async def role_and_db() -> AsyncIterator[tuple[str, str]]:
    """An ordinary login role and a scratch database with a table ``t`` it may update."""
    async with scratch_role("LOGIN NOSUPERUSER") as role, scratch_database() as dsn:
        admin = await asyncpg.connect(dsn, timeout=5)
        try:
            await admin.execute("CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL DEFAULT 0)")
            await admin.execute("INSERT INTO t (id) SELECT generate_series(1, 3)")
            await admin.execute(f'GRANT SELECT, UPDATE ON t TO "{role}"')
        finally:
            await admin.close()
        yield role, dsn


def _adapter(dsn: str, **cfg: Any) -> PostgresAdapter:
    return PostgresAdapter(
        {"app": DatabaseConfig.model_validate({"dsn": dsn, **cfg})}, {"app": dsn}
    )


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        pytest.param(
            {},
            {"plain": "superuser", "pgbouncer": "superuser", "role": "cap", "healer": "own"},
            id="superusers-refused",
        ),
        pytest.param(
            {
                "allow_superusers": True,
                "protect": {"users": ["ROLE"], "application_names": ["pgbouncer"]},
            },
            {"plain": "cap", "pgbouncer": "application", "role": "user", "healer": "own"},
            id="protected-users-and-applications",
        ),
    ],
)
async def test_sql_protections_agree_with_python_on_every_session(
    role_and_db: tuple[str, str], cfg: dict[str, Any], expected: dict[str, str]
) -> None:
    """Over every session of the server (client backends of several users and
    applications, healer's own pooled connection and a session named ``healer``,
    background processes), the SQL predicate refuses exactly the sessions the Python
    rules protect, by the same first rule, with the same recorded reason; unprotected
    ones are held back only by the cap of 0."""
    role, dsn = role_and_db
    if "protect" in cfg:
        cfg["protect"]["users"] = [role]
    pg = _adapter(dsn, **cfg)
    config = pg.config("app")
    try:
        async with Sessions(dsn) as s:
            mine = {
                "plain": await s.open(application_name="plain"),
                "pgbouncer": await s.open(application_name="pgbouncer"),
                "role": await s.open(application_name="plain", user=role),
                "healer": await s.open(application_name="healer"),
            }
            # Two pooled connections of healer's own: one runs the statement (and is not
            # in it), the other is seen as healer's.
            await asyncio.gather(*(pg.fetch("app", "SELECT pg_sleep(0.2)") for _ in range(2)))
            sessions = await pg.sessions("app")
            checked = await pg.signal_checked(
                "app",
                [record(x) for x in sessions],
                "terminate",
                datname=None,
                same=("backend_start",),
                still=None,
                cap=0,
            )
            seen: dict[str, str] = {}
            for c in checked:
                assert c.sent is None, c  # the cap of 0 held: nothing was signalled
                if c.refused in ("gone", "backend_start"):
                    continue  # another test's session came or went between the reads
                assert c.now is not None
                python = protection_rule(c.now, config, frozenset(pg._own_pids))
                assert c.refused == (python or "cap"), (c, python)
                assert c.protected == pg.protection("app", c.now)
                seen[c.refused] = c.refused
            by_pid = {c.pid: c.refused for c in checked}
            for name, conn in mine.items():
                assert by_pid[conn.get_server_pid()] == expected[name], name
            own = set(pg._own_pids)
            assert any(by_pid.get(pid) == "own" for pid in own)
            assert "not_client" in seen  # the server's background processes
            for conn in mine.values():
                assert await conn.fetchval("SELECT 1") == 1
    finally:
        await pg.aclose()


async def test_sql_root_blocker_agrees_with_python_on_a_lock_chain(
    role_and_db: tuple[str, str],
) -> None:
    """In A <- B <- C beside an idle D, the one-statement re-read sees the lock graph as
    ``sessions`` does (who blocks whom) and keeps A alone as a root blocker, as the Python
    ``root_blocker`` does over the same rows; B and C wait, D blocks nobody."""
    _, dsn = role_and_db
    datname = urlsplit(dsn).path.lstrip("/")
    pg = _adapter(dsn, allow_superusers=True)
    try:
        async with Sessions(dsn) as s:
            a, b, c, d = [await s.open(application_name=n) for n in "abcd"]
            obs = await s.open(application_name="observer")
            await a.execute("BEGIN")
            await a.execute("UPDATE t SET v = v + 1 WHERE id = 1")
            await b.execute("BEGIN")
            await b.execute("UPDATE t SET v = v + 1 WHERE id = 2")
            s.background(b, "UPDATE t SET v = v + 1 WHERE id = 1")
            await wait_blocked(obs, b.get_server_pid())
            s.background(c, "UPDATE t SET v = v + 1 WHERE id = 2")
            await wait_blocked(obs, c.get_server_pid())
            pids = [x.get_server_pid() for x in (a, b, c, d)]
            view = {x.pid: x for x in await pg.sessions("app", datname=datname)}
            checked = await pg.signal_checked(
                "app",
                [record(view[pid]) for pid in pids],
                "terminate",
                datname=datname,
                same=("backend_start", "xact_start"),
                still=ROOT_BLOCKER,
                cap=0,
            )
            assert [x.refused for x in checked] == ["cap", "still", "still", "still"]
            for x in checked:
                assert x.now is not None and x.sent is None
                assert sorted(x.now.blocking) == sorted(view[x.pid].blocking)
                assert x.now.blocked_by == view[x.pid].blocked_by
                assert (x.refused == "still") == (root_blocker(x.now) is not None)
                assert (x.refused == "still") == (root_blocker(view[x.pid]) is not None)
            assert await a.fetchval("SELECT 1") == 1
    finally:
        await pg.aclose()
