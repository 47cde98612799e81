"""The heal path (healer/executor.py) driven in-process through the webhook: check, act,
verify, the timeline, one action per target, dry runs, the allowlist and failing
handlers, with the no-op test handler doing the "healing".

Prometheus is an unused loopback port, so every heal that acts ends ``unverified``
after the rules' tiny verify timeout (0.3 s); nothing here needs dockerd or Prometheus.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.support.inprocess.gates import until
from tests.support.inprocess.inproc import InProcessHealer, Start
from tests.support.inprocess.inproc import web_alert as alert

WAIT = 5.0  # upper bound for any heal in these tests to finish


async def test_a_heal_runs_check_act_verify(healer: InProcessHealer) -> None:
    """A matching alert runs check then act with params rendered from its labels, and
    ends unverified when Prometheus cannot be reached (never recovered)."""
    [heal_id] = await healer.fire(alert(instance="web-7"))
    heal = await healer.wait_for_outcome(heal_id)
    assert heal["outcome"] == "unverified"
    assert heal["targets"] == ["test:web-7"]
    assert [p.target for p in healer.noop.checks] == ["web-7"]
    assert [p.target for p in healer.noop.acts] == ["web-7"]
    assert healer.heals_total("unverified") == 1
    assert healer.heals_total("recovered") == 0


async def test_the_timeline_records_every_step(healer: InProcessHealer) -> None:
    """GET /api/v1/heals/{id} shows matched, check (with evidence), act, verify_start,
    the verify samples and the outcome, in order."""
    [heal_id] = await healer.fire(alert())
    await healer.wait_for_outcome(heal_id)
    resp = await healer.client.get(f"/api/v1/heals/{heal_id}")
    assert resp.status_code == 200
    heal = resp.json()
    kinds = [e["kind"] for e in heal["timeline"]]
    assert kinds[:5] == ["matched", "check", "act", "verify_start", "verify_sample"]
    assert kinds[-1] == "outcome"
    assert set(kinds[4:-1]) == {"verify_sample"}
    events = {e["kind"]: e for e in heal["timeline"]}
    assert events["check"]["data"]["evidence"]["target"] == "web-1"
    assert events["act"]["data"]["summary"] == "poked web-1"
    assert events["verify_start"]["data"]["query"].startswith(
        'ALERTS{alertname="WebDown", alertstate="firing"'
    )
    assert events["verify_sample"]["data"]["healthy"] is None
    assert events["outcome"]["data"]["outcome"] == "unverified"
    assert [e["seq"] for e in heal["timeline"]] == list(range(1, len(kinds) + 1))
    assert set(heal["durations"]) >= {"check", "act", "verify", "total"}


async def test_entries_a_handler_records_soon_land_before_the_act_result(
    healer: InProcessHealer,
) -> None:
    """What act queues with ``ctx.record_soon`` (without waiting for the disk) is on the
    timeline in the order queued, before the engine's own ``act`` entry."""
    healer.noop.notes = ["first", "second"]
    [heal_id] = await healer.fire(alert())
    await healer.wait_for_outcome(heal_id)
    heal = (await healer.client.get(f"/api/v1/heals/{heal_id}")).json()
    kinds = [e["kind"] for e in heal["timeline"]]
    assert kinds[:5] == ["matched", "check", "first", "second", "act"]
    assert heal["timeline"][2]["data"] == {"target": "web-1"}


async def _first_done(healer: InProcessHealer, ids: list[str]) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT
    while True:
        for heal_id in ids:
            heal = await healer.journal.get_heal(heal_id)
            if heal is not None and heal["phase"] == "done":
                return heal
        if time.monotonic() > deadline:
            pytest.fail(f"none of {ids} done after {WAIT}s")
        await asyncio.sleep(0.02)


async def test_one_target_one_action(healer: InProcessHealer) -> None:
    """Two different alerts whose params resolve to the same target at the same time: one
    acts, the other ends suppressed naming the busy target."""
    healer.noop.gate = asyncio.Event()
    ids = await healer.fire(alert("WebDown", "web-1"), alert("WebSlow", "web-1"))
    assert len(ids) == 2
    await until(lambda: len(healer.noop.acts) == 1)
    # The act is held open: the other heal must end while the target is still busy.
    other = await _first_done(healer, ids)
    assert other["outcome"] == "suppressed"
    assert other["reason"] == "in flight: another heal is acting on test:web-1"
    healer.noop.gate.set()
    [acting] = [i for i in ids if i != other["id"]]
    assert (await healer.wait_for_outcome(acting))["outcome"] == "unverified"
    assert len(healer.noop.checks) == 2 and len(healer.noop.acts) == 1


