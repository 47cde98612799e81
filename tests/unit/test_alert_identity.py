"""An alert's identity across the real Alertmanager 0.25 payloads: the resolved
notification reaches the heal of its firing alert, and late re-sends act on nothing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx

from healer.verify import Verifier
from tests.support.inprocess.inproc import running_healer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "alertmanager-0.25"


def _fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


def _config(tmp_path: Path, allow: str = "*") -> dict[str, Any]:
    return {
        "journal": str(tmp_path / "journal.db"),
        "prometheus": {"url": "http://127.0.0.1:9", "timeout": "0.2s"},
        "allow": [{"kind": "test", "name": allow}],
        "rules": [
            {
                "name": "leak",
                "match": 'alertname="OdooMemoryLeak"',
                "handler": "test.noop",
                "params": {"target": "{{ labels.container }}"},
                "verify": {"stable_for": "0s", "timeout": "1s"},
            }
        ],
    }


async def test_resolved_fixture_reaches_the_heal_of_its_firing_alert(
    tmp_path, handlers, noop
) -> None:
    """Alertmanager sends the resolved alert with startsAt cut to whole seconds; it is still
    recognised as the same alert and noted on the running heal."""
    noop.gate = asyncio.Event()
    async with running_healer(_config(tmp_path), handlers=handlers) as h:
        fired = await h.client.post("/api/v1/alerts", json=_fixture("firing-odoo-memory-leak.json"))
        heal_id = fired.json()["started"][0]["heal_id"]
        resolved = await h.client.post(
            "/api/v1/alerts", json=_fixture("resolved-odoo-memory-leak.json")
        )
        noop.gate.set()
        heal = await h.wait_for_outcome(heal_id)
    assert resolved.json()["resolved"] == [{"fingerprint": "d452607de083d9dd"}]
    assert "alert_resolved" in [e["kind"] for e in heal["timeline"]]


async def test_late_firing_resend_after_resolution_starts_nothing(tmp_path, handlers, noop) -> None:
    """A firing re-send that arrives after the alert was seen resolved (a slow HA peer) is
    ignored as stale instead of starting a heal."""
    async with running_healer(_config(tmp_path), handlers=handlers) as h:
        await h.client.post("/api/v1/alerts", json=_fixture("resolved-odoo-memory-leak.json"))
        late = await h.client.post("/api/v1/alerts", json=_fixture("firing-odoo-memory-leak.json"))
    assert late.json()["started"] == []
    assert late.json()["ignored"][0]["reason"].startswith("stale")
    assert noop.acts == []


async def test_history_by_target_finds_refused_heals(tmp_path, handlers, noop) -> None:
    """A heal refused by the allowlist is still found when history is filtered by its target."""
    async with running_healer(_config(tmp_path, allow="nothing-*"), handlers=handlers) as h:
        fired = await h.client.post("/api/v1/alerts", json=_fixture("firing-odoo-memory-leak.json"))
        heal = await h.wait_for_outcome(fired.json()["started"][0]["heal_id"])
        found = await h.client.get(
            "/api/v1/heals", headers=h.admin_headers, params={"target": "test:odoo-accounting"}
        )
    assert heal["outcome"] == "refused"
    assert [x["id"] for x in found.json()["heals"]] == [heal["id"]]


async def test_odd_prometheus_config_falls_back_instead_of_crashing() -> None:
    """A Prometheus whose config is not a mapping gives the default interval, not an error."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"status": "success", "data": {"yaml": "- a\n- b\n"}})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        verifier = Verifier(client, "http://prometheus", timeout=1)
        assert await verifier.interval() == 60.0
