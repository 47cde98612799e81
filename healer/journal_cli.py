"""``healer journal prune`` and ``healer journal stats``: retention and size for
operators, on a SQLite file or a PostgreSQL store (found as ``journal migrate`` finds
it, :func:`healer.cli.journal_command`).

``prune`` runs one full prune now (:func:`healer.retention.prune_all`, the batches the
daemon runs) with the config's ``retention:`` windows (defaults without ``--config``;
``enabled: false`` only stops the daemon's loop), printing the rows removed per table;
``--dry-run`` prints what it would remove, writing nothing. ``stats`` prints rows and
oldest entry per table and the bytes the journal takes.
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from healer.config import RetentionConfig
from healer.retention import cutoffs, prune_all
from healer.store.factory import JournalTarget, describe, open_store
from healer.store.retention import JournalStats
from healer.timefmt import format_seconds


def _window(seconds: float) -> str:
    return "forever" if seconds <= 0 else format_seconds(seconds)


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def _when(at: float | None) -> str:
    if at is None:
        return "-"
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _prune(target: JournalTarget, retention: RetentionConfig, dry_run: bool) -> int:
    store = await open_store(target)
    try:
        now = time.time()
        if dry_run:
            removed, reclaimed = await store.prunable(cutoffs(retention, now)), 0
        else:
            result = await prune_all(store, retention, now)
            if result is None:
                print(
                    f"error: journal {describe(target)}: another replica is pruning now;"
                    " nothing removed (try again later)",
                    file=sys.stderr,
                )
                return 1
            removed, reclaimed = result
    finally:
        await store.close()
    verb = "would remove (dry run)" if dry_run else "removed"
    print(
        f"journal {describe(target)}: heals kept {_window(retention.heals)}, alerts kept"
        f" {_window(retention.alerts)}; {verb}:"
    )
    for table, count in removed.items():
        print(f"  {table:16} {count:>10}")
    total = f"  {'total':16} {sum(removed.values()):>10}"
    print(total if dry_run else f"{total}   ({reclaimed} free pages given back)")
    return 0


async def _stats(target: JournalTarget) -> JournalStats:
    store = await open_store(target)
    try:
        return await store.journal_stats()
    finally:
        await store.close()


def _print_stats(stats: JournalStats) -> None:
    free = "" if stats.free_bytes is None else f", {_size(stats.free_bytes)} of it free pages"
    print(f"journal {stats.store}: {_size(stats.bytes)} on disk{free}")
    print(f"  {'table':16} {'rows':>10}  oldest")
    for table, rows in stats.rows.items():
        print(f"  {table:16} {rows:>10}  {_when(stats.oldest[table])}")


def run(command: str, target: JournalTarget, retention: RetentionConfig, dry_run: bool) -> int:
    """``prune`` or ``stats`` on ``target``; the exit code (JournalUnavailable is the
    caller's, exit 1)."""
    if isinstance(target, Path) and not target.is_file():
        print(f"error: journal {target}: no such file", file=sys.stderr)
        return 1
    if command == "prune":
        return asyncio.run(_prune(target, retention, dry_run))
    _print_stats(asyncio.run(_stats(target)))
    return 0
