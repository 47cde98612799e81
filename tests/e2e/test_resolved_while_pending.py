"""Resolved alerts never trigger actions, in the whole loop (busybox service, real
Prometheus, Alertmanager and dockerd, `healer serve`): a heal whose alert Alertmanager
resolves while the heal waits ends ``no_action`` and dockerd never restarts the
container - while every concurrency slot is busy, and across a ``kill -9`` of healer
with the alert resolving while healer is down."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.env import wait_until
from tests.support.scenarios.faults import docker_restarts, kinds, wait_for_done
from tests.support.scenarios.loop import Loop, start_loop

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.prometheus]

RULE = "restart-unhealthy-service"


@pytest.fixture
def loop_with(tmp_path: Path, containers, prometheus, alertmanager, healer_process):
    """start_loop with ``overrides``; the allowlist keeps the service and adds exec."""

    def make(**overrides: Any) -> Loop:
        service = containers.run_service()
        allow = [{"kind": "docker", "name": service.name}, {"kind": "exec", "name": "*"}]
        return start_loop(
            workdir=tmp_path,
            service=service,
            prometheus=prometheus,
            alertmanager=alertmanager,
            healer=healer_process,
            overrides={"allow": allow, **overrides},
        )

    return make


def hold_the_slot(loop: Loop, release: Path) -> str:
    """A manual exec heal that acts (holding the only slot) until ``release`` exists."""
    with httpx.Client(timeout=10.0) as client:
        resp = client.post(
            f"{loop.healer.url}/api/v1/heals",
            headers={"Authorization": f"Bearer {loop.admin_token}"},
            json={
                "handler": "exec",
                "params": {
                    "argv": ["/bin/sh", "-c", f"while [ ! -e '{release}' ]; do sleep 0.2; done"],
                    "timeout": "5m",
                },
            },
        )
    assert resp.status_code == 202, resp.text
    heal_id: str = resp.json()["heal_id"]
    wait_until(
        lambda: loop.heal(heal_id)["phase"] == "acting",
        timeout=30,
        interval=0.2,
        what="the slot holder acting",
        ignore=(httpx.HTTPError,),
    )
    return heal_id


def alert_heal(loop: Loop, *, timeout: float = 60.0) -> dict[str, Any]:
    """The demo alert's heal, once healer has journaled it."""

    def found() -> dict[str, Any] | None:
        heals = loop.heals(rule=RULE)
        return heals[0] if heals else None

    return wait_until(
        found, timeout=timeout, interval=0.2, what="the alert's heal", ignore=(httpx.HTTPError,)
    )


def has_event(loop: Loop, heal_id: str, kind: str) -> bool:
    return kind in kinds(loop.heal(heal_id))


def assert_no_action(heal: dict[str, Any], loop: Loop, docker_client: Any, since: float) -> None:
    assert heal["outcome"] == "no_action", (heal["reason"], loop.healer.log_tail())
    assert heal["reason"].startswith("resolved before acting: "), heal["reason"]
    assert "act" not in kinds(heal)
    assert docker_restarts(docker_client, loop.service.name, since) == 0
    assert loop.metric("healer_heals_total", {"rule": RULE, "outcome": "no_action"}) == 1


def test_all_slots_busy_and_the_alert_resolves_while_pending(
    loop_with, docker_client, tmp_path: Path
) -> None:
    """One concurrency slot, held by another heal. The service breaks, Alertmanager
    delivers the alert (its heal waits, pending), the service recovers by itself and
    Alertmanager delivers the resolve. When the slot frees, the heal ends no_action and
    dockerd never restarts the container."""
    since = time.time()
    loop = loop_with(max_concurrent_heals=1)
    release = tmp_path / "release"
    holder = hold_the_slot(loop, release)
    try:
        loop.service.break_()
        heal = alert_heal(loop)
        assert heal["phase"] == "pending"
        loop.service.repair()
        wait_until(
            lambda: has_event(loop, heal["id"], "alert_resolved"),
            timeout=60,
            interval=0.25,
            what="Alertmanager's resolve",
            ignore=(httpx.HTTPError,),
        )
        assert loop.heal(heal["id"])["phase"] == "pending"
    finally:
        release.touch()
    done = wait_for_done(loop, heal["id"])
    assert wait_for_done(loop, holder)["outcome"] == "unverified"  # no alert to verify
    assert_no_action(done, loop, docker_client, since)
    assert "check" not in kinds(done)


def test_kill_9_while_pending_and_the_alert_resolves_while_healer_is_down(
    loop_with, docker_client
) -> None:
    """The alert's heal is pending (waiting for min_firing 60s) when healer is SIGKILLed;
    the service recovers while healer is down, so Prometheus and Alertmanager resolve
    the alert. healer restarts on the same journal: the heal resumes waiting (it is not
    acted on at once), Alertmanager's retried resolve arrives and ends it no_action, and
    dockerd never restarts the container."""
    since = time.time()
    loop = loop_with(safety={"min_firing": "60s"})
    loop.service.break_()
    heal = alert_heal(loop)
    wait_until(
        lambda: has_event(loop, heal["id"], "min_firing_wait"),
        timeout=30,
        interval=0.2,
        what="the min_firing wait",
        ignore=(httpx.HTTPError,),
    )

    loop.healer.kill()
    loop.service.repair()
    wait_until(
        lambda: not loop.firing(), timeout=60, interval=0.5, what="Prometheus to resolve the alert"
    )
    loop.healer.restart()

    done = wait_for_done(loop, heal["id"], timeout=90)
    assert_no_action(done, loop, docker_client, since)
    timeline = kinds(done)
    assert timeline.index("resumed") < timeline.index("alert_resolved") < timeline.index("outcome")
    assert "check" not in timeline


def test_kill_9_with_every_slot_busy_and_the_alert_resolving_while_healer_is_down(
    loop_with, docker_client, tmp_path: Path
) -> None:
    """The alert's heal is pending behind a busy slot (no min_firing) when healer is
    SIGKILLed; the alert resolves while healer is down. At the restart the heal would run
    at once, before Alertmanager re-delivers the resolve: it asks Prometheus first, finds
    the alert no longer firing, ends no_action, and dockerd never restarts the
    container."""
    since = time.time()
    loop = loop_with(max_concurrent_heals=1)
    release = tmp_path / "release"
    try:
        hold_the_slot(loop, release)
        loop.service.break_()
        heal = alert_heal(loop)
        assert heal["phase"] == "pending"
        loop.healer.kill()
        loop.service.repair()
        wait_until(
            lambda: not loop.firing(),
            timeout=60,
            interval=0.5,
            what="Prometheus to resolve the alert",
        )
        loop.healer.restart()
        done = wait_for_done(loop, heal["id"])
    finally:
        release.touch()  # the slot holder's script outlived the killed healer
    assert_no_action(done, loop, docker_client, since)
    # Prometheus answered "gone" (or, should Alertmanager's re-delivery win the race
    # with the resumed heal, the journal said "resolved": either way, no action).
    checks = [e["data"] for e in done["timeline"] if e["kind"] == "firing_check"]
    assert all(c["healthy"] is True for c in checks), checks
    assert "check" not in kinds(done)
