"""min_firing: a heal for an alert younger than its rule's ``min_firing`` waits (pending,
holding no concurrency slot, on a timer) until the alert is old enough, then checks and
acts; an alert resolved meanwhile ends the heal no_action without checking.

Waiting rather than suppressing, because Alertmanager's later re-sends of the same alert
(same fingerprint and startsAt) are duplicates: a suppressed young alert would never be
healed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.noop import Noop
from healer.plugins import HandlerRegistry
from healer.store import SqliteStore
from tests.support.inprocess.gates import fire, gates_config, kinds, until
from tests.support.inprocess.inproc import InProcessHealer, running_healer


async def waiting(h: InProcessHealer, heal_id: str) -> bool:
    heal = await h.services.journal.get_heal(heal_id)
    return heal is not None and "min_firing_wait" in kinds(heal)


def event(heal: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(e for e in heal["timeline"] if e["kind"] == kind)


async def test_a_young_alert_waits_then_acts(
    tmp_path: Path, handlers: HandlerRegistry, noop: Noop
) -> None:
    """An alert that started now, with min_firing 2s: the heal records the wait, and its
    check runs only once the alert has fired for 2s; then it acts."""
    starts = datetime.now(UTC)
    async with running_healer(
        gates_config(tmp_path, rule={"min_firing": "2s"}), handlers=handlers
    ) as h:
        heal_id = await fire(h, "t1", starts=starts)
        assert heal_id is not None
        heal = await h.wait_for_outcome(heal_id, timeout=15)
    assert heal["outcome"] == "unverified"
    wait = event(heal, "min_firing_wait")["data"]
    assert wait["min_firing"] == 2.0 and wait["firing_for"] < 2.0
    assert event(heal, "check")["at"] >= starts.timestamp() + 2.0
    assert kinds(heal).index("min_firing_reached") < kinds(heal).index("check")
    assert len(noop.acts) == 1


async def test_an_alert_old_enough_acts_without_waiting(
    tmp_path: Path, handlers: HandlerRegistry
) -> None:
    """An alert that has fired longer than min_firing is not held."""
    async with running_healer(
        gates_config(tmp_path, rule={"min_firing": "1h"}), handlers=handlers
    ) as h:
        heal_id = await fire(h, "t1", starts=datetime.now(UTC) - timedelta(hours=2))
        assert heal_id is not None
        heal = await h.wait_for_outcome(heal_id)
    assert heal["outcome"] == "unverified"
    assert "min_firing_wait" not in kinds(heal)


async def test_an_alert_resolved_while_waiting_ends_the_heal(
    tmp_path: Path, handlers: HandlerRegistry, noop: Noop
) -> None:
    """The resolved notification (through the webhook, as Alertmanager sends it) ends the
    waiting heal at once, no_action "resolved before acting: ...", before any check."""
    starts = datetime.now(UTC)
    async with running_healer(
        gates_config(tmp_path, rule={"min_firing": "1h"}), handlers=handlers
    ) as h:
        heal_id = await fire(h, "t1", starts=starts)
        assert heal_id is not None
        await until(lambda: waiting(h, heal_id), what="the heal to wait")
        await fire(h, "t1", starts=starts, status="resolved")
        heal = await h.wait_for_outcome(heal_id, timeout=15)
        h_waiting_after = h.services.executor.waiting
    assert heal["outcome"] == "no_action"
    assert heal["reason"].startswith("resolved before acting: ")
    assert heal["reason"].endswith(" (min_firing 1h)")
    assert h_waiting_after == 0
    assert noop.checks == []


async def test_a_waiting_heal_holds_no_concurrency_slot(
    tmp_path: Path, handlers: HandlerRegistry, noop: Noop
) -> None:
    """With max_concurrent_heals=1, a heal waiting for min_firing does not keep another
    rule's heal from running."""
    config = gates_config(tmp_path, rule={"min_firing": "1h"}, max_concurrent_heals=1)
    async with running_healer(config, handlers=handlers) as h:
        young = await fire(h, "t1", starts=datetime.now(UTC))
        assert young is not None
        await until(lambda: waiting(h, young), what="the heal to wait")
        other = await fire(h, "t2", name="Poke2")
        assert other is not None
        assert (await h.wait_for_outcome(other))["outcome"] == "unverified"
        assert (await h.services.journal.get_heal(young) or {})["phase"] == "pending"


async def test_a_paused_healer_does_not_wait(tmp_path: Path, handlers: HandlerRegistry) -> None:
    """During a pause a young alert's heal ends suppressed at once instead of waiting."""
    async with running_healer(
        gates_config(tmp_path, rule={"min_firing": "1h"}), handlers=handlers
    ) as h:
        await h.client.post(
            "/api/v1/pause", json={"for": "1h", "reason": "deploy"}, headers=h.admin_headers
        )
        heal_id = await fire(h, "t1", starts=datetime.now(UTC))
        assert heal_id is not None
        heal = await h.wait_for_outcome(heal_id)
    assert heal["reason"].startswith("paused: deploy")
    assert "min_firing_wait" not in kinds(heal)


async def test_stopping_leaves_a_waiting_heal_pending(
    tmp_path: Path, handlers: HandlerRegistry
) -> None:
    """Shutting down ends the wait at once; the heal stays pending in the journal (no
    outcome, not interrupted) for the next start to resume."""
    async with running_healer(
        gates_config(tmp_path, rule={"min_firing": "1h"}), handlers=handlers
    ) as h:
        heal_id = await fire(h, "t1", starts=datetime.now(UTC))
        assert heal_id is not None
        await until(lambda: waiting(h, heal_id), what="the heal to wait")
        journal_path = h.services.journal.path
        executor = h.services.executor
    assert executor.running == 0
    journal = await SqliteStore.open(journal_path)
    try:
        heal = await journal.get_heal(heal_id)
    finally:
        await journal.close()
    assert heal is not None and heal["phase"] == "pending" and heal["outcome"] is None
