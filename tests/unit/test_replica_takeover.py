"""Two healers, one journal: two replicas (in-process apps, two store objects on one
SQLite file, or on one PostgreSQL scratch database) with short leases. A heal whose
replica stops renewing its lease (a dead replica) is taken over by the other once the
lease expired, verified there and never acted again; the old replica's late writes are
refused (LeaseLost). Two alerts on one target delivered to both replicas never act at
once. A heal awaiting approval is taken over too, and waits on the same approval.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.noop import Noop
from healer.config import Secrets
from healer.errors import LeaseLost
from healer.outcomes import Outcome
from healer.plugins import HandlerRegistry
from tests.support.inprocess.inproc import InProcessHealer, noop_config, running_healer
from tests.support.inprocess.payloads import alert_payload
from tests.support.servers.postgres import scratch_database
from tests.support.servers.prometheus_standin import StillFiring


@dataclass(frozen=True)
class Journal:
    """The shared journal as ``journal:`` names it, and the secrets that resolve it."""

    config: Any
    secrets: Secrets


@pytest.fixture(params=["sqlite", "postgres"])
async def journal(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Journal]:
    """A SQLite file, or a PostgreSQL scratch database (dropped afterwards)."""
    if request.param == "sqlite":
        yield Journal(str(tmp_path / "journal.db"), Secrets(admin_token="admin-token"))
        return
    async with scratch_database() as dsn:
        yield Journal({"dsn": dsn}, Secrets(admin_token="admin-token", journal_dsn=dsn))


def _replica(config: dict[str, Any], journal: Journal, name: str) -> dict[str, Any]:
    return {
        **config,
        "journal": journal.config,
        "replica": {"id": name, "lease_ttl": "1s", "renew_every": "0.2s"},
    }


@asynccontextmanager
async def _two_replicas(
    config: dict[str, Any], journal: Journal, handlers: HandlerRegistry
) -> AsyncIterator[tuple[InProcessHealer, InProcessHealer]]:
    """``replica-a`` and ``replica-b`` of ``config`` on the shared journal."""
    async with (
        running_healer(
            _replica(config, journal, "replica-a"), handlers=handlers, secrets=journal.secrets
        ) as a,
        running_healer(
            _replica(config, journal, "replica-b"), handlers=handlers, secrets=journal.secrets
        ) as b,
    ):
        yield a, b


async def _until(
    h: InProcessHealer, heal_id: str, ok: Callable[[dict[str, Any]], bool], timeout: float = 20.0
) -> dict[str, Any]:
    """The heal once ``ok(heal)`` (polled, bounded); TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.05) + 1):
        heal = await h.services.journal.get_heal(heal_id)
        if heal is not None and ok(heal):
            return heal
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    raise TimeoutError(f"heal {heal_id}: condition not met after {timeout}s: {heal}")


async def _post(h: InProcessHealer, labels: dict[str, str], fingerprint: str) -> str:
    response = await h.client.post(
        "/api/v1/alerts", json=alert_payload(labels, fingerprint=fingerprint)
    )
    assert response.status_code == 200, response.text
    [started] = response.json()["started"]
    return str(started["heal_id"])


