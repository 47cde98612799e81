"""The whole loop on real components: a busybox service scraped by a real
Prometheus (1 s intervals, the shipped alerts/demo.rules.yml), a real
Alertmanager posting to a real `healer serve` process (the shipped
examples/demo/healer.yml) that restarts the container through a real dockerd
and verifies through Prometheus."""

from __future__ import annotations

import pytest

from tests.support.scenarios.loop import Loop

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.prometheus]


def _started_at(loop: Loop) -> str:
    loop.service.container.reload()
    return str(loop.service.container.attrs["State"]["StartedAt"])


def _kinds(heal: dict) -> list[str]:
    return [event["kind"] for event in heal["timeline"]]


def test_broken_service_is_restarted_and_verified_recovered(make_loop) -> None:
    """Breaking the service fires DemoServiceUnhealthy; healer alone restarts the container
    and ends `recovered` once Prometheus shows the alert gone, with the whole timeline
    journaled and healer_heals_total{outcome="recovered"} at 1."""
    loop = make_loop()
    before = _started_at(loop)

    loop.service.break_()
    heal = loop.wait_for_finished_heal()

    assert heal["outcome"] == "recovered", (heal["reason"], loop.healer.log_tail())
    assert _started_at(loop) != before
    assert loop.service.metric() == 1
    kinds = _kinds(heal)
    for kind in ("matched", "check", "act", "verify_start", "verify_sample", "outcome"):
        assert kind in kinds, kinds
    samples = [e["data"] for e in heal["timeline"] if e["kind"] == "verify_sample"]
    assert samples[-1]["healthy"] is True
    assert heal["targets"] == [f"docker:{loop.service.name}"]
    assert (
        loop.metric("healer_heals_total", {"outcome": "recovered", "handler": "docker.restart"})
        == 1
    )
    assert loop.metric("healer_time_to_recovery_seconds_count", {}) == 1


def test_dry_run_rule_records_but_never_touches_the_container(make_loop) -> None:
    """With the rule in dry-run the heal ends `dry_run`: the container is not restarted and
    the alert is still firing in Prometheus."""
    loop = make_loop(dry_run=True)
    before = _started_at(loop)

    loop.service.break_()
    heal = loop.wait_for_finished_heal()

    assert heal["outcome"] == "dry_run", heal["reason"]
    assert "act" not in _kinds(heal)
    assert _started_at(loop) == before
    assert loop.service.metric() == 0
    assert loop.firing(), "the alert should still be firing: nothing was healed"


def test_fault_a_restart_cannot_fix_ends_not_recovered(make_loop) -> None:
    """A service that reports unhealthy again after every boot is restarted once and the heal
    ends `not_recovered` at the verify deadline - never `recovered`."""
    loop = make_loop(timeout="12s")
    before = _started_at(loop)

    loop.service.break_(sticky=True)
    heal = loop.wait_for_finished_heal()

    assert heal["outcome"] == "not_recovered", heal["reason"]
    assert _started_at(loop) != before, "the restart should have been attempted"
    assert loop.metric("healer_heals_total", {"outcome": "recovered"}) in (None, 0)
    assert loop.metric("healer_heals_total", {"outcome": "not_recovered"}) == 1
    assert len(loop.heals()) == 1


def test_service_that_comes_back_mute_ends_not_recovered(make_loop) -> None:
    """A container that runs after the restart but never serves again (every scrape fails)
    keeps the alert firing through `up == 0`: the heal ends `not_recovered`, never
    `recovered` on the strength of a metric that merely disappeared."""
    loop = make_loop(timeout="12s")

    loop.service.mute()
    heal = loop.wait_for_finished_heal()

    assert heal["outcome"] == "not_recovered", heal["reason"]
    assert loop.service.metric() is None
    assert loop.metric("healer_heals_total", {"outcome": "recovered"}) in (None, 0)
