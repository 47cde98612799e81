"""Resolved alerts never trigger actions: a heal whose alert Alertmanager reported resolved
before the heal acted ends ``no_action`` ("resolved before acting: ..."), whichever way it
waited - for min_firing, for a concurrency slot, while its check ran, behind another
heal's target lock, across a restart - and whether or not it is a dry run.

Each test holds a heal at one of those places with the real executor and journal (the
no-op handler's gates), delivers the resolve, lets the heal go on, and proves that it
never acted.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bench.noop import Noop
from healer.api import Alert
from healer.outcomes import Phase
from healer.store import HealPlan, SqliteStore
from tests.support.inprocess.gates import BASE, fingerprint, fire, gates_config, kinds, until
from tests.support.inprocess.inproc import InProcessHealer, running_healer


def assert_resolved_before_acting(heal: dict[str, Any]) -> None:
    """Ended no_action for that reason, with neither an action nor a dry run's verdict."""
    assert heal["outcome"] == "no_action", heal["reason"]
    assert heal["reason"].startswith(
        "resolved before acting: Alertmanager reported the alert resolved at "
    ), heal["reason"]
    assert "act" not in kinds(heal) and "dry_run" not in kinds(heal)


def alert(
    target: str, *, status: str = "firing", starts: datetime = BASE, name: str = "Poke"
) -> Alert:
    return Alert(
        fingerprint=fingerprint(name, target),
        status=status,
        labels={"alertname": name, "target": target},
        annotations={},
        starts_at=starts,
    )


async def journal_only_resolve(h: InProcessHealer, target: str, starts: datetime) -> None:
    """The resolve as the journal records it, without the receiver's nudge to waiting
    heals: what a heal must find by reading the journal itself."""
    await h.services.journal.ingest(
        [alert(target, status="resolved", starts=starts)], lambda _: None
    )


async def phase_of(h: InProcessHealer, heal_id: str) -> str | None:
    heal = await h.services.journal.get_heal(heal_id)
    return None if heal is None else str(heal["phase"])


@pytest.mark.parametrize("dry_run", [False, True])
async def test_resolved_while_waiting_for_a_concurrency_slot(
    tmp_path: Path, handlers, noop: Noop, dry_run: bool
) -> None:
    """Every slot busy (max_concurrent_heals=1, another rule's heal holds it while acting):
    a heal waiting for the slot whose alert resolves meanwhile never checks nor acts once
    it gets the slot."""
    config = gates_config(tmp_path, rule={"dry_run": dry_run}, max_concurrent_heals=1)
    noop.gate = asyncio.Event()
    async with running_healer(config, handlers=handlers) as h:
        holder = await fire(h, "t0", name="Poke2")
        await until(lambda: len(noop.acts) == 1, what="the slot holder to act")
        waiting = await fire(h, "t1")
        assert holder is not None and waiting is not None
        await fire(h, "t1", status="resolved")
        assert await phase_of(h, waiting) == "pending"
        noop.gate.set()
        heal = await h.wait_for_outcome(waiting)
        assert (await h.wait_for_outcome(holder))["outcome"] == "unverified"
    assert_resolved_before_acting(heal)
    assert "t1" not in [p.target for p in noop.acts]
    assert [p.target for p in noop.checks] == ["t0"]


@pytest.mark.parametrize("dry_run", [False, True])
async def test_resolved_while_checking(tmp_path: Path, handlers, noop: Noop, dry_run: bool) -> None:
    """The resolve arrives while the heal's check runs: the check's "act" is not obeyed
    (the admission reads the resolve in the transaction that would record the action; a
    dry run looks before saying what it would do)."""
    noop.check_gate = asyncio.Event()
    async with running_healer(
        gates_config(tmp_path, rule={"dry_run": dry_run}), handlers=handlers
    ) as h:
        heal_id = await fire(h, "t1")
        assert heal_id is not None
        await until(lambda: len(noop.checks) == 1, what="the check to start")
        await fire(h, "t1", status="resolved")
        noop.check_gate.set()
        heal = await h.wait_for_outcome(heal_id)
    assert_resolved_before_acting(heal)
    assert "t1" not in [p.target for p in noop.acts]
    assert "check" in kinds(heal)