async def test_a_dead_replicas_heal_is_taken_over_after_expiry_and_acted_once(
    tmp_path: Path, journal: Journal, handlers: HandlerRegistry, noop: Noop
) -> None:
    """Replica A acts and verifies (the alert keeps firing), then stops renewing its
    lease (it died as far as the fleet can tell). B takes the heal over once the lease
    expired, resumes its verification (the action is not redone) and, the alert gone,
    finishes it recovered. Nothing A writes after the takeover lands: its timeline
    entries all come before B's, and its late outcome raises LeaseLost, outcome intact."""
    with StillFiring() as prom:
        config = noop_config(
            tmp_path / "journal.db", stable_for="0s", timeout="60s", interval="0.1s"
        )
        config["prometheus"] = {"url": prom.url, "timeout": "2s"}
        async with _two_replicas(config, journal, handlers) as (a, b):
            heal_id = await _post(a, {"alertname": "Poke", "target": "t1"}, "fdead")
            await _until(a, heal_id, lambda h: h["phase"] == "verifying")
            await a.services.executor.stop_leases()  # A's heartbeat dies

            taken = await _until(b, heal_id, lambda h: h["owner"] == "replica-b")
            assert taken["outcome"] in (None, "interrupted")
            prom.firing = False
            heal = await b.wait_for_outcome(heal_id)
            heal = await _until(b, heal_id, lambda h: h["phase"] == "done")
            assert heal["outcome"] == "recovered", heal
            assert [p.target for p in noop.acts] == ["t1"]  # acted once, by A

            by = [(e["kind"], e["replica"]) for e in heal["timeline"]]
            assert by.count(("act", "replica-a")) == 1 and "act" not in [
                k for k, r in by if r == "replica-b"
            ]
            first_b = next(i for i, (_, r) in enumerate(by) if r == "replica-b")
            assert all(r == "replica-b" for _, r in by[first_b:]), by
            assert ("verification_resumed", "replica-b") in by
            assert by[-1] == ("outcome", "replica-b")

            with pytest.raises(LeaseLost):
                await a.services.journal.finish(heal_id, Outcome.FAILED, "late", {})
            after = await b.services.journal.get_heal(heal_id) or {}
            assert (after["outcome"], after["timeline"]) == ("recovered", heal["timeline"])


async def test_two_alerts_on_one_target_on_two_replicas_never_act_at_once(
    tmp_path: Path, journal: Journal, handlers: HandlerRegistry, noop: Noop
) -> None:
    """Two alerts naming one target, one delivered to each replica while the first
    heal's act is held: exactly one acts, the other is suppressed "in flight" (the
    target lock is the store's, not one process's)."""
    noop.gate = asyncio.Event()
    config = noop_config(tmp_path / "journal.db")
    async with _two_replicas(config, journal, handlers) as (a, b):
        first = await _post(a, {"alertname": "Poke", "target": "t1", "n": "1"}, "f0001")
        await _until(a, first, lambda h: h["phase"] == "acting")
        second = await _post(b, {"alertname": "Poke", "target": "t1", "n": "2"}, "f0002")
        suppressed = await b.wait_for_outcome(second)
        noop.gate.set()
        done = await a.wait_for_outcome(first)
        outcomes = Counter([done["outcome"], suppressed["outcome"]])
        assert outcomes == Counter(["unverified", "suppressed"])
        assert "in flight" in suppressed["reason"]
        assert len(noop.acts) == 1


async def test_a_heal_awaiting_approval_is_taken_over_and_acted_once_by_its_new_owner(
    tmp_path: Path, journal: Journal, handlers: HandlerRegistry, noop: Noop
) -> None:
    """Replica A's heal waits for approval (``mode: approve``) when A stops renewing its
    lease. B takes it over and goes on waiting on the same approval (same deadline, one
    request on the timeline); an approval taken through A's API (any replica decides)
    reaches B, which checks again and acts once; A never acts."""
    config = noop_config(tmp_path / "journal.db")
    config["rules"][0]["mode"] = "approve"
    async with _two_replicas(config, journal, handlers) as (a, b):
        heal_id = await _post(a, {"alertname": "Poke", "target": "t1"}, "fwait")
        await _until(a, heal_id, lambda h: h["phase"] == "awaiting_approval")
        asked = await a.services.journal.get_approval(heal_id)
        await a.services.executor.stop_leases()  # A's heartbeat dies

        await _until(b, heal_id, lambda h: h["owner"] == "replica-b")
        deadline = time.monotonic() + 20
        while b.sample("healer_heals_awaiting_approval", {"rule": "poke"}) != 1:
            assert time.monotonic() < deadline, "B never waited on the approval"
            await asyncio.sleep(0.05)
        assert await b.services.journal.get_approval(heal_id) == asked
        response = await a.client.post(
            f"/api/v1/heals/{heal_id}/approve", json={"by": "ann"}, headers=a.admin_headers
        )
        assert response.status_code == 200, response.text

        heal = await _until(b, heal_id, lambda h: h["phase"] == "done")
        assert heal["outcome"] == "unverified", heal
        assert [p.target for p in noop.acts] == ["t1"]
        by = [(e["kind"], e["replica"]) for e in heal["timeline"]]
        assert by.count(("act", "replica-b")) == 1 and ("act", "replica-a") not in by
        assert [k for k, _ in by].count("approval_requested") == 1
