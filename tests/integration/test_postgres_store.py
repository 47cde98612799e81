"""``healer serve`` on a PostgreSQL journal, as real processes: it receives alerts and
heals; a PostgreSQL outage answers webhooks 503 and readiness down, and once the server
is back every acknowledged alert is there; ``healer journal copy`` moves a real SQLite
history into PostgreSQL where ``healer serve`` lists the same heals;
``healer journal migrate`` creates the schema and refuses what it must."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from healer.store.postgres import schema
from healer.store.postgres.pool import Pool
from tests.support import HealerFactory
from tests.support.env import free_port, wait_until
from tests.support.inprocess.healer_api import write_config
from tests.support.inprocess.payloads import alert_payload
from tests.support.servers.pgserver import private_postgres
from tests.support.servers.postgres import scratch_database
from tests.support.servers.processes import HealerProc
from tests.support.servers.prometheus_standin import StillFiring

TOKEN = "webhook-token-0123456789"
ADMIN = "admin-token-0123456789"
ENV = {"HEALER_WEBHOOK_TOKEN": TOKEN, "HEALER_ADMIN_TOKEN": ADMIN}


def _config(journal: Any, prometheus: str) -> dict[str, Any]:
    return {
        "journal": journal,
        "prometheus": {"url": prometheus, "timeout": "2s"},
        "allow": [{"kind": "exec", "name": "*"}],
        "safety": {"cooldown": "0s", "budget": {"max_actions": 100}},
        "rules": [
            {
                "name": "poke",
                "match": 'alertname="Poke"',
                "handler": "exec",
                "params": {"argv": ["/bin/true"]},
                "verify": {"stable_for": "0s", "timeout": "5s", "interval": "0.2s"},
            }
        ],
    }


def _post(healer: HealerProc, fp: str) -> httpx.Response:
    body = alert_payload({"alertname": "Poke", "target": fp}, fingerprint=fp)
    with httpx.Client(timeout=10.0) as client:
        return client.post(
            f"{healer.url}/api/v1/alerts", headers={"Authorization": f"Bearer {TOKEN}"}, json=body
        )


def _get(healer: HealerProc, path: str) -> httpx.Response:
    with httpx.Client(timeout=10.0) as client:
        return client.get(f"{healer.url}{path}", headers={"Authorization": f"Bearer {ADMIN}"})


def _heals(healer: HealerProc) -> list[dict[str, Any]]:
    heals: list[dict[str, Any]] = _get(healer, "/api/v1/heals?limit=100").json()["heals"]
    return heals


def _all_done(healer: HealerProc, count: int) -> list[dict[str, Any]]:
    def done() -> list[dict[str, Any]] | None:
        heals = _heals(healer)
        return heals if len(heals) == count and all(h["phase"] == "done" for h in heals) else None

    found: list[dict[str, Any]] = wait_until(
        done, timeout=60, interval=0.3, what=f"{count} heals done"
    )
    return found


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "healer", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_serve_on_postgresql_heals_and_survives_an_outage(
    tmp_path: Path, healer_process: HealerFactory
) -> None:
    """healer serve on a PostgreSQL journal (DSN with password from dsn_env) heals three
    alerts; the server stops: a webhook answers 503 and /health/ready says the journal
    is down (password redacted); it starts again: the same webhook is acknowledged, and
    the history holds every alert acknowledged before the outage and the new one."""
    with private_postgres(superuser_password="pg-secret-pw") as server, StillFiring() as prometheus:
        prometheus.firing = False
        config = write_config(
            tmp_path, _config({"dsn_env": "HEALER_TEST_JOURNAL_DSN"}, prometheus.url)
        )
        healer = healer_process.start(config, env={**ENV, "HEALER_TEST_JOURNAL_DSN": server.dsn})
        for n, fp in enumerate(("a1", "a2", "a3"), 1):  # one at a time: one exec target
            answer = _post(healer, fp)
            assert answer.status_code == 200, answer.text
            assert len(answer.json()["started"]) == 1
            before = _all_done(healer, n)
        assert {h["outcome"] for h in before} == {"recovered"}, before

        server.stop()
        assert _post(healer, "b1").status_code == 503
        ready = _get(healer, "/health/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["journal"]["status"] == "down"
        assert "pg-secret-pw" not in ready.text

        server.start()
        answer = wait_until(
            lambda: (r := _post(healer, "b1")).status_code == 200 and r,
            timeout=30,
            interval=0.3,
            what="a webhook acknowledged again",
            ignore=(httpx.HTTPError,),
        )
        assert answer.json()["started"][0]["fingerprint"] == "b1"
        after = _all_done(healer, 4)
        assert {h["id"] for h in before} < {h["id"] for h in after}
        assert _get(healer, "/health/ready").json()["checks"]["journal"]["status"] == "up"


async def test_journal_copy_then_serve_lists_the_same_heals(
    tmp_path: Path, healer_process: HealerFactory
) -> None:
    """A journal.db written by a real run is copied into an empty PostgreSQL database
    (counts printed, DSN from a file); a second copy into it is refused (exit 1); healer
    serve on the PostgreSQL journal lists the same heals with the same timelines."""
    journal = tmp_path / "journal.db"
    with StillFiring() as prometheus:
        prometheus.firing = False
        sqlite_healer = healer_process.start(
            write_config(tmp_path, _config(str(journal), prometheus.url)), env=ENV
        )
        for n, fp in enumerate(("c1", "c2"), 1):
            assert _post(sqlite_healer, fp).status_code == 200
            done = _all_done(sqlite_healer, n)
        original = {h["id"]: h for h in done}
        timelines = {
            i: [e["kind"] for e in _get(sqlite_healer, f"/api/v1/heals/{i}").json()["timeline"]]
            for i in original
        }
        sqlite_healer.stop()

        async with scratch_database() as dsn:
            dsn_file = tmp_path / "journal.dsn"
            dsn_file.write_text(dsn + "\n")
            copied = _cli("journal", "copy", "--from", str(journal), "--to-dsn-file", str(dsn_file))
            assert copied.returncode == 0, copied.stderr
            assert "heals 2" in copied.stdout and "alerts 2" in copied.stdout
            again = _cli("journal", "copy", "--from", str(journal), "--to", dsn)
            assert again.returncode == 1
            assert "not empty" in again.stderr

            pg_dir = tmp_path / "pg"
            pg_dir.mkdir()
            pg_healer = healer_process.start(
                write_config(pg_dir, _config(dsn, prometheus.url)), env=ENV
            )
            listed = {h["id"]: h for h in _heals(pg_healer)}
            assert listed.keys() == original.keys()
            for heal_id, heal in original.items():
                assert {k: listed[heal_id][k] for k in heal} == heal
                assert [
                    e["kind"]
                    for e in _get(pg_healer, f"/api/v1/heals/{heal_id}").json()["timeline"]
                ] == timelines[heal_id]
            # The copied alerts stay exactly-once: a re-send is a duplicate.
            resent = _post(pg_healer, "c1").json()
            assert [d["fingerprint"] for d in resent["duplicates"]] == ["c1"]
            pg_healer.stop()


async def test_journal_migrate_creates_the_schema_and_serve_refuses_a_newer_one(
    tmp_path: Path,
) -> None:
    """journal migrate prints the version before and after (0 -> N, then N -> N); a
    password given with --to is refused (exit 2) without being echoed; healer serve on a
    store whose schema is newer exits 1 with one line naming the store."""
    async with scratch_database() as dsn:
        first = _cli("journal", "migrate", "--to", dsn)
        assert first.returncode == 0, first.stderr
        assert f"schema version 0 -> {schema.SCHEMA_VERSION}" in first.stdout
        second = _cli("journal", "migrate", "--to", dsn)
        assert f"{schema.SCHEMA_VERSION} -> {schema.SCHEMA_VERSION}" in second.stdout

        refused = _cli("journal", "migrate", "--to", dsn.replace("postgres@", "postgres:hunter22@"))
        assert refused.returncode == 2
        assert "hunter22" not in refused.stdout + refused.stderr
        assert "password" in refused.stderr

        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(
                "INSERT INTO healer_schema VALUES ($1, 0)", schema.SCHEMA_VERSION + 1
            )
        finally:
            await conn.close()
        config = write_config(tmp_path, _config(dsn, "http://127.0.0.1:9"))
        serve = _cli("serve", "--config", str(config), "--listen", f"127.0.0.1:{free_port()}")
        assert serve.returncode == 1
        [line] = serve.stderr.strip().splitlines()[-1:]
        assert f"is newer than this healer's ({schema.SCHEMA_VERSION})" in line
        assert dsn.rsplit("/", 1)[1] in line


async def test_after_a_restart_no_work_meets_a_stale_connection() -> None:
    """With every pooled connection opened before a PostgreSQL restart: the first work
    after it, a transaction, finds its connection dead at BEGIN and runs once on a fresh
    one (its row is written once); every read after it answers, because the connections
    left from before the restart were expired with the first."""
    with private_postgres() as server:
        pool = await Pool.connect(server.dsn, pool_size=4)
        try:
            await pool.transaction(lambda c: c.execute("CREATE TABLE t (x int)"))
            sleepers = [pool.read(lambda c: c.fetchval("SELECT pg_sleep(0.3)")) for _ in range(4)]
            await asyncio.gather(*sleepers)  # four connections open, all idle in the pool
            server.stop()
            server.start()
            await pool.transaction(lambda c: c.execute("INSERT INTO t VALUES (1)"))
            for _ in range(8):
                assert await pool.read(lambda c: c.fetchval("SELECT count(*) FROM t")) == 1
        finally:
            await pool.close()
