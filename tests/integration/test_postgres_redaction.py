"""A password in a session's query text never reaches the journal or the API (issue 12,
Medium 4): real sessions hold a row lock in an open transaction whose last statement
carries a password, so the check evidence of ``postgres.terminate_idle`` really comes
from pg_stat_activity, whole and cut at its 200 characters inside the secret.

A statement PostgreSQL refuses (ALTER of a missing role, dblink without the extension)
aborts the transaction, which releases the lock at once; the session stays ``idle in
transaction (aborted)`` with that statement as its query, and is evidence all the same."""

from __future__ import annotations

import contextlib
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from healer.config import Secrets
from tests.support import Sessions, scratch_database
from tests.support.inprocess.inproc import running_healer
from tests.support.inprocess.sql_secrets import SECRET, SQL_FORMS, leaks

pytestmark = pytest.mark.postgres

QUERY_CHARS = 200  # what healer/postgres_adapter.py keeps of pg_stat_activity.query
BATCH = 20  # sessions per heal, well under max_connections


def variants() -> list[str]:
    """Each form whole, and padded so that the 200-character cut falls 6 characters
    into the secret (the literal then has no closing quote)."""
    out = []
    for form in SQL_FORMS:
        sql = form.format(S=SECRET)
        pad = QUERY_CHARS - 6 - sql.index(SECRET) - len("/**/ ")
        out += [sql, "/*" + "." * pad + "*/ " + sql]
    return out


async def _hold_row_after(s: Sessions, row: int, sql: str) -> asyncpg.Connection:
    """A session holding ``row``'s lock whose last statement (the one pg_stat_activity
    shows) is ``sql``. Two holders creating the same role would wait on each other: a
    short lock_timeout makes the second fail instead (its text is what is shown)."""
    conn = await s.open(application_name=f"holder-{row}")
    await conn.execute("SET lock_timeout = '200ms'; SET statement_timeout = '5s'")
    await conn.execute("BEGIN")
    await conn.execute(f"UPDATE t SET v = v + 1 WHERE id = {row}")
    with contextlib.suppress(asyncpg.PostgresError):
        await conn.execute(sql)
    return conn


async def test_no_password_in_query_text_reaches_journal_or_api(tmp_path: Path) -> None:
    """For every SQL form of tests/support/inprocess/sql_secrets.py (CREATE/ALTER ROLE ... PASSWORD,
    E'' and $$ literals, dblink/subscription DSNs, sslpassword, URLs, SET, set_config,
    FDW options, JSON, ODBC), whole and cut inside the literal: the heal's evidence shows
    the statement (masked), and no 4 characters of the secret are in the journal's file
    bytes or in GET /api/v1/heals/{id} and /api/v1/heals."""
    sqls = variants()
    async with scratch_database() as dsn:
        admin = await asyncpg.connect(dsn, timeout=5)
        try:
            await admin.execute("CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL DEFAULT 0)")
            await admin.execute(f"INSERT INTO t (id) SELECT generate_series(1, {BATCH})")
        finally:
            await admin.close()
        config = {
            "journal": str(tmp_path / "journal.db"),
            "prometheus": {"url": "http://127.0.0.1:9", "timeout": "0.2s"},
            "verify": {"stable_for": "0s", "timeout": "0.3s"},
            "databases": {"app": {"dsn": dsn, "allow_superusers": True, "max_terminations": BATCH}},
            "allow": [{"kind": "postgres", "database": "app"}],
        }
        secrets = Secrets(admin_token="admin-token", databases={"app": dsn})
        heal_ids: list[str] = []
        shown: list[str] = []
        async with running_healer(config, secrets=secrets) as h:
            for first in range(0, len(sqls), BATCH):
                batch = sqls[first : first + BATCH]
                async with Sessions(dsn) as s:
                    for row, sql in enumerate(batch, start=1):
                        await _hold_row_after(s, row, sql)
                    # datname and application names: only this test's sessions (the
                    # server is shared).
                    resp = await h.client.post(
                        "/api/v1/heals",
                        headers=h.admin_headers,
                        json={
                            "handler": "postgres.terminate_idle",
                            "params": {
                                "database": "app",
                                "datname": urlsplit(dsn).path[1:],
                                "application_names": [
                                    f"holder-{r}" for r in range(1, len(batch) + 1)
                                ],
                                "states": ["idle in transaction", "idle in transaction (aborted)"],
                                "min_idle": "0s",
                            },
                        },
                    )
                    assert resp.status_code == 202, resp.text
                    heal_ids.append(resp.json()["heal_id"])
                    heal = await h.wait_for_outcome(heal_ids[-1], timeout=60)
                assert heal["outcome"] == "unverified", heal["reason"]
                (check,) = [e["data"] for e in heal["timeline"] if e["kind"] == "check"]
                shown += [r["query"] for r in check["evidence"]["act_on"]]
            served = [
                (await h.client.get(f"/api/v1/heals/{i}", headers=h.admin_headers)).text
                for i in heal_ids
            ]
            served.append(
                (await h.client.get("/api/v1/heals?limit=100", headers=h.admin_headers)).text
            )

    # The evidence is the real statement text: every variant is there, masked.
    assert len(shown) == len(sqls)
    for sql in sqls:
        start = sql.index("*/ ") + 3 if sql.startswith("/*") else 0  # past the padding
        assert any(q[start : start + 20] == sql[start : start + 20] for q in shown), (sql, shown)
    assert all("***" in q for q in shown), [q for q in shown if "***" not in q]
    for text in served:
        assert not leaks(text)
    for file in tmp_path.glob("journal.db*"):
        assert not leaks(file.read_bytes().decode("latin-1")), file
