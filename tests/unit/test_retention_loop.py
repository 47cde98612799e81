"""The background prune the app's lifespan owns (healer/retention.py), in the real app:
with second-long windows, finished heals, their alerts and the webhook bodies go by
themselves, a heal still waiting (min_firing) stays with its alert, and the metrics
count what went; with retention disabled nothing is pruned."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from healer.plugins import HandlerRegistry
from tests.support.inprocess.inproc import InProcessHealer, noop_config, running_healer
from tests.support.inprocess.payloads import alert


def _config(tmp_path: Path, **retention: Any) -> dict[str, Any]:
    config = noop_config(tmp_path / "journal.db")
    hold = {**config["rules"][0], "name": "hold", "match": 'alertname="Hold"', "min_firing": "1h"}
    config["rules"].append(hold)
    config["retention"] = retention
    return config


async def _finished_and_held(h: InProcessHealer) -> tuple[list[str], str]:
    """Three heals run to their end; one waits for its min_firing (an open heal)."""
    done = await h.fire(*(alert("Poke", {"target": f"t{i}"}) for i in range(3)))
    for heal_id in done:
        await h.wait_for_outcome(heal_id)
    [held] = await h.fire(alert("Hold", {"target": "h"}, starts_at=datetime.now(UTC)))
    return done, held


async def test_finished_history_is_pruned_in_the_background_and_open_heals_stay(
    tmp_path: Path, handlers: HandlerRegistry
) -> None:
    """heals: 1s, alerts: 1s, every 0.1s, batches of 2: the three finished heals, their
    alert rows and their webhook body go without anyone asking; the waiting heal and its
    alert row stay; healer_journal_pruned_rows_total counts the rows per table and the
    last-prune gauge is set."""
    config = _config(tmp_path, heals="1s", alerts="1s", every="0.1s", batch=2)
    async with running_healer(config, handlers=handlers) as h:
        done, held = await _finished_and_held(h)
        deadline = time.monotonic() + 30
        while (await h.journal.journal_stats()).rows["heals"] > 1:
            assert time.monotonic() < deadline, await h.journal.journal_stats()
            await asyncio.sleep(0.1)
        while (await h.journal.journal_stats()).rows["deliveries"] > 1:
            assert time.monotonic() < deadline, await h.journal.journal_stats()
            await asyncio.sleep(0.1)
        for heal_id in done:
            assert await h.journal.get_heal(heal_id) is None
        waiting = await h.journal.get_heal(held)
        assert waiting is not None and waiting["phase"] != "done"
        stats = await h.journal.journal_stats()
        assert (stats.rows["heals"], stats.rows["alerts"], stats.rows["deliveries"]) == (1, 1, 1)
        assert h.sample("healer_journal_pruned_rows_total", {"table": "heals"}) == 3
        assert h.sample("healer_journal_pruned_rows_total", {"table": "alerts"}) == 3
        assert (h.sample("healer_journal_pruned_rows_total", {"table": "events"}) or 0) >= 6
        assert (h.sample("healer_journal_last_prune_timestamp_seconds") or 0) > 0


async def test_disabled_retention_prunes_nothing(tmp_path: Path, handlers: HandlerRegistry) -> None:
    """``enabled: false`` with the same windows: the heals are all still there after the
    windows passed (several prune intervals), and no prune round ran."""
    config = _config(tmp_path, enabled=False, heals="0.1s", alerts="0.1s", every="0.1s")
    async with running_healer(config, handlers=handlers) as h:
        await _finished_and_held(h)
        await asyncio.sleep(0.5)
        assert (await h.journal.journal_stats()).rows["heals"] == 4
        assert h.sample("healer_journal_last_prune_timestamp_seconds") == 0