async def test_different_targets_act_in_parallel(healer: InProcessHealer) -> None:
    """The lock is per target: two alerts on two targets both act."""
    healer.noop.gate = asyncio.Event()
    ids = await healer.fire(alert(instance="web-1"), alert(instance="web-2"))
    await until(lambda: len(healer.noop.acts) == 2)
    healer.noop.gate.set()
    assert [(await healer.wait_for_outcome(i))["outcome"] for i in ids] == [
        "unverified",
        "unverified",
    ]


async def test_a_dry_run_rule_never_acts(healer: InProcessHealer) -> None:
    """A dry-run rule checks, records what it would do and ends dry_run without acting."""
    [heal_id] = await healer.fire(alert("WebRehearse"))
    heal = await healer.wait_for_outcome(heal_id)
    assert heal["outcome"] == "dry_run"
    assert heal["reason"] == "dry run: would act on test:web-1"
    assert heal["dry_run"] is True
    assert len(healer.noop.checks) == 1 and healer.noop.acts == []
    assert "dry_run" in [e["kind"] for e in heal["timeline"]]
    assert healer.heals_total("dry_run", rule="rehearse") == 1


async def test_global_dry_run_never_acts(start: Start) -> None:
    """The top-level dry_run flag makes every rule a rehearsal."""
    async with start(dry_run=True) as h:
        [heal_id] = await h.fire(alert())
        assert (await h.wait_for_outcome(heal_id))["outcome"] == "dry_run"
        assert h.noop.acts == []


async def test_a_target_outside_the_allowlist_is_refused(healer: InProcessHealer) -> None:
    """A target no allowlist entry matches ends refused with the reason; act is never
    called."""
    [heal_id] = await healer.fire(alert(instance="db-1"))
    heal = await healer.wait_for_outcome(heal_id)
    assert heal["outcome"] == "refused"
    assert heal["reason"] == "test:db-1 is outside the allowlist"
    assert len(healer.noop.checks) == 1 and healer.noop.acts == []
    assert healer.heals_total("refused") == 1


async def test_an_empty_allowlist_refuses_everything(start: Start) -> None:
    """With no allowlist at all nothing may be acted on."""
    async with start(allow=[]) as h:
        [heal_id] = await h.fire(alert())
        heal = await h.wait_for_outcome(heal_id)
        assert heal["outcome"] == "refused"
        assert "allowlist is empty" in heal["reason"]


async def test_a_missing_label_refuses_the_heal(start: Start) -> None:
    """Params needing a label the alert lacks end refused; the handler is not called."""
    async with start() as h:
        body = alert()
        del body["labels"]["instance"]
        [heal_id] = await h.fire(body)
        heal = await h.wait_for_outcome(heal_id)
        assert heal["outcome"] == "refused"
        assert "labels.instance" in heal["reason"]
        assert h.noop.checks == []


async def test_a_raising_check_fails_the_heal_and_healer_keeps_answering(
    healer: InProcessHealer,
) -> None:
    """An exception from check ends the heal failed with the error in its reason; the
    daemon keeps serving requests and heals."""
    [heal_id] = await healer.fire(alert("Explode", step="check"))
    heal = await healer.wait_for_outcome(heal_id)
    assert heal["outcome"] == "failed"
    assert heal["reason"] == "check failed: RuntimeError: boom while checking web-1"
    assert healer.noop.acts == []
    assert (await healer.client.get("/health")).status_code == 200
    [next_id] = await healer.fire(alert())
    assert (await healer.wait_for_outcome(next_id))["outcome"] == "unverified"
    assert healer.heals_total("failed", rule="explode") == 1


async def test_a_raising_act_fails_the_heal(healer: InProcessHealer) -> None:
    """An exception from act ends the heal failed, never verified."""
    [heal_id] = await healer.fire(alert("Explode", step="act"))
    heal = await healer.wait_for_outcome(heal_id)
    assert heal["outcome"] == "failed"
    assert heal["reason"] == "act failed: RuntimeError: boom while acting on web-1"
    assert "verify_start" not in [e["kind"] for e in heal["timeline"]]
