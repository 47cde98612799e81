"""docker.restart through the real engine against a real dockerd: what it restarts,
what it refuses, and that re-sent alerts restart once."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.inprocess.inproc import running_healer
from tests.support.inprocess.payloads import alert_payload
from tests.support.servers.docker_events import container_events

pytestmark = pytest.mark.docker


def _config(tmp_path: Path, allow_glob: str, **rule: Any) -> dict[str, Any]:
    return {
        "journal": str(tmp_path / "journal.db"),
        # Nothing listens there: verification ends `unverified`, quickly.
        "prometheus": {"url": "http://127.0.0.1:9", "timeout": "0.2s"},
        "verify": {"stable_for": "0s", "timeout": "0.3s"},
        "allow": [{"kind": "docker", "name": allow_glob}],
        "rules": [
            {
                "name": "restart",
                "match": 'alertname="ServiceDown"',
                "handler": "docker.restart",
                "params": {"containers": ["{{ labels.container }}"], "stop_timeout": 1},
                **rule,
            }
        ],
    }


def _restart_events(client, name: str, since: int) -> int:
    """How many times dockerd says it restarted ``name`` since ``since``."""
    return len(
        container_events(client, since=since, filters={"container": name, "event": "restart"})
    )


def _started_at(container) -> str:
    container.reload()
    return str(container.attrs["State"]["StartedAt"])


def _sleeper(containers, name: str, labels: dict[str, str] | None = None):
    return containers.run(
        ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.2; done"], name=name, labels=labels
    )


async def test_allowed_container_is_restarted(tmp_path, containers) -> None:
    """A manual docker.restart of a container inside the allowlist restarts it: its StartedAt
    changes and the act step records before/after state."""
    tag = uuid.uuid4().hex[:8]
    ok = _sleeper(containers, f"healer-test-ok-{tag}")
    before = _started_at(ok)
    async with running_healer(_config(tmp_path, f"healer-test-ok-{tag}")) as h:
        resp = await h.client.post(
            "/api/v1/heals",
            headers=h.admin_headers,
            json={
                "handler": "docker.restart",
                "params": {"containers": [ok.name], "stop_timeout": 1},
            },
        )
        assert resp.status_code == 202, resp.text
        heal = await h.wait_for_outcome(resp.json()["heal_id"])
    assert heal["outcome"] == "unverified"  # acted; nothing to verify against here
    assert _started_at(ok) != before
    act = next(e for e in heal["timeline"] if e["kind"] == "act")
    assert act["data"]["summary"] == f"restarted {ok.name}"


async def test_container_outside_allowlist_is_refused_untouched(tmp_path, containers) -> None:
    """A container that exists but is outside the allowlist ends `refused` with the reason,
    and is not restarted."""
    tag = uuid.uuid4().hex[:8]
    other = _sleeper(containers, f"healer-test-other-{tag}")
    before = _started_at(other)
    async with running_healer(_config(tmp_path, f"healer-test-ok-{tag}")) as h:
        resp = await h.client.post(
            "/api/v1/alerts",
            json=alert_payload({"alertname": "ServiceDown", "container": other.name}),
        )
        heal_id = resp.json()["started"][0]["heal_id"]
        heal = await h.wait_for_outcome(heal_id)
    assert heal["outcome"] == "refused"
    assert "outside the allowlist" in heal["reason"]
    assert "act" not in [e["kind"] for e in heal["timeline"]]
    assert _started_at(other) == before


async def test_compose_service_selects_its_replicas(tmp_path, containers) -> None:
    """params.service (+ project) restarts every container carrying those compose labels and
    nothing else."""
    tag = uuid.uuid4().hex[:8]
    compose = {"com.docker.compose.project": f"p{tag}", "com.docker.compose.service": "web"}
    replicas = [_sleeper(containers, f"healer-test-web{i}-{tag}", compose) for i in (1, 2)]
    bystander = _sleeper(
        containers, f"healer-test-db-{tag}", {**compose, "com.docker.compose.service": "db"}
    )
    before = {c.name: _started_at(c) for c in [*replicas, bystander]}
    config = _config(tmp_path, "healer-test-*")
    config["allow"] = [{"kind": "docker", "compose_project": f"p{tag}", "compose_service": "web"}]
    async with running_healer(config) as h:
        resp = await h.client.post(
            "/api/v1/heals",
            headers=h.admin_headers,
            json={
                "handler": "docker.restart",
                "params": {"service": "web", "project": f"p{tag}", "stop_timeout": 1},
            },
        )
        heal = await h.wait_for_outcome(resp.json()["heal_id"])
    assert heal["outcome"] == "unverified", heal["reason"]
    assert sorted(heal["targets"]) == sorted(f"docker:{c.name}" for c in replicas)
    for c in replicas:
        assert _started_at(c) != before[c.name]
    assert _started_at(bystander) == before[bystander.name]


async def test_same_payload_posted_20_times_concurrently_restarts_once(
    tmp_path, containers, docker_client
) -> None:
    """Twenty concurrent deliveries of one alert (fingerprint + startsAt) start one heal and
    restart the container exactly once."""
    tag = uuid.uuid4().hex[:8]
    target = _sleeper(containers, f"healer-test-ok-{tag}")
    payload = alert_payload({"alertname": "ServiceDown", "container": target.name})
    since = int(time.time()) - 1
    async with running_healer(_config(tmp_path, f"healer-test-ok-{tag}")) as h:
        responses = await asyncio.gather(
            *(h.client.post("/api/v1/alerts", json=payload) for _ in range(20))
        )
        assert all(r.status_code == 200 for r in responses)
        started = [s for r in responses for s in r.json()["started"]]
        assert len(started) == 1
        await h.wait_for_outcome(started[0]["heal_id"])
        heals = await h.services.journal.list_heals()
    assert len(heals) == 1
    assert heals[0]["outcome"] == "unverified"
    assert _restart_events(docker_client, target.name, since) == 1
