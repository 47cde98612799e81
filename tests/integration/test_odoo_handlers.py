"""The odoo.* container handlers through the real engine, in-process:
odoo.restart_workers and odoo.restart_longpoll against a real dockerd
(odoo.unlock_cron has its own file, test_odoo_unlock_cron.py).

Prometheus is a dead loopback port: a heal that acts ends ``unverified`` (manual
triggers have nothing to verify), so the outcome says whether healer acted.
"""

from __future__ import annotations

import itertools
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support.inprocess.inproc import running_healer
from tests.support.inprocess.inproc import timeline_event as event
from tests.support.servers.docker_events import container_events

WAIT = 30.0


# ---- odoo.restart_workers / odoo.restart_longpoll: real dockerd -------------------------


def docker_config(tmp_path: Path, project: str) -> dict[str, Any]:
    return {
        "journal": str(tmp_path / "journal.db"),
        "prometheus": {"url": "http://127.0.0.1:9", "timeout": "0.2s"},
        "verify": {"stable_for": "0s", "timeout": "0.3s"},
        "allow": [{"kind": "docker", "compose_project": project}],
        "rules": [],
    }


def compose(project: str, service: str) -> dict[str, str]:
    return {"com.docker.compose.project": project, "com.docker.compose.service": service}


def started_at(container: Any) -> str:
    container.reload()
    return str(container.attrs["State"]["StartedAt"])


def ns(docker_time: str) -> int:
    """Docker's RFC 3339 time with up to 9 fractional digits, as integer nanoseconds."""
    whole, _, frac = docker_time.rstrip("Z").partition(".")
    seconds = datetime.fromisoformat(whole + "+00:00").timestamp()
    return int(seconds) * 10**9 + int((frac + "000000000")[:9])


async def trigger(
    tmp_path: Path, project: str, handler: str, params: dict[str, Any]
) -> dict[str, Any]:
    async with running_healer(docker_config(tmp_path, project)) as h:
        resp = await h.client.post(
            "/api/v1/heals", headers=h.admin_headers, json={"handler": handler, "params": params}
        )
        assert resp.status_code == 202, resp.text
        return await h.wait_for_outcome(resp.json()["heal_id"], 120)


def events_of(client: Any, names: list[str], since: int) -> list[dict[str, Any]]:
    """dockerd's container events for ``names`` since ``since``, oldest first."""
    return container_events(client, since=since, filters={"container": names})


def _odoo_services(containers: Any) -> tuple[str, list[str], list[Any]]:
    """Three Odoo-like compose services (core, accounting, marketing) with 64 MiB limits
    and healthchecks, in one fresh project: (project, service order, containers)."""
    tag = uuid.uuid4().hex[:8]
    project = f"odoo{tag}"
    order = ["odoo-core", "odoo-accounting", "odoo-marketing"]
    services = [
        containers.run_service(
            name=f"healer-test-{svc}-{tag}",
            mem_limit="64m",
            labels=compose(project, svc),
            healthcheck=True,
        )
        for svc in order
    ]
    return project, order, services


