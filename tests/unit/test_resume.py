"""What a restarted healer does with heals a previous run left unfinished."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from healer.api import Alert
from healer.outcomes import Phase
from healer.store import HealPlan, SqliteStore
from tests.support.inprocess.inproc import InProcessHealer, noop_config, running_healer
from tests.support.inprocess.payloads import alert_payload


def _config(tmp_path: Path) -> dict[str, Any]:
    return noop_config(tmp_path / "journal.db")


async def _journal_heal(tmp_path: Path, phase: Phase | None) -> str:
    """Journal one matched alert as a killed healer would have left it."""
    journal = await SqliteStore.open(tmp_path / "journal.db")
    try:
        alert = Alert(
            fingerprint="abc123",
            status="firing",
            labels={"alertname": "Poke", "target": "t1"},
            annotations={},
            starts_at=datetime(2026, 11, 23, 8, 0, tzinfo=UTC),
        )
        plan = HealPlan(
            "poke",
            "test.noop",
            {"target": "{{ labels.target }}"},
            {"query": None, "stable_for": 0.0, "timeout": 0.2, "interval": None},
            False,
        )
        [disposition] = await journal.ingest([alert], lambda _: plan)
        assert disposition.heal_id is not None
        if phase is not None:
            await journal.set_phase(disposition.heal_id, phase)
        return disposition.heal_id
    finally:
        await journal.close()


async def test_heal_journaled_but_never_started_runs_at_next_start(
    tmp_path, handlers, noop
) -> None:
    """A heal that was journaled (the webhook had answered 200) but never started, because
    healer died, runs at the next start: the alert is not lost."""
    heal_id = await _journal_heal(tmp_path, None)
    async with running_healer(_config(tmp_path), handlers=handlers) as h:
        heal = await h.wait_for_outcome(heal_id)
    assert heal["outcome"] == "unverified"  # acted; Prometheus is not there
    assert [p.target for p in noop.acts] == ["t1"]
    assert "resumed" in [e["kind"] for e in heal["timeline"]]


async def _wait_done(h: InProcessHealer, heal_id: str) -> dict[str, Any]:
    """The heal once its phase is done: an ``interrupted`` outcome is not the end of it."""
    deadline = time.monotonic() + 10
    while True:
        heal = await h.services.journal.get_heal(heal_id)
        if heal is not None and heal["phase"] == "done":
            return heal
        if time.monotonic() > deadline:
            raise TimeoutError(f"heal {heal_id} not done: {heal}")
        await asyncio.sleep(0.05)


def _kinds(heal: dict[str, Any]) -> list[str]:
    return [e["kind"] for e in heal["timeline"]]


@pytest.mark.parametrize("phase", [Phase.ACTING, Phase.VERIFYING])
async def test_heal_killed_after_acting_is_interrupted_then_reverified_never_repeated(
    tmp_path, handlers, noop, phase: Phase
) -> None:
    """A heal that was acting or verifying when healer died is journaled `interrupted` at
    the next start, then its verification resumes (here Prometheus is unreachable, so it
    ends `unverified`): the action is not run a second time."""
    heal_id = await _journal_heal(tmp_path, phase)
    async with running_healer(_config(tmp_path), handlers=handlers) as h:
        heal = await _wait_done(h, heal_id)
        labels = {"rule": "poke", "handler": "test.noop"}
        assert h.sample("healer_heals_total", {**labels, "outcome": "interrupted"}) == 1
        assert h.sample("healer_heals_total", {**labels, "outcome": "unverified"}) == 1
    assert heal["outcome"] == "unverified", heal["reason"]
    assert noop.checks == [] and noop.acts == []
    kinds = _kinds(heal)
    assert (
        kinds.index("interrupted")
        < kinds.index("verification_resumed")
        < kinds.index("verify_start")
        < kinds.index("outcome")
    )
    interrupted = next(e for e in heal["timeline"] if e["kind"] == "interrupted")
    assert interrupted["phase"] == str(phase)
    assert "act" not in kinds


async def test_a_stopped_healer_journals_running_heals_interrupted(
    tmp_path, handlers, noop
) -> None:
    """Stopping healer while a heal is acting (past shutdown_grace) journals it
    `interrupted` in that phase; the next start re-verifies it without acting again and
    without a second `interrupted` entry."""
    config = {**_config(tmp_path), "shutdown_grace": "0.2s"}
    noop.gate = asyncio.Event()  # act never returns on its own
    async with running_healer(config, handlers=handlers) as h:
        resp = await h.client.post(
            "/api/v1/alerts", json=alert_payload({"alertname": "Poke", "target": "t1"})
        )
        [started] = resp.json()["started"]
        heal_id = started["heal_id"]
        for _ in range(200):
            if noop.acts:
                break
            await asyncio.sleep(0.02)
        assert len(noop.acts) == 1
    journal = await SqliteStore.open(tmp_path / "journal.db")
    try:
        stopped = await journal.get_heal(heal_id)
    finally:
        await journal.close()
    assert stopped is not None
    assert (stopped["outcome"], stopped["phase"]) == ("interrupted", "acting")
    assert "healer stopped while acting" in stopped["reason"]

    noop.gate = None
    async with running_healer(config, handlers=handlers) as h:
        heal = await _wait_done(h, heal_id)
    assert heal["outcome"] == "unverified"
    assert len(noop.acts) == 1
    assert _kinds(heal).count("interrupted") == 1
    assert _kinds(heal).count("verification_resumed") == 1


async def test_resent_alert_after_restart_starts_nothing(tmp_path, handlers, noop) -> None:
    """The same alert delivered again after a restart is a duplicate of the journaled one."""
    heal_id = await _journal_heal(tmp_path, None)
    async with running_healer(_config(tmp_path), handlers=handlers) as h:
        await h.wait_for_outcome(heal_id)
        payload = alert_payload({"alertname": "Poke", "target": "t1"}, fingerprint="abc123")
        resp = await h.client.post("/api/v1/alerts", json=payload)
    assert resp.status_code == 200
    assert resp.json()["duplicates"] == [{"fingerprint": "abc123", "heal_id": heal_id}]
    assert resp.json()["started"] == []
    assert len(noop.acts) == 1