async def test_resolved_while_behind_another_heals_target_lock(
    tmp_path: Path, handlers, noop: Noop
) -> None:
    """Another rule's heal is acting on the same target: a heal whose alert resolved while
    it checked ends no_action, not "in flight" (there is nothing left to do either way)."""
    noop.gate = asyncio.Event()
    async with running_healer(gates_config(tmp_path), handlers=handlers) as h:
        holder = await fire(h, "t1", name="Poke2")
        await until(lambda: len(noop.acts) == 1, what="the other heal to act")
        noop.check_gate = asyncio.Event()
        heal_id = await fire(h, "t1")
        assert holder is not None and heal_id is not None
        await until(lambda: len(noop.checks) == 2, what="the second check to start")
        await fire(h, "t1", status="resolved")
        noop.check_gate.set()
        heal = await h.wait_for_outcome(heal_id)
        noop.gate.set()
        await h.wait_for_outcome(holder)
    assert_resolved_before_acting(heal)
    assert len(noop.acts) == 1  # the other heal's


async def test_resolved_during_min_firing_found_when_the_timer_ends(
    tmp_path: Path, handlers, noop: Noop
) -> None:
    """A resolve that reached the journal without waking the waiting heal (the receiver's
    nudge is a shortcut, not the rule) is found when the min_firing timer ends."""
    starts = datetime.now(UTC)
    async with running_healer(
        gates_config(tmp_path, rule={"min_firing": "1s"}), handlers=handlers
    ) as h:
        heal_id = await fire(h, "t1", starts=starts)
        assert heal_id is not None
        await journal_only_resolve(h, "t1", starts)
        heal = await h.wait_for_outcome(heal_id, timeout=15)
    assert_resolved_before_acting(heal)
    assert "t1" not in [p.target for p in noop.acts]
    assert kinds(heal).index("min_firing_wait") < kinds(heal).index("min_firing_reached")
    assert noop.checks == []


async def journal_pending_heal(
    path: Path, *, phase: Phase, starts: datetime, resolved: bool, dry_run: bool = False
) -> str:
    """One matched alert's heal as a killed healer left it, its resolve journaled or not."""
    journal = await SqliteStore.open(path)
    try:
        plan = HealPlan(
            "poke",
            "test.noop",
            {"target": "{{ labels.target }}"},
            {"query": None, "stable_for": 0.0, "timeout": 0.2, "interval": None},
            dry_run,
        )
        [disposition] = await journal.ingest([alert("t1", starts=starts)], lambda _: plan)
        assert disposition.heal_id is not None
        await journal.set_phase(disposition.heal_id, phase)
        if resolved:
            await journal.ingest([alert("t1", status="resolved", starts=starts)], lambda _: None)
        return disposition.heal_id
    finally:
        await journal.close()


@pytest.mark.parametrize(
    ("phase", "dry_run"), [(Phase.PENDING, False), (Phase.CHECKING, False), (Phase.PENDING, True)]
)
async def test_resolved_while_healer_was_down(
    tmp_path: Path, handlers, noop: Noop, phase: Phase, dry_run: bool
) -> None:
    """A heal left pending or checking by a dead healer, whose resolve was journaled
    before the restart: the restart ends it no_action instead of running it again."""
    heal_id = await journal_pending_heal(
        tmp_path / "journal.db", phase=phase, starts=BASE, resolved=True, dry_run=dry_run
    )
    async with running_healer(gates_config(tmp_path), handlers=handlers) as h:
        heal = await h.wait_for_outcome(heal_id)
        labels = {"rule": "poke", "handler": "test.noop", "outcome": "no_action"}
        assert h.sample("healer_heals_total", labels) == 1
    assert_resolved_before_acting(heal)
    assert "t1" not in [p.target for p in noop.acts]
    assert noop.checks == []
    assert kinds(heal)[-2:] == ["resumed", "outcome"]


async def test_a_resumed_min_firing_wait_ends_when_the_resolve_arrives(
    tmp_path: Path, handlers, noop: Noop
) -> None:
    """A heal a previous run left waiting for min_firing resumes as a timer; the resolve
    Alertmanager delivers after the restart ends it at once (not when min_firing is up)."""
    starts = datetime.now(UTC) - timedelta(seconds=5)
    heal_id = await journal_pending_heal(
        tmp_path / "journal.db", phase=Phase.PENDING, starts=starts, resolved=False
    )
    async with running_healer(
        gates_config(tmp_path, rule={"min_firing": "1h"}), handlers=handlers
    ) as h:
        assert h.services.executor.waiting == 1
        await fire(h, "t1", starts=starts, status="resolved")
        heal = await h.wait_for_outcome(heal_id, timeout=15)
        assert h.services.executor.waiting == 0
    assert_resolved_before_acting(heal)
    assert "t1" not in [p.target for p in noop.acts]
    assert heal["reason"].endswith("(min_firing 1h)")
    assert noop.checks == []
