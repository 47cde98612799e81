"""A resolve before acting, with docker.restart on a real dockerd where an action would
show: of two pending heals, the one whose alert resolved ends ``no_action`` and its
container is never restarted (dockerd's own events say so), while the other, still
firing, is restarted - after waiting for a concurrency slot, and after a restart of
healer (the resolve journaled before it, or only Prometheus knowing, as when the alert
resolved while healer was down)."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from healer.api import Alert
from healer.plugins import HandlerRegistry
from healer.store import HealPlan, SqliteStore
from tests.support.inprocess.gates import fingerprint, until
from tests.support.inprocess.inproc import running_healer
from tests.support.inprocess.noop import recording_noop
from tests.support.inprocess.payloads import alert_payload
from tests.support.scenarios.faults import docker_restarts

pytestmark = pytest.mark.docker

STARTS = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
RESTART = HealPlan(
    "restart",
    "docker.restart",
    {"containers": ["{{ labels.container }}"], "stop_timeout": 1},
    {"query": None, "stable_for": 0.0, "timeout": 0.3, "interval": None},
    False,
)


def _config(tmp_path: Path, glob: str, prometheus: str = "http://127.0.0.1:9") -> dict[str, Any]:
    """``Hold`` -> the no-op handler (a slot holder the test releases); ``ServiceDown``
    -> docker.restart of ``labels.container``; one concurrency slot."""
    return {
        "journal": str(tmp_path / "journal.db"),
        "prometheus": {"url": prometheus, "timeout": "0.5s"},  # :9 -> unverified
        "verify": {"stable_for": "0s", "timeout": "0.3s"},
        "max_concurrent_heals": 1,
        "allow": [{"kind": "docker", "name": glob}, {"kind": "test", "name": "*"}],
        "rules": [
            {
                "name": "hold",
                "match": 'alertname="Hold"',
                "handler": "test.noop",
                "params": {"target": "slot"},
            },
            {
                "name": RESTART.rule,
                "match": 'alertname="ServiceDown"',
                "handler": RESTART.handler,
                "params": RESTART.params,
            },
        ],
    }


def _alert(container: str, status: str = "firing") -> Alert:
    return Alert(
        fingerprint=fingerprint("ServiceDown", container),
        status=status,
        labels={"alertname": "ServiceDown", "container": container},
        annotations={},
        starts_at=STARTS,
    )


def _post(alert: Alert) -> dict[str, Any]:
    return alert_payload(
        dict(alert.labels),
        fingerprint=alert.fingerprint,
        status=alert.status,
        starts_at=alert.starts_at,
    )


def _pair(containers: Any) -> tuple[str, list[str]]:
    tag = uuid.uuid4().hex[:8]
    names = [f"healer-test-rba-{side}-{tag}" for side in ("resolved", "firing")]
    for name in names:
        containers.run(["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.2; done"], name=name)
    return f"healer-test-rba-*-{tag}", names


def _assert_only_the_firing_one_restarted(
    heals: list[dict[str, Any]], names: list[str], docker_client: Any, since: float
) -> None:
    resolved, firing = heals
    assert resolved["outcome"] == "no_action", resolved["reason"]
    assert resolved["reason"].startswith("resolved before acting: ")
    assert "act" not in [e["kind"] for e in resolved["timeline"]]
    assert firing["outcome"] == "unverified", firing["reason"]  # acted; nothing to verify
    assert docker_restarts(docker_client, names[0], since) == 0
    assert docker_restarts(docker_client, names[1], since) == 1


async def test_slot_wait_then_resolved_is_never_restarted(
    tmp_path: Path, containers, docker_client
) -> None:
    """Both heals wait for the one slot (held by another heal); only one alert resolves
    meanwhile. When the slot frees, that heal ends no_action and its container keeps
    running untouched; the other container is restarted."""
    glob, names = _pair(containers)
    since = time.time()
    noop = recording_noop()
    noop.gate = asyncio.Event()
    handlers = HandlerRegistry.from_entry_points(("test.noop", noop))
    async with running_healer(_config(tmp_path, glob), handlers=handlers) as h:
        resp = await h.client.post("/api/v1/alerts", json=alert_payload({"alertname": "Hold"}))
        holder = resp.json()["started"][0]["heal_id"]
        await until(lambda: len(noop.acts) == 1, what="the slot holder to act")
        ids = []
        for name in names:
            resp = await h.client.post("/api/v1/alerts", json=_post(_alert(name)))
            ids.append(resp.json()["started"][0]["heal_id"])
        resp = await h.client.post("/api/v1/alerts", json=_post(_alert(names[0], "resolved")))
        assert resp.json()["resolved"], resp.text
        noop.gate.set()
        heals = [await h.wait_for_outcome(heal_id) for heal_id in ids]
        await h.wait_for_outcome(holder)
    _assert_only_the_firing_one_restarted(heals, names, docker_client, since)


async def test_resolved_while_healer_was_down_is_never_restarted(
    tmp_path: Path, containers, docker_client
) -> None:
    """Two heals left pending by a dead healer, one alert's resolve journaled meanwhile:
    the next start ends that one no_action without touching its container, and heals the
    other."""
    glob, names = _pair(containers)
    since = time.time()
    journal = await SqliteStore.open(tmp_path / "journal.db")
    try:
        dispositions = await journal.ingest([_alert(n) for n in names], lambda _: RESTART)
        await journal.ingest([_alert(names[0], "resolved")], lambda _: None)
    finally:
        await journal.close()
    handlers = HandlerRegistry.from_entry_points(("test.noop", recording_noop()))
    async with running_healer(_config(tmp_path, glob), handlers=handlers) as h:
        heals = [await h.wait_for_outcome(d.heal_id or "") for d in dispositions]
    _assert_only_the_firing_one_restarted(heals, names, docker_client, since)


async def test_resolved_while_healer_was_down_and_only_prometheus_knows(
    tmp_path: Path, containers, docker_client, prometheus
) -> None:
    """Two heals left pending by a dead healer, no resolve journaled (Alertmanager has
    not re-delivered it yet). At the next start each asks a real Prometheus, once,
    whether its alert still fires (here through the heal's own ``verify.query``):
    ``vector(0)`` (gone) ends no_action, its container untouched; ``vector(1)`` (still
    firing) is restarted."""
    glob, names = _pair(containers)
    since = time.time()
    prom = prometheus.start([])
    journal = await SqliteStore.open(tmp_path / "journal.db")
    try:
        dispositions = [
            await journal.ingest(
                [_alert(name)],
                lambda _, q=query: HealPlan(
                    RESTART.rule,
                    RESTART.handler,
                    RESTART.params,
                    {**RESTART.verify, "query": q},
                    False,
                ),
            )
            for name, query in zip(names, ["vector(0)", "vector(1)"], strict=True)
        ]
    finally:
        await journal.close()
    handlers = HandlerRegistry.from_entry_points(("test.noop", recording_noop()))
    async with running_healer(_config(tmp_path, glob, prom.url), handlers=handlers) as h:
        heals = [await h.wait_for_outcome(d.heal_id or "") for [d] in dispositions]
    resolved, firing = heals
    assert resolved["outcome"] == "no_action", resolved["reason"]
    assert "Prometheus no longer reports the alert firing (vector(0))" in resolved["reason"]
    assert firing["outcome"] == "not_recovered", firing["reason"]  # acted; vector(1) stays
    for heal, healthy in zip(heals, [True, False], strict=True):
        check = next(e for e in heal["timeline"] if e["kind"] == "firing_check")
        assert check["data"]["healthy"] is healthy
    assert docker_restarts(docker_client, names[0], since) == 0
    assert docker_restarts(docker_client, names[1], since) == 1
