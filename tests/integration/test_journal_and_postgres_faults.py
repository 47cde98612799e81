"""Faults below healer, on real components: the journal's filesystem full (a real tmpfs)
and the PostgreSQL server of a handler's database stopped (a private cluster)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest

from healer.api import ActResult, Alert, CheckResult, HandlerParams, HealContext, Target
from healer.config import Secrets
from healer.errors import JournalUnavailable
from healer.plugins import HandlerRegistry
from healer.store import HealPlan, SqliteStore
from tests.support.inprocess.inproc import running_healer
from tests.support.inprocess.payloads import alert_payload
from tests.support.servers.disk import small_disk
from tests.support.servers.private_services import PrivatePostgres, private_postgres

# --- the journal's disk is full ------------------------------------------------------------


def _alert(n: int) -> Alert:
    return Alert(
        fingerprint=f"{n:016x}",
        status="firing",
        labels={"alertname": "Poke", "target": f"t{n}"},
        annotations={},
        starts_at=datetime(2026, 11, 23, 8, 0, tzinfo=UTC),
    )


_PLAN = HealPlan("poke", "test.noop", {}, {}, False)


async def test_a_full_disk_makes_writes_fail_and_they_succeed_once_freed(tmp_path: Path) -> None:
    """On a filesystem filled to ENOSPC every journal write (and the readiness probe)
    raises JournalUnavailable; the failed write leaves nothing behind; once space is freed
    the same connection writes again - no reopen by the caller, no restart - and the
    alert that failed is stored exactly once."""
    with small_disk(tmp_path / "disk", size="2m") as disk:
        journal = await SqliteStore.open(disk.path / "journal.db")
        try:
            await journal.ingest([_alert(1)], lambda _: _PLAN)
            disk.fill()
            for _ in range(3):  # not only the first failure: later ones too
                with pytest.raises(JournalUnavailable, match="full"):
                    await journal.ingest([_alert(2)], lambda _: _PLAN)
                with pytest.raises(JournalUnavailable, match="full"):
                    await journal.ping()
            assert [h["fingerprint"] for h in await journal.list_heals()] == [
                _alert(1).fingerprint
            ]  # reads still work

            disk.free()
            [disposition] = await journal.ingest([_alert(2)], lambda _: _PLAN)
            await journal.ping()
            [again] = await journal.ingest([_alert(2)], lambda _: _PLAN)
        finally:
            await journal.close()
    assert disposition.status == "started"
    assert again.status == "duplicate"


# --- PostgreSQL is unreachable ------------------------------------------------------------------

PASSWORD = "pg-s3cret-never-shown"


class SessionsParams(HandlerParams):
    db: str


class CountSessions:
    """Reads pg_stat_activity through ``ctx.postgres`` and changes nothing."""

    name: ClassVar[str] = "test.pg_sessions"
    Params: ClassVar[type[HandlerParams]] = SessionsParams
    requires: ClassVar[frozenset[str]] = frozenset({"postgres"})

    async def check(self, ctx: HealContext, params: SessionsParams) -> CheckResult:
        sessions = await ctx.postgres.sessions(params.db)
        return CheckResult(
            targets=[Target(kind="postgres", name=params.db)],
            evidence={"sessions": len(sessions)},
            act=False,
            reason=f"{len(sessions)} other sessions: nothing to do",
        )

    async def act(self, ctx: HealContext, params: SessionsParams, check: CheckResult) -> ActResult:
        raise AssertionError("never acts")


@pytest.fixture
def pg() -> Iterator[PrivatePostgres]:
    with private_postgres() as pg:
        yield pg


def _config(tmp_path: Path) -> dict[str, Any]:
    return {
        "journal": str(tmp_path / "journal.db"),
        "prometheus": {"url": "http://127.0.0.1:9", "timeout": "0.2s"},
        "databases": {"private": {"dsn_env": "HEALER_TEST_PRIVATE_DSN", "connect_timeout": "2s"}},
        "allow": [{"kind": "postgres", "name": "*"}],
        "rules": [
            {
                "name": "count",
                "match": 'alertname="PgCheck"',
                "handler": "test.pg_sessions",
                "params": {"db": "private"},
            }
        ],
    }


@pytest.mark.postgres
async def test_an_unreachable_database_fails_the_heal_redacted_and_healer_stays_up(
    tmp_path: Path, pg: PrivatePostgres
) -> None:
    """With its PostgreSQL server stopped, a heal whose handler reads the database ends
    `failed` with the connection error recorded - and the DSN's password nowhere - while
    healer keeps answering and /health/ready reports that database down. Once the
    server is back, the next heal reaches it again."""
    handlers = HandlerRegistry.from_entry_points(("test.pg_sessions", CountSessions()))
    secrets = Secrets(admin_token="admin", databases={"private": pg.dsn(password=PASSWORD)})
    async with running_healer(_config(tmp_path), handlers=handlers, secrets=secrets) as h:

        async def heal(n: int) -> dict[str, Any]:
            resp = await h.client.post(
                "/api/v1/alerts",
                json=alert_payload({"alertname": "PgCheck", "n": str(n)}, fingerprint=f"{n:016x}"),
            )
            [started] = resp.json()["started"]
            return await h.wait_for_outcome(started["heal_id"], timeout=30)

        async def postgres_check() -> dict[str, str]:
            checks: dict[str, dict[str, str]] = (await h.client.get("/health/ready")).json()[
                "checks"
            ]
            return checks["postgres:private"]

        assert (await heal(1))["outcome"] == "no_action"  # reachable: the handler works
        assert await postgres_check() == {"status": "up"}

        pg.stop()
        failed = await heal(2)

        assert failed["outcome"] == "failed"
        assert failed["reason"].startswith("check failed: ActionFailed: "), failed["reason"]
        assert "database 'private'" in failed["reason"]
        assert PASSWORD not in json.dumps(failed)
        assert (await h.client.get("/health")).json() == {"status": "ok"}
        down = await postgres_check()
        assert down["status"] == "down" and PASSWORD not in down["error"]

        pg.start()
        assert (await heal(3))["outcome"] == "no_action"
        assert await postgres_check() == {"status": "up"}
