"""What a restarted healer does with heals a previous run left unfinished."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from healer.api import Alert
from healer.journal import HealPlan, Journal
from healer.outcomes import Phase
from tests.support.inproc import noop_config, running_healer


def _config(tmp_path: Path) -> dict[str, Any]:
    return noop_config(tmp_path / "journal.db")


async def _journal_heal(tmp_path: Path, phase: Phase | None) -> str:
    """Journal one matched alert as a killed healer would have left it."""
    journal = await Journal.open(tmp_path / "journal.db")
    try:
        alert = Alert(fingerprint="abc123", status="firing",
                      labels={"alertname": "Poke", "target": "t1"}, annotations={},
                      starts_at=datetime(2026, 11, 23, 8, 0, tzinfo=UTC))
        plan = HealPlan("poke", "test.noop", {"target": "{{ labels.target }}"},
                        {"query": None, "stable_for": 0.0, "timeout": 0.2, "interval": None},
                        False)
        [disposition] = await journal.ingest([alert], lambda _: plan)
        assert disposition.heal_id is not None
        if phase is not None:
            await journal.set_phase(disposition.heal_id, phase)
        return disposition.heal_id
    finally:
        await journal.close()


async def test_heal_journaled_but_never_started_runs_at_next_start(tmp_path, handlers,
                                                                   noop) -> None:
    """A heal that was journaled (the webhook had answered 200) but never started, because
    healer died, runs at the next start: the alert is not lost."""
    heal_id = await _journal_heal(tmp_path, None)
    async with running_healer(_config(tmp_path), handlers=handlers) as h:
        heal = await h.wait_for_outcome(heal_id)
    assert heal["outcome"] == "unverified"  # acted; Prometheus is not there
    assert [p.target for p in noop.acts] == ["t1"]
    assert "resumed" in [e["kind"] for e in heal["timeline"]]


async def test_heal_killed_mid_act_is_interrupted_not_repeated(tmp_path, handlers,
                                                               noop) -> None:
    """A heal that was acting when healer died ends `interrupted` at the next start and the
    action is not run a second time."""
    heal_id = await _journal_heal(tmp_path, Phase.ACTING)
    async with running_healer(_config(tmp_path), handlers=handlers) as h:
        heal = await h.wait_for_outcome(heal_id)
        assert h.sample("healer_heals_total", {"rule": "poke", "handler": "test.noop",
                                               "outcome": "interrupted"}) == 1
    assert heal["outcome"] == "interrupted"
    assert noop.acts == []


async def test_resent_alert_after_restart_starts_nothing(tmp_path, handlers, noop) -> None:
    """The same alert delivered again after a restart is a duplicate of the journaled one."""
    heal_id = await _journal_heal(tmp_path, None)
    async with running_healer(_config(tmp_path), handlers=handlers) as h:
        await h.wait_for_outcome(heal_id)
        payload = {"version": "4", "status": "firing", "alerts": [{
            "status": "firing", "labels": {"alertname": "Poke", "target": "t1"},
            "startsAt": "2026-11-23T08:00:00Z", "fingerprint": "abc123"}]}
        resp = await h.client.post("/api/v1/alerts", json=payload)
    assert resp.status_code == 200
    assert resp.json()["duplicates"] == [{"fingerprint": "abc123", "heal_id": heal_id}]
    assert resp.json()["started"] == []
    assert len(noop.acts) == 1
