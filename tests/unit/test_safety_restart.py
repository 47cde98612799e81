"""Safety state survives a restart: each test runs one healer, stops it (the journal is
closed), starts a new one on the same journal file and checks that the cooldown, the open
circuit and its escalation, the pause and a min_firing wait are all still there."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from bench.noop import Noop
from healer.plugins import HandlerRegistry
from tests.support.inprocess.gates import (
    fire,
    fire_and_wait,
    gates_config,
    kinds,
    until,
    webhook_notifier,
    with_notify,
)
from tests.support.inprocess.inproc import running_healer
from tests.support.servers.webhook import WebhookRecorder


async def test_a_cooldown_survives_a_restart(
    tmp_path: Path, handlers: HandlerRegistry, noop: Noop
) -> None:
    """Acted before the restart, a new alert after it is still in cooldown."""
    config = gates_config(tmp_path, safety={"cooldown": "1h"})
    async with running_healer(config, handlers=handlers) as h:
        assert (await fire_and_wait(h, "t1", n=0))["outcome"] == "unverified"
    async with running_healer(config, handlers=handlers) as h:
        after = await fire_and_wait(h, "t1", n=1)
    assert after["outcome"] == "suppressed" and after["reason"].startswith("cooldown (")
    assert len(noop.acts) == 1


async def test_an_open_circuit_and_its_escalation_survive_a_restart(
    tmp_path: Path, handlers: HandlerRegistry, noop: Noop, webhook_recorder: WebhookRecorder
) -> None:
    """The circuit opened before the restart: the gauge reads 1 at start-up, before any
    alert; later alerts are suppressed "circuit open"; nobody is told a second time."""
    config = gates_config(
        tmp_path, safety={"budget": {"max_actions": 1, "window": "1h"}}, notify=[webhook_notifier()]
    )
    secrets = with_notify(webhook_recorder.url)
    async with running_healer(config, handlers=handlers, secrets=secrets) as h:
        await fire_and_wait(h, "t1", n=0)
        assert (await fire_and_wait(h, "t1", n=1))["outcome"] == "escalated"
    async with running_healer(config, handlers=handlers, secrets=secrets) as h:
        gauge_at_start = h.sample("healer_circuit_open", {"rule": "poke"})
        after = [await fire_and_wait(h, "t1", n=n) for n in range(2, 5)]
    assert gauge_at_start == 1
    assert [heal["outcome"] for heal in after] == ["suppressed"] * 3
    assert all(heal["reason"].startswith("circuit open:") for heal in after)
    assert len(webhook_recorder.snapshot()) == 1
    assert len(noop.acts) == 1


async def test_a_circuit_closed_by_a_human_stays_closed(
    tmp_path: Path, handlers: HandlerRegistry, webhook_recorder: WebhookRecorder
) -> None:
    """Closing resets the budget, and that too survives: after the restart the rule acts."""
    config = gates_config(
        tmp_path, safety={"budget": {"max_actions": 1, "window": "1h"}}, notify=[webhook_notifier()]
    )
    secrets = with_notify(webhook_recorder.url)
    async with running_healer(config, handlers=handlers, secrets=secrets) as h:
        await fire_and_wait(h, "t1", n=0)
        await fire_and_wait(h, "t1", n=1)
        resp = await h.client.delete("/api/v1/circuits/poke", headers=h.admin_headers)
        assert resp.status_code == 200
    async with running_healer(config, handlers=handlers, secrets=secrets) as h:
        assert h.sample("healer_circuit_open", {"rule": "poke"}) == 0
        assert (await fire_and_wait(h, "t1", n=2))["outcome"] == "unverified"


async def test_a_pause_survives_a_restart(
    tmp_path: Path, handlers: HandlerRegistry, noop: Noop
) -> None:
    """Paused before the restart, still paused after it, with the same reason."""
    config = gates_config(tmp_path)
    async with running_healer(config, handlers=handlers) as h:
        await h.client.post(
            "/api/v1/pause", json={"for": "1h", "reason": "db upgrade"}, headers=h.admin_headers
        )
    async with running_healer(config, handlers=handlers) as h:
        state = (await h.client.get("/api/v1/pause", headers=h.admin_headers)).json()
        heal = await fire_and_wait(h, "t1")
    assert state["paused"] is True and state["reason"] == "db upgrade"
    assert heal["outcome"] == "suppressed" and heal["reason"].startswith("paused: db upgrade")
    assert noop.checks == []


async def test_a_min_firing_wait_resumes_after_a_restart(
    tmp_path: Path, handlers: HandlerRegistry, noop: Noop
) -> None:
    """A heal waiting for min_firing when healer stops stays pending; the next start
    resumes it, waits for what is left, then checks and acts once."""
    config = gates_config(tmp_path, rule={"min_firing": "3s"})
    starts = datetime.now(UTC)
    async with running_healer(config, handlers=handlers) as h:
        heal_id = await fire(h, "t1", starts=starts)
        assert heal_id is not None

        async def waiting() -> bool:
            heal = await h.services.journal.get_heal(heal_id)
            return heal is not None and "min_firing_wait" in kinds(heal)

        await until(waiting, what="the heal to wait")
    assert noop.checks == []
    async with running_healer(config, handlers=handlers) as h:
        heal = await h.wait_for_outcome(heal_id, timeout=15)
    assert heal["outcome"] == "unverified"
    assert "resumed" in kinds(heal)
    check = next(e for e in heal["timeline"] if e["kind"] == "check")
    assert check["at"] >= starts.timestamp() + 3.0
    assert len(noop.acts) == 1
