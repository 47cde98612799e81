"""``healer journal prune`` and ``healer journal stats`` as an operator runs them, on a
real SQLite file and a real PostgreSQL store holding history made 100 days old (its
time columns moved back, no clock faked): stats count the rows; a dry run prints what
would go and removes nothing; a prune removes the done heals past the window and keeps
the open ones; a config's retention is honoured (``0``: forever); usage errors exit 2,
a missing journal exits 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import asyncpg

from healer.outcomes import Outcome
from healer.store import SqliteStore, Store
from healer.store.postgres.store import PostgresOptions, PostgresStore
from tests.support.inprocess.healer_api import write_config
from tests.support.servers.postgres import scratch_database
from tests.unit.test_store_contract import _alert, _plan

AGE = 100 * 86400.0
AGED = (
    f"UPDATE heals SET created_at = created_at - {AGE}",
    f"UPDATE alerts SET first_seen = first_seen - {AGE}, last_seen = last_seen - {AGE}",
    f"UPDATE deliveries SET received_at = received_at - {AGE}",
)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "healer", "journal", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _counts(out: str) -> dict[str, int]:
    """The ``table  count`` lines of the output (prune: removed; stats: rows)."""
    found = {}
    for line in out.splitlines():
        parts = line.split()
        if line.startswith("  ") and len(parts) >= 2 and parts[1].isdigit():
            found[parts[0]] = int(parts[1])
    return found


async def _history(store: Store) -> None:
    """Five heals: three done, two still pending."""
    ids = [d.heal_id or "" for d in await store.ingest([_alert(f"p{i}") for i in range(5)], _plan)]
    for heal_id in ids[:3]:
        await store.finish(heal_id, Outcome.RECOVERED, "ok", {})


def _check_prune(where: list[str], config: Path) -> None:
    """The operator's sequence on one journal (``where``: FILE or --to DSN)."""
    stats = _cli("stats", *where)
    assert stats.returncode == 0, stats.stderr
    assert _counts(stats.stdout)["heals"] == 5 and "on disk" in stats.stdout

    dry = _cli("prune", *where, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would remove" in dry.stdout
    assert _counts(dry.stdout)["heals"] == 3 and _counts(dry.stdout)["alerts"] == 3
    assert _counts(_cli("stats", *where).stdout)["heals"] == 5

    kept_forever = _cli("prune", "--config", str(config))
    assert kept_forever.returncode == 0, kept_forever.stderr
    assert _counts(kept_forever.stdout)["total"] == 0

    pruned = _cli("prune", *where)
    assert pruned.returncode == 0, pruned.stderr
    removed = _counts(pruned.stdout)
    assert (removed["heals"], removed["alerts"], removed["deliveries"]) == (3, 3, 0)
    assert removed["events"] >= 6
    after = _counts(_cli("stats", *where).stdout)
    assert (after["heals"], after["alerts"], after["deliveries"]) == (2, 2, 1)
    again = _cli("prune", *where)
    assert _counts(again.stdout)["total"] == 0


async def test_prune_and_stats_on_a_sqlite_journal(tmp_path: Path) -> None:
    """On a SQLite file: stats, a dry run, a prune with ``retention: {heals: 0, alerts:
    0}`` (nothing goes), a prune with the defaults (the old done heals go, the open stay),
    nothing left for a second one; FILE with --config is a usage error, a missing file
    exits 1."""
    path = tmp_path / "journal.db"
    store = await SqliteStore.open(path)
    try:
        await _history(store)
        await store.writer.transaction(lambda db: [db.execute(sql) for sql in AGED])
    finally:
        await store.close()
    config = write_config(
        tmp_path, {"journal": str(path), "retention": {"heals": 0, "alerts": "0s"}}
    )
    _check_prune([str(path)], config)

    both = _cli("prune", str(path), "--config", str(config))
    assert both.returncode == 2 and "not both" in both.stderr
    missing = _cli("stats", str(tmp_path / "nope.db"))
    assert missing.returncode == 1 and "no such file" in missing.stderr
    assert not (tmp_path / "nope.db").exists()


async def test_prune_and_stats_on_a_postgresql_store(tmp_path: Path) -> None:
    """The same on a PostgreSQL store, found by --to and by a config's journal: entry."""
    async with scratch_database() as dsn:
        store = await PostgresStore.open(PostgresOptions(dsn))
        try:
            await _history(store)
        finally:
            await store.close()
        conn = await asyncpg.connect(dsn)
        try:
            for sql in AGED:
                await conn.execute(sql)
        finally:
            await conn.close()
        config = write_config(
            tmp_path, {"journal": {"dsn": dsn}, "retention": {"heals": 0, "alerts": 0}}
        )
        _check_prune(["--to", dsn], config)