@pytest.mark.docker
async def test_restart_workers_rolls_one_at_a_time_recording_memory(
    tmp_path: Path, containers: Any, docker_client: Any
) -> None:
    """Three Odoo-like services with 64 MiB limits and healthchecks are restarted in the
    order the rule lists them, each back healthy before the next one is stopped; every
    StartedAt changes, and memory (working set and limit) is recorded before and after."""
    project, order, services = _odoo_services(containers)
    names = [s.name for s in services]
    before = {s.name: started_at(s.container) for s in services}
    since = int(time.time()) - 1

    heal = await trigger(
        tmp_path,
        project,
        "odoo.restart_workers",
        {"services": order, "project": project, "stop_timeout": 5, "health_timeout": "30s"},
    )

    assert heal["outcome"] == "unverified", heal["reason"]
    assert heal["targets"] == [f"docker:{n}" for n in names]
    restarted = event(heal, "act")["details"]["restarted"]
    assert [r["container"] for r in restarted] == names
    after = [started_at(s.container) for s in services]
    assert all(a != before[n] for a, n in zip(after, names, strict=True))
    assert ns(after[0]) < ns(after[1]) < ns(after[2])
    limit = 64 * 2**20
    for r in restarted:
        assert r["health"] == "healthy"
        for key in ("memory_before", "memory_after"):
            assert r[key]["limit"] == limit, r[key]
            assert 0 < r[key]["usage"] <= limit
    checked = event(heal, "check")["evidence"]["containers"]
    assert [c["mem_limit"] for c in checked] == [limit] * 3
    # dockerd's own record: each container was healthy again before the next was stopped.
    events = events_of(docker_client, names, since)
    restarted_at = dict(zip(names, map(ns, after), strict=True))
    for prev, nxt in itertools.pairwise(names):
        healthy = min(
            e["timeNano"]
            for e in events
            if e["Actor"]["Attributes"]["name"] == prev
            and e["Action"] == "health_status: healthy"
            and e["timeNano"] > restarted_at[prev]
        )
        killed = min(
            e["timeNano"]
            for e in events
            if e["Actor"]["Attributes"]["name"] == nxt and e["Action"] == "kill"
        )
        assert healthy < killed, f"{nxt} was stopped before {prev} was healthy again"


@pytest.mark.docker
async def test_rollout_stops_at_a_container_that_does_not_come_back(
    tmp_path: Path, containers: Any
) -> None:
    """When the second container comes back without serving (never healthy), the heal
    fails naming it, the first was restarted and the third is never touched."""
    project, order, services = _odoo_services(containers)
    first, broken, last = services
    broken.mute()  # runs after a restart, but serves nothing: its healthcheck fails
    before = {s.name: started_at(s.container) for s in services}

    heal = await trigger(
        tmp_path,
        project,
        "odoo.restart_workers",
        {"services": order, "project": project, "stop_timeout": 5, "health_timeout": "3s"},
    )

    assert heal["outcome"] == "failed"
    assert f"rollout stopped at {broken.name}" in heal["reason"]
    assert f"restarted before it: {first.name}" in heal["reason"]
    assert f"not restarted: {last.name}" in heal["reason"]
    stopped = event(heal, "rollout_stopped")
    assert (stopped["restarted"], stopped["not_restarted"]) == ([first.name], [last.name])
    assert started_at(first.container) != before[first.name]
    assert started_at(broken.container) != before[broken.name]
    assert started_at(last.container) == before[last.name]


@pytest.mark.docker
async def test_restart_longpoll_restarts_the_longpoll_service_only(
    tmp_path: Path, containers: Any
) -> None:
    """odoo.restart_longpoll restarts the compose service serving the longpoll port, waits
    for it to be healthy and records its state before and after; the web service of the
    same project is untouched."""
    tag = uuid.uuid4().hex[:8]
    project = f"odoo{tag}"
    longpoll = containers.run_service(
        name=f"healer-test-longpoll-{tag}",
        healthcheck=True,
        labels=compose(project, "odoo-longpoll"),
    )
    web = containers.run_service(name=f"healer-test-web-{tag}", labels=compose(project, "odoo-web"))
    before = {s.name: started_at(s.container) for s in (longpoll, web)}

    heal = await trigger(
        tmp_path,
        project,
        "odoo.restart_longpoll",
        {"service": "odoo-longpoll", "project": project, "stop_timeout": 5},
    )

    assert heal["outcome"] == "unverified", heal["reason"]
    assert heal["targets"] == [f"docker:{longpoll.name}"]
    record = event(heal, "restarted")
    assert record["before"]["started_at"] == before[longpoll.name]
    assert record["after"]["started_at"] == started_at(longpoll.container)
    assert record["after"]["health"] == "healthy"
    assert record["memory_after"]["usage"] > 0
    assert started_at(web.container) == before[web.name]
    longpoll.wait_for_metric(1)
