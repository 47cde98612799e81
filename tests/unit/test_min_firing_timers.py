"""min_firing waits cost memory, not CPU: thousands of heals waiting on a long min_firing
are event-loop timers (no task each, no polling of the journal), whether they arrived
through the webhook or were resumed at start; the webhook keeps answering meanwhile, and
a resolve still ends its waiting heal at once.

CPU is measured as the process's own CPU time (``time.process_time``: every thread, the
journal's included) over a short idle window: a count of work done, not a wall-clock
time, and the bound is generous (a poll per heal per second burnt several times more).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.noop import Noop
from healer.api import Alert
from healer.store import HealPlan, SqliteStore
from tests.support.inprocess.gates import fingerprint, fire, gates_config, until
from tests.support.inprocess.inproc import InProcessHealer, running_healer
from tests.support.inprocess.payloads import alert, payload

WAITING = 3000  # heals on a 1h min_firing
BATCH = 250  # alerts per webhook post
WINDOW = 2.0  # seconds of idle CPU accounting
MAX_CPU = 0.15  # of one core over the window


def targets() -> list[str]:
    return [f"w{i}" for i in range(WAITING)]


def group(starts: datetime, names: list[str]) -> dict[str, Any]:
    """One Alertmanager post with one firing Poke alert per target."""
    return payload(
        *(
            alert("Poke", {"target": name}, starts_at=starts, fingerprint=fingerprint("Poke", name))
            for name in names
        )
    )


async def settle(h: InProcessHealer) -> None:
    """Every queued journal write is on disk (writes commit in order: the probe's write
    is queued after them)."""
    await h.services.journal.ping()


async def idle_cpu(window: float = WINDOW) -> float:
    """CPU seconds this process used while the event loop had nothing to do but its
    timers, as a fraction of the window."""
    before = time.process_time()
    await asyncio.sleep(window)
    return (time.process_time() - before) / window


async def assert_still_serving(h: InProcessHealer) -> None:
    """Another rule's alert is answered 200 and healed while the waits go on."""
    heal_id = await fire(h, "busy", name="Poke2")
    assert heal_id is not None
    assert (await h.wait_for_outcome(heal_id))["outcome"] == "unverified"


async def test_thousands_of_waiting_heals_keep_the_process_idle(
    tmp_path: Path, handlers, noop: Noop
) -> None:
    """3,000 young alerts posted through the webhook all wait on min_firing 1h: the
    asyncio task count does not grow with them, the process stays (nearly) idle, another
    alert is still healed, and a resolve ends its waiting heal without touching the
    others."""
    starts = datetime.now(UTC)
    names = targets()
    async with running_healer(
        gates_config(tmp_path, rule={"min_firing": "1h"}), handlers=handlers
    ) as h:
        tasks_before = len(asyncio.all_tasks())
        for i in range(0, len(names), BATCH):
            resp = await h.client.post("/api/v1/alerts", json=group(starts, names[i : i + BATCH]))
            assert resp.status_code == 200, resp.text
        await until(lambda: h.services.executor.waiting == WAITING, what="all to wait")
        await settle(h)
        assert len(asyncio.all_tasks()) <= tasks_before + 2
        cpu = await idle_cpu()
        assert cpu < MAX_CPU, f"{cpu:.1%} of a core while {WAITING} heals wait"
        await assert_still_serving(h)

        resolve = group(starts, ["w7"])
        resolve["alerts"][0]["status"] = "resolved"
        resp = await h.client.post("/api/v1/alerts", json=resolve)
        assert resp.status_code == 200
        assert h.services.executor.waiting == WAITING - 1  # at once: no poll to wait for

        async def ended() -> list[dict[str, Any]]:
            return await h.services.journal.list_heals(outcome="no_action")

        await until(ended, what="the resolved heal to end")
        assert [heal["labels"]["target"] for heal in await ended()] == ["w7"]
    assert noop.checks and {p.target for p in noop.checks} == {"busy"}


async def test_thousands_of_waiting_heals_resume_as_timers(
    tmp_path: Path, handlers, noop: Noop
) -> None:
    """3,000 heals a previous run left waiting for min_firing resume at start as timers:
    no task each, the process stays (nearly) idle, and the webhook keeps working."""
    journal = await SqliteStore.open(tmp_path / "journal.db")
    plan = HealPlan(
        "poke",
        "test.noop",
        {"target": "{{ labels.target }}"},
        {"query": None, "stable_for": 0.0, "timeout": 0.2, "interval": None},
        False,
    )
    starts = datetime.now(UTC)
    try:
        await journal.ingest(
            [
                Alert(
                    fingerprint=fingerprint("Poke", name),
                    status="firing",
                    labels={"alertname": "Poke", "target": name},
                    annotations={},
                    starts_at=starts,
                )
                for name in targets()
            ],
            lambda _: plan,
        )
    finally:
        await journal.close()

    async with running_healer(
        gates_config(tmp_path, rule={"min_firing": "1h"}), handlers=handlers
    ) as h:
        assert h.services.executor.waiting == WAITING
        await settle(h)
        assert len(asyncio.all_tasks()) <= 8, asyncio.all_tasks()
        cpu = await idle_cpu()
        assert cpu < MAX_CPU, f"{cpu:.1%} of a core while {WAITING} resumed heals wait"
        await assert_still_serving(h)
        heal = await h.services.journal.get_heal(
            (await h.services.journal.list_heals(limit=1, rule="poke"))[0]["id"]
        )
    assert heal is not None and heal["phase"] == "pending"
    assert [e["kind"] for e in heal["timeline"]] == ["matched", "resumed", "min_firing_wait"]
    assert {p.target for p in noop.checks} == {"busy"}
