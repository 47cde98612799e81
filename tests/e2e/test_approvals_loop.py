"""Suggest and approve on the whole loop (a busybox service, real Prometheus, real
Alertmanager, a real ``healer serve`` process, a real dockerd): ``mode: suggest`` never
touches the container while the alert fires; ``mode: approve`` waits for a human, and two
approvals posted together restart the container exactly once (dockerd's own events),
then the heal verifies ``recovered``."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.support.env import wait_until
from tests.support.scenarios.faults import docker_restarts
from tests.support.scenarios.loop import Loop

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.prometheus]


def _started_at(loop: Loop) -> str:
    loop.service.container.reload()
    return str(loop.service.container.attrs["State"]["StartedAt"])


def _approve(loop: Loop, heal_id: str, by: str) -> httpx.Response:
    with httpx.Client(timeout=10.0) as client:
        return client.post(
            f"{loop.healer.url}/api/v1/heals/{heal_id}/approve",
            json={"by": by},
            headers={"Authorization": f"Bearer {loop.admin_token}"},
        )


def test_suggest_never_touches_the_container(make_loop: Any) -> None:
    """``mode: suggest``: the heal ends ``suggested`` naming the container it would
    restart; dockerd restarted nothing, the container kept its start time and the alert
    still fires; healer_heals_total{outcome="suggested"} is 1."""
    since = time.time()
    loop = make_loop(mode="suggest")
    before = _started_at(loop)
    loop.service.break_()
    heal = loop.wait_for_finished_heal()
    target = f"docker:{loop.service.name}"
    assert (heal["outcome"], heal["reason"]) == ("suggested", f"suggested: would act on {target}")
    assert "act" not in [e["kind"] for e in heal["timeline"]]
    assert _started_at(loop) == before
    assert loop.firing(), "the alert must still fire: nothing was done"
    assert docker_restarts(loop.service.container.client, loop.service.name, since) == 0
    assert loop.metric("healer_heals_total", {"outcome": "suggested"}) == 1


def test_two_approvals_together_restart_once(make_loop: Any) -> None:
    """``mode: approve``: the heal waits in ``awaiting_approval`` (listed by
    ``phase=awaiting_approval``) and the container is untouched; two approvals posted at
    once: one 200, one 409; dockerd shows exactly one restart and the heal ends
    ``recovered`` with one ``act`` entry and the winner as approver."""
    since = time.time()
    loop = make_loop(mode="approve")
    loop.service.break_()
    [waiting] = wait_until(
        lambda: loop.heals(phase="awaiting_approval"),
        timeout=90,
        interval=0.5,
        what="a heal awaiting approval",
    )
    assert docker_restarts(loop.service.container.client, loop.service.name, since) == 0
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda by: _approve(loop, waiting["id"], by), ["ann", "ben"]))
    assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
    [won] = [a.json()["by"] for a in answers if a.status_code == 200]
    heal = loop.wait_for_finished_heal()
    assert heal["id"] == waiting["id"]
    assert heal["outcome"] == "recovered", (heal["reason"], loop.healer.log_tail())
    kinds = [e["kind"] for e in heal["timeline"]]
    assert kinds.count("act") == 1 and kinds.count("check") == 2
    [approved] = [e["data"] for e in heal["timeline"] if e["kind"] == "approved"]
    assert approved["by"] == won
    assert docker_restarts(loop.service.container.client, loop.service.name, since) == 1
