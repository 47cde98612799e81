"""Retention through the store contract, on both stores (the ``backend`` fixture of
tests/support/inprocess/stores.py: SQLite on a temp file, PostgreSQL on a scratch
database): what a prune removes and what it never removes (open heals and everything
they need, alert rows inside their window, the pause, open circuits), in bounded
batches that add up to what the dry run announced; racing prunes of several store
objects remove each row once; the stats count what is there; the SQLite journal gives
freed pages back, and an existing journal is converted to incremental vacuum once.

Rows are made old by pruning "in the future" (``Cutoffs`` at a later ``now``), never by
waiting."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from healer.outcomes import Outcome, Phase
from healer.replica import Replica
from healer.store import SCHEMA_VERSION, Limits, SqliteStore, Store
from healer.store.retention import PRUNED_TABLES, Cutoffs, no_rows
from healer.store.types import token_hash
from tests.support.inprocess.stores import Backend
from tests.unit.test_store_contract import PLAN, _alert, _plan

DAY = 86400.0


def _later(days: float, *, heals: float = 90 * DAY, alerts: float = 30 * DAY) -> Cutoffs:
    """The cutoffs of a prune ``days`` from now with these windows."""
    return Cutoffs.keep(time.time() + days * DAY, heals=heals, alerts=alerts)


async def _prune_to_the_end(store: Store, cut: Cutoffs, limit: int) -> tuple[dict[str, int], int]:
    """Batches until none is full; (rows removed per table, batches run)."""
    total = no_rows()
    for batches in range(1, 1000):
        batch = await store.prune(cut, limit)
        assert batch is not None
        for table, n in batch.items():
            total[table] += n
        if all(batch[t] < limit for t in ("heals", "alerts", "deliveries", "safety_circuits")):
            return total, batches
    raise AssertionError("the prune never ended")


async def test_old_history_goes_and_open_heals_with_their_safety_state_stay(
    store: Store,
) -> None:
    """Pruned 100 days later: done heals (alert and manual ones) go with their timelines,
    alert rows and webhook bodies; a heal acting (its target lock, its alert's rows), a
    heal awaiting approval (its approval), an interrupted heal, the pause, an open
    circuit and the action history (cooldowns, budgets) all stay, untouched. Closed
    circuits past the action history go. The dry run announced exactly what the batches
    (of 2 rows) removed."""
    ids = [d.heal_id or "" for d in await store.ingest([_alert(f"a{i}") for i in range(6)], _plan)]
    done, acting, awaiting, interrupted, not_recovered, also_done = ids
    await store.finish(done, Outcome.RECOVERED, "ok", {})
    await store.finish(also_done, Outcome.FAILED, "boom", {})
    await store.finish(not_recovered, Outcome.NOT_RECOVERED, "still down", {})
    await store.set_phase(acting, Phase.ACTING, targets=["test:acting"])
    assert await store.lock_target("test:acting", acting, time.time())
    await store.open_approval(awaiting, token_hash("tok"), ["test:awaiting"], time.time() + 3600)
    await store.set_phase(interrupted, Phase.VERIFYING, targets=["test:i"])
    await store.interrupt(interrupted, Phase.VERIFYING, "healer stopped", {})
    manual = await store.create_manual_heal(PLAN, {"target": "m"}, {})
    await store.finish(manual, Outcome.RECOVERED, "ok", {})
    now = time.time()
    budget = Limits(cooldown=0.0, max_actions=1, window=3600.0, quiet=3600.0)
    for n, target in enumerate(("test:open", "test:open", "test:closed", "test:closed")):
        await store.admit(f"gate{n}", "poke", [target], budget, now)
    await store.close_circuits("poke", "test:closed", now, "api")
    await store.set_pause(now, now + 300 * DAY, "maintenance")

    cut = _later(100)
    announced = await store.prunable(cut)
    removed, batches = await _prune_to_the_end(store, cut, limit=2)

    assert removed == announced
    assert batches > 1
    assert removed["heals"] == 4 and removed["events"] >= 8
    assert removed["alerts"] == 3 and removed["deliveries"] == 0  # one body, still read
    assert removed["safety_circuits"] == 1
    for gone in (done, also_done, not_recovered, manual):
        assert await store.get_heal(gone) is None
    kept = {h["id"]: h for h in await store.unfinished()}
    assert sorted(kept) == sorted([acting, awaiting, interrupted])
    for heal_id in kept:
        heal = await store.get_heal(heal_id)
        assert heal is not None and heal["timeline"][0]["kind"] == "matched"
    approval = await store.get_approval(awaiting)
    assert approval is not None and approval["decision"] is None
    assert [a["heal_id"] for a in await store.open_approvals()] == [awaiting]
    assert await store.alert_counts() == {"started": 3}
    after = await store.journal_stats()
    assert after.rows["target_locks"] == 1
    assert after.rows["safety_actions"] == 2  # the cooldowns' and budgets' history
    assert await store.get_pause(now) is not None
    circuits = await store.list_circuits(include_closed=True)
    assert [(c["target"], c["state"]) for c in circuits] == [("test:open", "open")]
    assert await store.prunable(cut) == no_rows()


async def test_a_done_heal_stays_while_its_alert_is_still_seen(store: Store) -> None:
    """A done heal past the heals window stays while its alert row is inside the alerts
    window (its re-sends are still its duplicates, a follow-up may still claim it); the
    same prune removes both once the alert has not been seen for the window. Heals
    kept forever (``heals: 0``) are never pruned, whatever the alerts window says."""
    [started] = await store.ingest([_alert("seen")], _plan)
    heal_id = started.heal_id or ""
    await store.finish(heal_id, Outcome.NOT_RECOVERED, "still down", {})
    [again] = await store.ingest([_alert("seen")], _plan)
    assert again.status == "duplicate"
    now = time.time()

    still_seen = Cutoffs(now + DAY, heals=now + 1, alerts=now - 60)
    assert (await store.prune(still_seen, 100)) == no_rows()
    assert await store.follow_up_candidates() == [heal_id]

    forever = Cutoffs(now + DAY, heals=None, alerts=now + 1)
    removed = await store.prune(forever, 100)
    assert removed is not None and removed["heals"] == 0
    assert (removed["alerts"], removed["deliveries"]) == (1, 1)
    assert await store.get_heal(heal_id) is not None

    gone = await store.prune(Cutoffs(now + DAY, heals=now + 1, alerts=now + 1), 100)
    assert gone is not None and gone["heals"] == 1
    assert await store.get_heal(heal_id) is None
    [fresh] = await store.ingest([_alert("seen")], _plan)
    assert fresh.status == "started"  # past its window, a re-send is a new alert


async def test_racing_prunes_of_several_stores_remove_each_row_once(backend: Backend) -> None:
    """Three store objects on one storage (replicas) prune at once, in small batches:
    every old row is removed exactly once in all (PostgreSQL: a batch that finds another
    running does nothing and says so), and nothing is left to prune."""
    stores = [await backend.open(Replica(id=f"r{n}")) for n in range(3)]
    try:
        first = stores[0]
        ids = [
            d.heal_id or "" for d in await first.ingest([_alert(f"x{i}") for i in range(30)], _plan)
        ]
        for heal_id in ids:
            await first.finish(heal_id, Outcome.RECOVERED, "ok", {})
        cut = _later(100)
        announced = await first.prunable(cut)

        async def prune(store: Store) -> dict[str, int]:
            total = no_rows()
            for _ in range(200):
                batch = await store.prune(cut, 4)
                if batch is None:
                    await asyncio.sleep(0.01)
                    continue
                for table, n in batch.items():
                    total[table] += n
                if not any(batch.values()):
                    return total
            raise AssertionError("never done")

        results = await asyncio.gather(*(prune(s) for s in stores))
    finally:
        for s in stores:
            await s.close()
    summed = {t: sum(r[t] for r in results) for t in PRUNED_TABLES}
    assert summed == announced
    assert summed["heals"] == 30 and summed["alerts"] == 30 and summed["deliveries"] == 1


async def test_stats_count_rows_oldest_entries_and_bytes(store: Store) -> None:
    """The stats count each table's rows and give its oldest entry; the store takes some
    bytes on disk."""
    before = time.time()
    ids = [d.heal_id or "" for d in await store.ingest([_alert(f"s{i}") for i in range(3)], _plan)]
    await store.finish(ids[0], Outcome.RECOVERED, "ok", {})
    stats = await store.journal_stats()
    assert stats.rows["heals"] == 3 and stats.rows["alerts"] == 3
    assert stats.rows["deliveries"] == 1 and stats.rows["events"] >= 4
    assert stats.rows["approvals"] == 0 and stats.oldest["approvals"] is None
    oldest = stats.oldest["heals"]
    assert oldest is not None and oldest >= before - 1
    assert stats.bytes > 0


async def test_sqlite_gives_pruned_pages_back_to_the_file_system(tmp_path: Path) -> None:
    """After a prune of many big webhook bodies the SQLite journal has free pages;
    reclaim gives them back (none left free) and the file shrinks."""
    path = tmp_path / "journal.db"
    store = await SqliteStore.open(path)
    try:
        for n in range(40):
            body = f'{{"n": {n}, "pad": "' + "x" * 50_000 + '"}'  # each post its own
            await store.ingest([_alert(f"big{n}")], lambda _: None, body=body)
        removed = await store.prune(_later(100), 1000)
        assert removed is not None and removed["deliveries"] == 40
        full = await store.journal_stats()
        assert full.free_bytes is not None and full.free_bytes > 1_000_000
        given = 0
        for _ in range(100):
            pages = await store.reclaim(64)
            given += pages
            if pages == 0:
                break
        assert given > 0
        after = await store.journal_stats()
        assert after.free_bytes == 0
        await store.writer.call(
            lambda: store.writer.conn().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        )
        assert path.stat().st_size < full.bytes - 1_000_000
    finally:
        await store.close()


async def test_an_existing_sqlite_journal_is_converted_to_incremental_vacuum_once(
    tmp_path: Path,
) -> None:
    """A version-4 journal (auto_vacuum off, no retention indexes) opened by this healer
    keeps its heals, gains the retention indexes (schema version 5) and is in
    incremental-vacuum mode, so a prune can give space back."""
    path = tmp_path / "journal.db"
    store = await SqliteStore.open(path)
    [started] = await store.ingest([_alert("old")], _plan)
    await store.close()
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA auto_vacuum=NONE")
        db.execute("VACUUM")
        for index in ("alerts_by_first_seen", "alerts_by_delivery", "deliveries_by_time"):
            db.execute(f"DROP INDEX {index}")
        db.execute("PRAGMA user_version=4")
        assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    finally:
        db.close()

    reopened = await SqliteStore.open(path)
    try:
        assert await reopened.get_heal(started.heal_id or "") is not None
    finally:
        await reopened.close()
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6
        indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert {"alerts_by_first_seen", "alerts_by_delivery", "deliveries_by_time"} <= indexes
    finally:
        db.close()
