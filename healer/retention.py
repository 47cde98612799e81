"""Journal retention: the background prune the app factory's lifespan owns (as it owns
the gates' sweep), and one full prune for ``healer journal prune``.

A round removes, batch after batch (each one short transaction of the store:
:meth:`healer.store.contract.Store.prune`), everything past ``retention.heals`` /
``retention.alerts`` that nothing open needs (:mod:`healer.store.retention`), then gives
freed pages back (SQLite's incremental vacuum, a bounded number per write) beyond a
quarter of the file, which stays free for the rows to come (moving pages to shrink a
file that grows again is wasted writes; ``healer journal prune`` gives back all of
them), logs one line with the counts and sets the metrics (per batch, so that a long
round is seen as it goes). Between batches the event loop runs: ingest
and heals wait for one batch at most. With replicas on PostgreSQL every replica runs
the loop; a batch that finds another replica's batch running ends the round.

Usage::

    pruner = Pruner(journal, config.retention, metrics)
    await pruner.start()           # every retention.every, while enabled
    ...
    await pruner.stop()
    removed = await prune_all(journal, config.retention, time.time())
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import structlog

from healer.config import RetentionConfig
from healer.metrics import Metrics
from healer.store.contract import Store
from healer.store.retention import Cutoffs, no_rows

# Batches per round at most: a backlog beyond it (a first prune of a big journal) is
# finished by the next rounds.
MAX_BATCHES = 10_000
# Pages given back per write (4 MiB of 4 KiB pages), and writes per round at most.
RECLAIM_PAGES = 1024
MAX_RECLAIMS = 1_000
# The share of the journal's pages the daemon leaves free for new rows.
KEEP_FREE = 0.25
# The tables a batch fills up to its limit; while any is full there may be more.
_BOUNDED = ("heals", "alerts", "deliveries", "safety_circuits")


def cutoffs(retention: RetentionConfig, now: float) -> Cutoffs:
    return Cutoffs.keep(now, heals=retention.heals, alerts=retention.alerts)


async def prune_all(
    journal: Store,
    retention: RetentionConfig,
    now: float,
    *,
    keep_free: float = 0.0,
    on_batch: Callable[[dict[str, int]], None] | None = None,
    max_batches: int = MAX_BATCHES,
) -> tuple[dict[str, int], int] | None:
    """Prune in batches until nothing past the windows at ``now`` is left (or
    ``max_batches``), each batch handed to ``on_batch``, then give free pages back
    beyond ``keep_free`` of the journal; (rows removed per table, pages given back).
    None: another replica is pruning (nothing was removed by this call)."""
    cut, removed = cutoffs(retention, now), no_rows()
    for n in range(max_batches):
        batch = await journal.prune(cut, retention.batch)
        if batch is None:
            if n == 0:
                return None
            break
        for table, count in batch.items():
            removed[table] += count
        if on_batch is not None:
            on_batch(batch)
        if all(batch[t] < retention.batch for t in _BOUNDED):
            break
        await asyncio.sleep(0)  # let queued writes in between batches
    reclaimed = 0
    for _ in range(MAX_RECLAIMS):
        pages = await journal.reclaim(RECLAIM_PAGES, keep_free)
        reclaimed += pages
        if pages < RECLAIM_PAGES:
            break
        await asyncio.sleep(0)
    return removed, reclaimed


class Pruner:
    """The background prune of one healer process (module docstring)."""

    def __init__(self, journal: Store, retention: RetentionConfig, metrics: Metrics) -> None:
        self._journal = journal
        self._retention = retention
        self._metrics = metrics
        self._task: asyncio.Task[None] | None = None
        self._log = structlog.get_logger("healer.retention")

    async def start(self) -> None:
        """Prune now and every ``retention.every`` (nothing when retention is disabled)."""
        if self._retention.enabled:
            self._task = asyncio.create_task(self._loop(), name="healer-retention")

    async def stop(self) -> None:
        """Stop between two batches (what a batch removed is committed or not at all)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def run_once(self) -> dict[str, int] | None:
        """One round now: rows removed per table (None: another replica prunes)."""
        started = time.monotonic()
        result = await prune_all(
            self._journal,
            self._retention,
            time.time(),
            keep_free=KEEP_FREE,
            on_batch=self._count,
        )
        if result is None:
            self._log.info("journal prune skipped: another replica is pruning")
            return None
        removed, reclaimed = result
        self._metrics.journal_last_prune.set(time.time())
        self._log.info(
            "journal pruned",
            removed={t: n for t, n in removed.items() if n},
            rows=sum(removed.values()),
            reclaimed_pages=reclaimed,
            seconds=round(time.monotonic() - started, 3),
        )
        return removed

    def _count(self, batch: dict[str, int]) -> None:
        for table, count in batch.items():
            if count:
                self._metrics.journal_pruned_rows.labels(table=table).inc(count)

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:  # the journal may be briefly unavailable: try next time
                self._log.exception("journal prune failed")
            await asyncio.sleep(self._retention.every)
