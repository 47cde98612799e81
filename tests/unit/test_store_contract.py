"""The store contract (healer.store.Store), checked against every store through the
contract alone: exactly-once ingest, nothing answered before it is durable, heal
lifecycles and timelines, unfinished heals, the pause, atomic gate decisions, follow-up
claims decided once, a newer schema refused; replicas: leases renewed and taken over
once, fenced writes refused after a takeover, fleet-wide target locks, the replica on
every timeline entry (two store objects on the same storage are two replicas).
PostgreSQL only: leases by expiry (a restarted replica waits for its own old leases),
racing takeovers from three stores, a fenced write serialised with a takeover in flight,
a schema-1 store migrated in place. Approvals: decided once by racing replicas, tokens
bound to their heal and used once, opened once (fenced) and listed while awaited.

The ``backend`` fixture (tests/support/inprocess/stores.py) yields each store
implementation on fresh, real storage: SQLite on a temp file, PostgreSQL on a scratch
database of the test server. Concurrency is real
(``asyncio.gather`` of racing calls): results are compared as multisets, never by the
order in which racing calls were answered.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime

import asyncpg
import pytest

from healer.api import Alert
from healer.errors import JournalUnavailable, LeaseLost
from healer.outcomes import Outcome, Phase
from healer.replica import Replica
from healer.store import (
    FollowUpPolicy,
    HealPlan,
    Limits,
    Store,
    alert_key_time,
)
from healer.store.postgres import schema as pg_schema
from healer.store.postgres.store import PostgresOptions, PostgresStore
from healer.store.types import token_hash
from tests.support.inprocess.stores import Backend
from tests.support.servers.pgserver import private_postgres
from tests.support.servers.postgres import Sessions, scratch_database

STARTS = datetime(2026, 11, 23, 8, 0, 0, 123456, tzinfo=UTC)
PLAN = HealPlan("poke", "test.noop", {"target": "t"}, {}, False)
RACERS = 12


def _alert(fp: str, status: str = "firing", target: str = "t") -> Alert:
    return Alert(
        fingerprint=fp,
        status=status,
        labels={"alertname": "Poke", "target": target},
        annotations={"summary": fp},
        starts_at=STARTS,
    )


def _plan(_: object) -> HealPlan:
    return PLAN


LIMITS = Limits(cooldown=60.0, max_actions=100, window=3600.0, quiet=3600.0)


# ---- ingest ----------------------------------------------------------------------------


async def test_concurrent_deliveries_of_the_same_alerts_start_each_heal_once(store: Store) -> None:
    """Racing POSTs of the same five alerts (an HA pair, retries) start exactly one heal
    per alert; every other receipt is a duplicate of that heal, and the stored counts
    say five alerts started."""
    fps = [f"fp{i}" for i in range(5)]
    posts = [[_alert(fp) for fp in (fps if n % 2 else reversed(fps))] for n in range(RACERS)]
    answers = await asyncio.gather(*(store.ingest(post, _plan) for post in posts))
    dispositions = [d for answer in answers for d in answer]
    assert Counter(d.status for d in dispositions) == Counter(
        {"started": 5, "duplicate": 5 * (RACERS - 1)}
    )
    heal_of = {d.fingerprint: d.heal_id for d in dispositions if d.status == "started"}
    assert sorted(heal_of) == fps
    assert all(d.heal_id == heal_of[d.fingerprint] for d in dispositions)
    assert await store.alert_counts() == {"started": 5}
    assert sorted(h["id"] for h in await store.list_heals()) == sorted(
        h for h in heal_of.values() if h is not None
    )


async def test_a_resolve_is_recorded_once_and_makes_a_late_firing_resend_stale(
    store: Store,
) -> None:
    """A resolved notification is stored once (its time is what the gates read), lands
    on the open heal's timeline, and a firing re-send after it starts nothing."""
    [started] = await store.ingest([_alert("a")], _plan)
    resolves = await asyncio.gather(
        *(store.ingest([_alert("a", "resolved")], _plan) for _ in range(RACERS))
    )
    assert Counter(r[0].status for r in resolves) == Counter(
        {"resolved": 1, "duplicate": RACERS - 1}
    )
    key = ("a", alert_key_time(STARTS))
    at = await store.alert_resolved_at(key)
    assert at is not None
    assert await store.resolved_alerts(["a", "a", "b"]) == {key: at}
    assert await store.alert_resolved_at(("b", alert_key_time(STARTS))) is None
    [late] = await store.ingest([_alert("a")], _plan)
    assert (late.status, late.heal_id) == ("duplicate", started.heal_id)
    heal = await store.get_heal(started.heal_id or "")
    assert heal is not None
    assert [e["kind"] for e in heal["timeline"]] == ["matched", "alert_resolved"]


async def test_unmatched_alerts_keep_no_row_and_their_body_once(
    backend: Backend, store: Store
) -> None:
    """Alerts no rule matches (most of what Alertmanager sends) keep no row: they are
    answered ignored on every re-send, never duplicate, and an identical re-send of
    their post keeps no second body (after a restart, which forgets, it does);
    ``alert_log`` reads them from the body. A matched alert in the same posts keeps its
    row and its receipts, and is not listed again from a later body; a resolved notice
    keeps a row only where its alert has one."""

    def match(alert: Alert) -> HealPlan | None:
        return PLAN if alert.fingerprint == "m" else None

    post = [_alert("n1"), _alert("m"), _alert("n2", "resolved")]
    first = await store.ingest(post, match)
    again = await store.ingest(post, match)
    assert [(d.fingerprint, d.status) for d in first] == [
        ("n1", "ignored"),
        ("m", "started"),
        ("n2", "ignored"),
    ]
    assert [(d.fingerprint, d.status) for d in again] == [
        ("n1", "ignored"),
        ("m", "duplicate"),
        ("n2", "ignored"),
    ]
    assert await store.alert_counts() == {"started": 1}
    assert await backend.query("SELECT COUNT(*) FROM deliveries") == [(1,)]
    restarted = await backend.open()
    try:
        [third] = await restarted.ingest([_alert("n1")], match)
        [resolved] = await restarted.ingest([_alert("m", "resolved")], match)
    finally:
        await restarted.close()
    assert (third.status, resolved.status) == ("ignored", "resolved")
    log = await backend.query(
        "SELECT fingerprint, status, disposition, times_seen, labels FROM alert_log"
        " ORDER BY fingerprint, status, delivery_id"
    )
    assert [row[:4] for row in log] == [
        ("m", "firing", "started", 2),
        ("m", "resolved", "resolved", 1),
        ("n1", "firing", "ignored", 1),
        ("n1", "firing", "ignored", 1),
        ("n2", "resolved", "ignored", 1),
    ]
    assert {json.loads(row[4])["alertname"] for row in log} == {_alert("x").name}


# ---- durability ------------------------------------------------------------------------


async def test_every_acknowledged_write_is_seen_by_a_store_reopened_without_a_close(
    backend: Backend,
) -> None:
    """Nothing is answered before it is durable: what one store acknowledged (ingest,
    timeline, phase, outcome, pause, an admitted action) is all there for a second store
    opened on the same storage while the first was never closed (as after a crash)."""
    first = await backend.open()
    second: Store | None = None
    try:
        now = time.time()
        started = await asyncio.gather(
            *(first.ingest([_alert(f"d{i}")], _plan) for i in range(RACERS))
        )
        ids = [answer[0].heal_id or "" for answer in started]
        await asyncio.gather(
            *(first.event_soon(h, Phase.PENDING, "note", {"n": i}) for i, h in enumerate(ids))
        )
        await first.set_phase(ids[0], Phase.CHECKING, targets=["test:t"])
        await first.finish_soon(ids[1], Outcome.RECOVERED, "ok", {"total": 1.0})
        decision = await first.admit(ids[0], "poke", ["test:t"], LIMITS, now)
        assert decision.kind == "act"
        await first.set_pause(now, now + 600, "maintenance")

        second = await backend.open()
        assert sorted(h["id"] for h in await second.list_heals(limit=100)) == sorted(ids)
        for i, heal_id in enumerate(ids):
            heal = await second.get_heal(heal_id)
            assert heal is not None
            assert (heal["timeline"][1]["kind"], heal["timeline"][1]["data"]) == ("note", {"n": i})
        assert (await second.get_heal(ids[1]) or {})["outcome"] == "recovered"
        assert (await second.get_heal(ids[0]) or {})["targets"] == ["test:t"]
        assert (await second.get_pause(now) or {})["reason"] == "maintenance"
        # The action admitted by the first store counts for the second's cooldown.
        await second.clear_pause(now)
        again = await second.admit(ids[2], "poke", ["test:t"], LIMITS, now + 1)
        assert again.kind == "cooldown"
    finally:
        await first.close()
        if second is not None:
            await second.close()


# ---- heals and timelines ---------------------------------------------------------------


async def test_a_heal_lifecycle_and_its_timeline_in_order(store: Store) -> None:
    """A heal goes pending -> checking -> acting -> verifying -> done; its timeline lists
    every entry in the order written (seq 1..n), its outcome and durations are kept, and
    the history filters by rule, outcome and target, newest first, paged by created_at."""
    [started] = await store.ingest([_alert("life")], _plan, received_at=123.5)
    heal_id = started.heal_id or ""
    await store.set_phase(heal_id, Phase.CHECKING, targets=["test:t"])
    for n, phase in enumerate((Phase.ACTING, Phase.VERIFYING)):
        await store.set_phase(heal_id, phase)
        await store.add_event(heal_id, phase, f"step{n}", {"n": n})
    await store.finish(heal_id, Outcome.RECOVERED, "back to normal", {"total": 2.5})
    manual = await store.create_manual_heal(PLAN, {"target": "m"}, {})

    heal = await store.get_heal(heal_id)
    assert heal is not None
    assert (
        heal["phase"],
        heal["outcome"],
        heal["reason"],
        heal["durations"],
        heal["targets"],
        heal["source"],
        heal["rule"],
    ) == ("done", "recovered", "back to normal", {"total": 2.5}, ["test:t"], "alert", "poke")
    timeline = heal["timeline"]
    assert [e["kind"] for e in timeline] == ["matched", "step0", "step1", "outcome"]
    assert [e["seq"] for e in timeline] == [1, 2, 3, 4]
    assert timeline[0]["data"]["received_at"] == 123.5
    assert [e["at"] for e in timeline] == sorted(e["at"] for e in timeline)
    assert (await store.get_heal(manual) or {})["timeline"][0]["kind"] == "manual_trigger"
    assert await store.get_heal("no-such-heal") is None

    assert [h["id"] for h in await store.list_heals()] == [manual, heal_id]
    assert [h["id"] for h in await store.list_heals(outcome="recovered")] == [heal_id]
    assert [h["id"] for h in await store.list_heals(target="test:t")] == [heal_id]
    [newest] = await store.list_heals(limit=1)
    assert [h["id"] for h in await store.list_heals(before=newest["created_at"])] == [heal_id]
    assert [h["id"] for h in await store.list_heals(since=newest["created_at"])] == [manual]


async def test_unfinished_heals_are_found_after_a_reopen(backend: Backend) -> None:
    """What a start resumes: every heal not done, oldest first, whether pending or
    interrupted mid-phase (outcome interrupted, phase kept); finished ones are not."""
    store = await backend.open()
    try:
        ids = [
            d.heal_id or "" for d in await store.ingest([_alert(f"u{i}") for i in range(3)], _plan)
        ]
        await store.finish(ids[0], Outcome.NOT_RECOVERED, "still down", {})
        await store.set_phase(ids[1], Phase.ACTING, targets=["test:t"])
        await store.interrupt(ids[1], Phase.ACTING, "healer stopped", {"act": 0.5})
    finally:
        await store.close()
    reopened = await backend.open()
    try:
        rows = await reopened.unfinished()
    finally:
        await reopened.close()
    assert [(r["id"], r["phase"], r["outcome"]) for r in rows] == [
        (ids[1], "acting", "interrupted"),
        (ids[2], "pending", None),
    ]


# ---- pause -----------------------------------------------------------------------------


async def test_pause_set_replace_expire_and_clear(store: Store) -> None:
    """No pause at first; a set pause is read back until it expires; a new one replaces
    it; clearing returns the active pause and leaves none."""
    now = time.time()
    assert await store.get_pause(now) is None
    assert await store.clear_pause(now) is None
    first = await store.set_pause(now, now + 60, "deploy")
    assert first == {"since": now, "until": now + 60, "reason": "deploy"}
    assert await store.get_pause(now + 30) == first
    assert await store.get_pause(now + 60) is None  # expired
    second = await store.set_pause(now + 1, now + 600, "longer")
    assert await store.get_pause(now + 120) == second
    assert await store.clear_pause(now + 2) == second
    assert await store.get_pause(now + 2) is None


# ---- safety state ----------------------------------------------------------------------


async def test_racing_admissions_pass_a_cooldown_once(store: Store) -> None:
    """Heals racing for one target within the cooldown: exactly one acts, every other
    one is told the cooldown (decision and record are one transaction)."""
    now = time.time()
    decisions = await asyncio.gather(
        *(store.admit(f"h{i}", "poke", ["test:t"], LIMITS, now) for i in range(RACERS))
    )
    assert Counter(d.kind for d in decisions) == Counter({"act": 1, "cooldown": RACERS - 1})
    assert all(d.target == "test:t" and d.left > 0 for d in decisions if d.kind == "cooldown")


async def test_racing_admissions_spend_a_budget_exactly_and_open_one_circuit(store: Store) -> None:
    """Without a cooldown, a budget of 3 admits exactly 3 racing heals; the next one opens
    the circuit and escalates, every later one is suppressed by the open circuit. The
    circuit is listed, its rule open, and closing it starts the budget afresh."""
    limits = Limits(cooldown=0.0, max_actions=3, window=3600.0, quiet=3600.0)
    now = time.time()
    decisions = await asyncio.gather(
        *(store.admit(f"h{i}", "poke", ["test:t"], limits, now) for i in range(RACERS))
    )
    assert Counter(d.kind for d in decisions) == Counter(
        {"act": 3, "escalate": 1, "circuit_open": RACERS - 4}
    )
    [escalated] = [d for d in decisions if d.kind == "escalate"]
    assert escalated.actions == 3 and escalated.circuit is not None
    assert await store.open_rules() == {"poke"}
    [circuit] = await store.list_circuits()
    assert (circuit["rule"], circuit["target"], circuit["state"]) == ("poke", "test:t", "open")
    await store.record_escalation(
        "poke", "test:t", circuit["escalated_by"], [{"notifier": "chat", "ok": True}]
    )
    assert (await store.list_circuits())[0]["escalation"] == [{"notifier": "chat", "ok": True}]

    closed = await store.close_circuits("poke", None, now + 1, "api")
    assert [c["target"] for c in closed] == ["test:t"]
    assert await store.open_rules() == set()
    assert len(await store.list_circuits(include_closed=True)) == 1
    after = await store.admit("fresh", "poke", ["test:t"], limits, now + 2)
    assert after.kind == "act"


async def test_admission_sees_a_resolve_and_a_pause_first(store: Store) -> None:
    """A heal whose alert already resolved is told so (nothing recorded); a pause
    suppresses every heal, manual ones too; a quiet circuit is closed by the sweep."""
    await store.ingest([_alert("r", "resolved")], _plan)
    key = ("r", alert_key_time(STARTS))
    now = time.time()
    resolved = await store.admit("h1", "poke", ["test:t"], LIMITS, now, key)
    assert resolved.kind == "resolved" and resolved.resolved_at > 0
    await store.set_pause(now, now + 60, "hands off")
    paused = await asyncio.gather(
        store.admit("h2", "poke", ["test:t"], LIMITS, now),
        store.admit("h3", None, ["test:t"], None, now),
    )
    assert [d.kind for d in paused] == ["paused", "paused"]
    await store.clear_pause(now)
    assert (await store.admit("h4", None, ["test:t"], None, now)).kind == "act"

    spent = Limits(cooldown=0.0, max_actions=0, window=3600.0, quiet=10.0)
    assert (await store.admit("h5", "poke", ["test:t"], spent, now)).kind == "escalate"
    assert await store.sweep(now + 5, spent.quiet) == []
    assert [c["target"] for c in await store.sweep(now + 11, spent.quiet)] == ["test:t"]
    assert await store.open_rules() == set()


# ---- follow-ups ------------------------------------------------------------------------


async def _not_recovered(store: Store, fp: str) -> str:
    [started] = await store.ingest([_alert(fp)], _plan)
    heal_id = started.heal_id or ""
    await store.finish(heal_id, Outcome.NOT_RECOVERED, "still down", {})
    return heal_id


def _policy(mode: str) -> FollowUpPolicy:
    return FollowUpPolicy(mode=lambda _: mode, cooldown=lambda _: 0.0, plan=lambda _: PLAN)


async def test_racing_retry_claims_create_one_retry_heal(store: Store) -> None:
    """Re-sends racing (from any process) to follow up a not_recovered heal: exactly one
    claim creates the retry heal (pending, ``retry_of`` on its timeline), every other one
    decides nothing; the heal is no longer a candidate."""
    heal_id = await _not_recovered(store, "retry")
    assert await store.follow_up_candidates() == [heal_id]
    now = time.time()
    claims = await asyncio.gather(
        *(
            store.claim_follow_up(heal_id, run_id=f"process-{i}", now=now, policy=_policy("retry"))
            for i in range(RACERS)
        )
    )
    assert Counter(c.kind for c in claims) == Counter({"retry": 1, "none": RACERS - 1})
    [retry] = [c for c in claims if c.kind == "retry"]
    assert retry.retry_plan == PLAN and retry.retry_alert is not None
    new = await store.get_heal(retry.retry_id or "")
    assert new is not None
    assert (new["source"], new["phase"]) == ("retry", "pending")
    assert [e["kind"] for e in new["timeline"]] == ["matched", "retry_of"]
    assert await store.follow_up_candidates() == []
    # Later re-sends of the alert are duplicates of the retry.
    [again] = await store.ingest([_alert("retry")], _plan)
    assert again.heal_id == retry.retry_id


async def test_racing_escalation_claims_escalate_once_until_delivered(store: Store) -> None:
    """Racing claims of one process escalate a not_recovered heal once; once its
    deliveries are recorded (on the timeline), no claim, of any process, escalates again."""
    heal_id = await _not_recovered(store, "esc")
    now = time.time()
    claims = await asyncio.gather(
        *(
            store.claim_follow_up(heal_id, run_id="one", now=now, policy=_policy("escalate"))
            for _ in range(RACERS)
        )
    )
    assert Counter(c.kind for c in claims) == Counter({"escalate": 1, "none": RACERS - 1})
    assert await store.follow_up_candidates() == [heal_id]  # not delivered yet
    await store.record_follow_up_deliveries(heal_id, [{"notifier": "chat", "ok": True}])
    assert await store.follow_up_candidates() == []
    later = await store.claim_follow_up(heal_id, run_id="two", now=now, policy=_policy("escalate"))
    assert later.kind == "none"
    heal = await store.get_heal(heal_id)
    assert heal is not None
    assert [e["kind"] for e in heal["timeline"]] == [
        "matched",
        "outcome",
        "not_recovered_escalation",
        "escalation",
    ]


# ---- lifecycle -------------------------------------------------------------------------


async def test_ping_answers_on_an_open_store(store: Store) -> None:
    """The readiness probe: ping returns (it wrote) on a store that accepts writes."""
    await store.ping()
    await store.ping()


async def test_a_store_written_by_a_newer_healer_is_refused(backend: Backend) -> None:
    """Storage whose schema is newer than this healer's is refused at open, with a message
    saying so and what to do, instead of writing what the newer healer would misread."""
    store = await backend.open()
    await store.close()
    await backend.from_newer_healer()
    version = backend.schema_version
    with pytest.raises(
        JournalUnavailable,
        match=rf"its schema {version + 1} is newer than this healer's "
        rf"\({version}\): upgrade healer",
    ):
        await backend.open()


async def test_several_stores_on_one_storage_start_each_heal_once(backend: Backend) -> None:
    """Racing deliveries of the same alerts through several store objects on the same
    storage (as separate replicas would be) start exactly one heal per alert identity;
    every other receipt is a duplicate of it, whichever store answered."""
    stores = [await backend.open() for _ in range(3)]
    try:
        fps = [f"rep{i}" for i in range(5)]
        posts = [
            (stores[n % len(stores)], [_alert(fp) for fp in (fps if n % 2 else reversed(fps))])
            for n in range(RACERS)
        ]
        answers = await asyncio.gather(*(s.ingest(post, _plan) for s, post in posts))
        dispositions = [d for answer in answers for d in answer]
        assert Counter(d.status for d in dispositions) == Counter(
            {"started": 5, "duplicate": 5 * (RACERS - 1)}
        )
        heal_of = {d.fingerprint: d.heal_id for d in dispositions if d.status == "started"}
        assert all(d.heal_id == heal_of[d.fingerprint] for d in dispositions)
        for store in stores:
            assert await store.alert_counts() == {"started": 5}
            assert len(await store.list_heals(limit=100)) == 5
    finally:
        for store in stores:
            await store.close()


# ---- PostgreSQL only: migrations and outages -------------------------------------------


async def test_postgres_store_migrates_an_empty_database_once() -> None:
    """An empty database is given the newest schema (version recorded in healer_schema);
    migrating again changes nothing; a store opens on it."""
    async with scratch_database() as dsn:
        options = PostgresOptions(dsn)
        assert await PostgresStore.migrate(options) == (0, pg_schema.SCHEMA_VERSION)
        assert await PostgresStore.migrate(options) == (pg_schema.SCHEMA_VERSION,) * 2
        store = await PostgresStore.open(options)
        try:
            await store.ping()
        finally:
            await store.close()
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch("SELECT version, applied_at FROM healer_schema")
        finally:
            await conn.close()
        assert [r["version"] for r in rows] == [pg_schema.SCHEMA_VERSION]
        assert rows[0]["applied_at"] > 0


async def test_postgres_store_unreachable_then_back_loses_nothing_acknowledged() -> None:
    """The server stops: every call (ingest, a read, ping, a queued write) raises
    JournalUnavailable naming the store, password redacted; nothing is acknowledged. It
    starts again: the same store object reconnects by itself, and every alert acknowledged
    before the outage is there."""
    with private_postgres(superuser_password="s3cret-pw") as server:
        store = await PostgresStore.open(PostgresOptions(server.dsn, connect_timeout=2.0))
        try:
            acked = [
                d.heal_id for d in await store.ingest([_alert(f"o{i}") for i in range(4)], _plan)
            ]
            server.stop()
            calls: list[Callable[[], Awaitable[object]]] = [
                lambda: store.ingest([_alert("during")], _plan),
                store.ping,
                lambda: store.list_heals(),
                lambda: store.event_soon(acked[0] or "", Phase.PENDING, "note", {}),
            ]
            for call in calls:
                with pytest.raises(JournalUnavailable) as raised:
                    await call()
                assert "s3cret-pw" not in str(raised.value)
                assert f"127.0.0.1:{server.port}" in str(raised.value)
            server.start()
            for _ in range(50):  # the pool reconnects on the next acquire
                try:
                    await store.ping()
                    break
                except JournalUnavailable:
                    await asyncio.sleep(0.1)
            [again] = await store.ingest([_alert("after")], _plan)
            assert again.status == "started"
            ids = {h["id"] for h in await store.list_heals(limit=100)}
            assert set(acked) | {again.heal_id} == ids
        finally:
            await store.close()


# ---- replicas: leases, fencing, target locks -------------------------------------------

TTL = 2.0


@pytest.fixture
async def replicas(backend: Backend) -> AsyncIterator[list[Store]]:
    """Three replicas (``replica-a``, ``-b``, ``-c``) of one store, short leases."""
    opened: list[Store] = []
    try:
        for name in "abc":
            opened.append(await backend.open(Replica(id=f"replica-{name}", lease_ttl=TTL)))
        yield opened
    finally:
        for one in opened:
            await one.close()


async def _started(store: Store, fp: str) -> str:
    [started] = await store.ingest([_alert(fp)], _plan)
    return started.heal_id or ""


async def test_a_renewed_lease_is_kept_and_an_expired_one_is_taken_over_exactly_once(
    replicas: list[Store],
) -> None:
    """A heal is leased to the replica that ingested it: nobody takes it over while the
    lease lives, a renewal extends it; once expired, of two replicas racing to take it
    over exactly one gets it (as the same row unfinished() returns), and the old holder's
    renewal then says it is lost."""
    a, b, c = replicas
    heal_id = await _started(a, "lease")
    now = time.time()
    assert await b.take_over(now, 10) == []
    assert await a.renew_leases([heal_id], now + TTL - 0.5) == {heal_id}
    assert await b.take_over(now + TTL + 0.5, 10) == []  # renewed: still alive
    later = now + 3 * TTL
    won = await asyncio.gather(b.take_over(later, 10), c.take_over(later, 10))
    assert sorted(len(rows) for rows in won) == [0, 1]
    [row] = won[0] or won[1]
    winner = "replica-b" if won[0] else "replica-c"
    [unfinished] = await a.unfinished()
    assert row == {**unfinished, "taken_from": "replica-a"}
    assert (row["id"], row["phase"], row["owner"]) == (heal_id, "pending", winner)
    assert await a.renew_leases([heal_id], later) == set()
    owner = b if won[0] else c
    assert await owner.renew_leases([heal_id], later) == {heal_id}
    assert await owner.take_over(later + 3 * TTL, 10) == []  # never its own heal


async def test_an_unfinished_heal_leased_to_a_store_that_runs_nothing_is_an_orphan(
    replicas: list[Store],
) -> None:
    """orphans() names the unfinished heals leased to this store that its caller does not
    run (an ingest that committed though the store answered an error): not a heal the
    caller runs, not one created after ``before``, not another replica's, not a finished
    one; nothing is written by asking."""
    a, b, _ = replicas
    heal_id = await _started(a, "orphan")
    before = await a.get_heal(heal_id)
    later = time.time() + 1
    [row] = await a.orphans([], later)
    [unfinished] = await a.unfinished()
    assert row == {**unfinished, "taken_from": "replica-a"}
    assert await a.orphans([heal_id], later) == []  # the caller runs it
    assert await a.orphans([], float(row["created_at"])) == []  # created since `before`
    assert await b.orphans([], later) == []  # another replica's lease
    assert await a.get_heal(heal_id) == before  # asking wrote nothing
    await a.finish(heal_id, Outcome.NO_ACTION, "done", {})
    assert await a.orphans([], later) == []  # finished


async def test_fenced_writes_after_a_takeover_raise_lease_lost_and_write_nothing(
    replicas: list[Store],
) -> None:
    """Once another replica took the heal over, the old holder's phase change, fenced
    timeline entry, interrupt and finish each raise LeaseLost and store nothing; an
    unfenced note still lands; the new holder finishes the heal."""
    a, b, _ = replicas
    heal_id = await _started(a, "fence")
    await a.set_phase(heal_id, Phase.CHECKING, targets=["test:t"])
    [taken] = await b.take_over(time.time() + 3 * TTL, 10)
    assert taken["id"] == heal_id
    before = await a.get_heal(heal_id)
    for write in (
        a.set_phase(heal_id, Phase.ACTING),
        a.add_event(heal_id, Phase.ACTING, "act", {"summary": "x"}, fenced=True),
        a.event_soon(heal_id, Phase.ACTING, "act", {"summary": "x"}, fenced=True),
        a.interrupt(heal_id, Phase.ACTING, "stopped", {}),
        a.finish(heal_id, Outcome.RECOVERED, "late", {}),
    ):
        with pytest.raises(LeaseLost):
            await write
    assert await a.get_heal(heal_id) == before
    await a.add_event(heal_id, Phase.CHECKING, "note", {"reason": "operator"})
    await b.finish(heal_id, Outcome.NOT_RECOVERED, "still down", {})
    heal = await b.get_heal(heal_id) or {}
    assert (heal["outcome"], heal["reason"]) == ("not_recovered", "still down")
    with pytest.raises(LeaseLost):
        await a.finish(heal_id, Outcome.RECOVERED, "late", {})
    assert [e["kind"] for e in (await b.get_heal(heal_id) or {})["timeline"]] == [
        "matched",
        "note",
        "outcome",
    ]


async def test_a_refused_fenced_write_queued_with_others_leaves_them_written(
    replicas: list[Store],
) -> None:
    """Fenced writes queued together (they may share one commit): the one for a heal
    taken over raises LeaseLost and writes nothing, while the writes queued around it for
    a heal still held all land, in order."""
    a, b, _ = replicas
    lost, held = await _started(a, "q-lost"), await _started(a, "q-held")
    [taken] = await b.take_over(time.time() + 3 * TTL, 1)  # the oldest: ``lost``
    assert taken["id"] == lost
    assert await a.renew_leases([held, lost], time.time()) == {held}
    queued = [
        a.event_soon(held, Phase.PENDING, "before", {}, fenced=True),
        a.set_phase_soon(lost, Phase.ACTING),
        a.event_soon(lost, Phase.ACTING, "act", {}, fenced=True),
        a.set_phase_soon(held, Phase.CHECKING, targets=["test:t"]),
        a.finish_soon(lost, Outcome.RECOVERED, "late", {}),
        a.event_soon(held, Phase.CHECKING, "after", {}, fenced=True),
    ]
    results = await asyncio.gather(*queued, return_exceptions=True)
    assert [type(r).__name__ for r in results] == [
        "NoneType",
        "LeaseLost",
        "LeaseLost",
        "NoneType",
        "LeaseLost",
        "NoneType",
    ]
    mine = await a.get_heal(held) or {}
    assert (mine["phase"], [e["kind"] for e in mine["timeline"]]) == (
        "checking",
        ["matched", "before", "after"],
    )
    theirs = await b.get_heal(lost) or {}
    assert (theirs["phase"], theirs["outcome"], [e["kind"] for e in theirs["timeline"]]) == (
        "pending",
        None,
        ["matched"],
    )


async def test_a_target_lock_is_exclusive_across_replicas_until_released_or_expired(
    replicas: list[Store],
) -> None:
    """Two heals on two replicas: racing for one target, exactly one gets the lock; the
    other is refused while the holder's lease lives, gets it once that lease expired;
    an unlock by a heal that lost the lock does not free it; a finish releases it."""
    a, b, _ = replicas
    heal_a, heal_b = await _started(a, "lock-a"), await _started(b, "lock-b")
    now = time.time()
    raced = await asyncio.gather(
        a.lock_target("race", heal_a, now), b.lock_target("race", heal_b, now)
    )
    assert Counter(raced) == Counter([True, False])
    assert await a.lock_target("t", heal_a, now) is True
    assert await a.lock_target("t", heal_a, now) is True  # its own: still held
    assert await b.lock_target("t", heal_b, now) is False
    assert await b.lock_target("t", heal_b, now + 3 * TTL) is True  # heal_a's lease expired
    await a.unlock_target("t", heal_a)  # not its lock any more: nothing happens
    assert await a.lock_target("t", heal_a, time.time()) is False
    await b.unlock_target("t", heal_b)
    assert await a.lock_target("t", heal_a, time.time()) is True
    await a.finish(heal_a, Outcome.RECOVERED, "done", {})
    assert await b.lock_target("t", heal_b, time.time()) is True


async def test_every_timeline_entry_names_the_replica_that_wrote_it(replicas: list[Store]) -> None:
    """Each timeline entry records the replica whose store wrote it, across a takeover
    and for heals created manually or by ingest."""
    a, b, _ = replicas
    heal_id = await _started(a, "who")
    await a.add_event(heal_id, Phase.PENDING, "resumed", {}, fenced=True)
    await b.take_over(time.time() + 3 * TTL, 10)
    await b.set_phase(heal_id, Phase.CHECKING)
    await b.add_event(heal_id, Phase.CHECKING, "check", {}, fenced=True)
    await b.finish(heal_id, Outcome.NO_ACTION, "nothing to do", {})
    heal = await a.get_heal(heal_id) or {}
    assert [(e["kind"], e["replica"]) for e in heal["timeline"]] == [
        ("matched", "replica-a"),
        ("resumed", "replica-a"),
        ("check", "replica-b"),
        ("outcome", "replica-b"),
    ]
    manual = await b.create_manual_heal(PLAN, {"target": "t"}, {})
    assert [e["replica"] for e in (await a.get_heal(manual) or {})["timeline"]] == ["replica-b"]
    assert (await a.get_heal(manual) or {})["owner"] == "replica-b"


# ---- PostgreSQL only: leases by expiry, racing takeovers, schema 1 -> 2 ----------------


def _pg_replica(name: str) -> Replica:
    return Replica(id=name, lease_ttl=TTL)


async def test_postgres_a_restarted_replica_takes_its_old_heals_only_after_expiry() -> None:
    """PostgreSQL has no "holder open in this process" rule: a replica restarted under the
    same id (a new token) is another holder, so it takes over the heals its previous
    process left only once their lease expired, naming itself as the owner they had;
    the dead process's token then holds nothing."""
    async with scratch_database() as dsn:
        options = PostgresOptions(dsn)
        old = await PostgresStore.open(options, _pg_replica("replica-a"))
        try:
            before = time.time()
            ids = sorted([await _started(old, f"restart{i}") for i in range(3)])
            after = time.time()
        finally:
            await old.close()  # the process is gone; its leases are not released
        new = await PostgresStore.open(options, _pg_replica("replica-a"))
        try:
            assert await new.take_over(before, 10) == []
            assert await new.take_over(before + TTL - 0.01, 10) == []  # not expired yet
            rows = await new.take_over(after + TTL + 0.01, 10)
            assert sorted(r["id"] for r in rows) == ids
            assert {(r["owner"], r["taken_from"]) for r in rows} == {("replica-a", "replica-a")}
            assert await new.renew_leases(ids, after + TTL) == set(ids)
        finally:
            await new.close()
        stale = await PostgresStore.open(options, old.replica)  # the old token again
        try:
            assert await stale.renew_leases(ids, after + TTL) == set()
        finally:
            await stale.close()


async def test_postgres_racing_takeovers_from_three_stores_are_disjoint_and_complete() -> None:
    """Three replicas racing to take over, in small batches, the expired heals of a dead
    one: every expired heal goes to exactly one of them (the sets are disjoint and cover
    all), heals whose lease was renewed go to none, and nothing is left to take."""
    async with scratch_database() as dsn, AsyncExitStack() as stack:
        options = PostgresOptions(dsn)
        stores: list[PostgresStore] = []
        for name in ("dead", "b", "c", "d"):
            store = await PostgresStore.open(options, _pg_replica(f"replica-{name}"))
            stack.push_async_callback(store.close)
            stores.append(store)
        dead, racers = stores[0], stores[1:]
        answer = await dead.ingest([_alert(f"race{i}") for i in range(30)], _plan)
        ids = [d.heal_id or "" for d in answer]
        later = time.time() + 3 * TTL
        alive = set(await dead.renew_leases(ids[:5], later - 0.5))
        assert len(alive) == 5

        async def drain(store: PostgresStore) -> list[str]:
            got: list[str] = []
            for _ in range(30):  # bounded: 30 heals, at least one per non-empty round
                rows = await store.take_over(later, 4)
                if not rows:
                    break
                got += [r["id"] for r in rows]
            return got

        taken = await asyncio.gather(*(drain(store) for store in racers))
        every = [heal_id for got in taken for heal_id in got]
        assert Counter(every) == Counter(set(ids) - alive)  # each expired heal once
        assert await racers[0].take_over(later, 100) == []
        owners = {r["id"]: r["owner"] for r in await dead.unfinished()}
        for store, got in zip(racers, taken, strict=True):
            assert {owners[h] for h in got} <= {store.replica.id}
        assert {owners[h] for h in alive} == {"replica-dead"}


async def test_postgres_a_fenced_write_waiting_on_a_takeover_in_flight_writes_nothing() -> None:
    """Fencing and takeover are serialised on the heal's row: while another transaction
    moves the lease (not committed yet), the holder's phase change waits; once it
    commits, the write raises LeaseLost and the phase is unchanged. While a fenced write
    holds the row, a takeover skips the heal instead of waiting."""
    async with scratch_database() as dsn, Sessions(dsn) as sessions:
        a = await PostgresStore.open(PostgresOptions(dsn), _pg_replica("replica-a"))
        try:
            heal_id = await _started(a, "inflight")
            mover = await sessions.open(application_name="mover")
            await mover.execute("BEGIN")
            await mover.execute(
                "UPDATE heals SET owner='replica-x', lease_token='x' WHERE id=$1", heal_id
            )
            write = asyncio.ensure_future(a.set_phase(heal_id, Phase.ACTING))
            watcher = await sessions.open()
            for _ in range(200):  # bounded: until the write waits on the mover's row lock
                if await watcher.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name="
                    "'healer' AND wait_event_type = 'Lock' AND datname = current_database()"
                ):
                    break
                await asyncio.sleep(0.05)
            else:
                raise TimeoutError("the fenced write never waited on the row lock")
            assert not write.done()
            await mover.execute("COMMIT")
            with pytest.raises(LeaseLost):
                await write
            heal = await a.get_heal(heal_id) or {}
            assert (heal["phase"], heal["owner"]) == ("pending", "replica-x")

            b = await PostgresStore.open(PostgresOptions(dsn), _pg_replica("replica-b"))
            try:
                await mover.execute("BEGIN")
                await mover.execute("SELECT 1 FROM heals WHERE id=$1 FOR UPDATE", heal_id)
                assert await b.take_over(time.time() + 3 * TTL, 10) == []  # skipped
                await mover.execute("COMMIT")
                [row] = await b.take_over(time.time() + 3 * TTL, 10)
                assert (row["id"], row["taken_from"]) == (heal_id, "replica-x")
            finally:
                await b.close()
        finally:
            await a.close()


async def test_postgres_a_version_1_store_migrates_in_place_and_its_heals_are_taken_over() -> None:
    """A store at schema 1 (before replicas) with a heal and its timeline is brought to
    schema 2 in place: the heal is kept, unleased and its old entry names no replica; the
    first take_over of any replica gets it (taken from nobody), and new entries name the
    replica."""
    async with scratch_database() as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            async with conn.transaction():
                for statement in pg_schema.VERSION_DDL:
                    await conn.execute(statement)
                for version, _, statements in pg_schema.MIGRATIONS:
                    if version == 1:
                        for statement in statements:
                            await conn.execute(statement)
                await conn.execute("INSERT INTO healer_schema VALUES (1, 0)")
                await conn.execute(
                    "INSERT INTO heals (id, created_at, updated_at, source, rule, handler,"
                    " labels, annotations, params, verify, dry_run, phase) VALUES ('old', 1,"
                    " 1, 'manual', 'poke', 'test.noop', '{}', '{}', '{}', '{}', 0, 'acting')"
                )
                await conn.execute(
                    "INSERT INTO events (heal_id, seq, at, phase, kind, data)"
                    " VALUES ('old', 1, 1, 'pending', 'manual_trigger', '{}')"
                )
        finally:
            await conn.close()
        options = PostgresOptions(dsn)
        assert await PostgresStore.migrate(options) == (1, pg_schema.SCHEMA_VERSION)
        store = await PostgresStore.open(options, _pg_replica("replica-new"))
        try:
            before = await store.get_heal("old") or {}
            assert (before["owner"], before["lease_until"]) == (None, None)
            assert [e["replica"] for e in before["timeline"]] == [None]
            [row] = await store.take_over(time.time(), 10)
            assert (row["id"], row["phase"], row["owner"], row["taken_from"]) == (
                "old",
                "acting",
                "replica-new",
                None,
            )
            await store.add_event("old", Phase.VERIFYING, "verification_resumed", {}, fenced=True)
            after = await store.get_heal("old") or {}
            assert [e["replica"] for e in after["timeline"]] == [None, "replica-new"]
        finally:
            await store.close()


# ---- approvals (mode: approve) ---------------------------------------------------------


async def test_racing_decisions_from_two_replicas_decide_an_approval_once(
    replicas: list[Store],
) -> None:
    """Twelve racing approve/reject calls through two replicas (a double click, the API
    and a button together) close the approval exactly once: one is ``decided``, the rest
    find it ``done``, the timeline has one decision entry, and the heal's own ``close``
    afterwards keeps the human's decision."""
    a, b, _ = replicas
    heal_id = await _started(a, "decide-race")
    row, opened = await a.open_approval(heal_id, token_hash("t"), ["test:t"], time.time() + 60)
    assert opened and row["decision"] is None and row["targets"] == ["test:t"]
    verdicts = await asyncio.gather(
        *(
            (a if n % 2 else b).decide_approval(
                heal_id, "approve" if n % 3 else "reject", by=f"user{n}", via="api"
            )
            for n in range(RACERS)
        )
    )
    assert Counter(v.status for v in verdicts) == {"decided": 1, "done": RACERS - 1}
    [won] = [v.approval for v in verdicts if v.status == "decided"]
    assert won is not None and all(
        v.approval is not None and v.approval["decided_by"] == won["decided_by"] for v in verdicts
    )
    heal = await a.get_heal(heal_id)
    assert heal is not None and heal["phase"] == "awaiting_approval"
    kinds = [e["kind"] for e in heal["timeline"]]
    assert kinds.count("approval_requested") == 1
    assert kinds.count("approved") + kinds.count("rejected") == 1
    closed = await a.close_approval(heal_id, "expire")
    assert closed is not None and closed["decision"] == won["decision"]


async def test_an_approval_token_is_bound_to_its_heal_and_used_once(store: Store) -> None:
    """Only the token's hash is stored; a wrong token (or another heal's) is refused as
    ``bad_token`` and writes nothing; the right one decides; a second use finds it
    ``done``; an unknown heal or one that never asked is ``unknown``; an expired one is
    ``done``."""
    one = await _started(store, "tok-1")
    two = await _started(store, "tok-2")
    await store.open_approval(one, token_hash("token-one"), ["test:t"], time.time() + 60)
    await store.open_approval(two, token_hash("token-two"), ["test:t"], time.time() + 60)
    wrong = await store.decide_approval(
        one, "approve", by="@eve", via="mattermost", token_hash=token_hash("token-two")
    )
    assert wrong.status == "bad_token" and wrong.approval is None
    assert (await store.get_approval(one) or {}).get("decision") is None
    right = await store.decide_approval(
        one, "approve", by="@al", via="mattermost", token_hash=token_hash("token-one")
    )
    assert right.status == "decided" and right.approval is not None
    assert (right.approval["decision"], right.approval["decided_by"]) == ("approve", "@al")
    again = await store.decide_approval(
        one, "reject", by="@al", via="mattermost", token_hash=token_hash("token-one")
    )
    assert again.status == "done"
    assert (await store.decide_approval("nope", "approve", by="x", via="api")).status == "unknown"
    never = await _started(store, "tok-never")
    assert (await store.decide_approval(never, "approve", by="x", via="api")).status == "unknown"
    late = await _started(store, "tok-late")
    await store.open_approval(late, token_hash("late"), ["test:t"], time.time() - 1)
    assert (await store.decide_approval(late, "approve", by="x", via="api")).status == "done"
    raw = str(await store.get_heal(one)) + str(await store.get_approval(one))
    assert "token-one" not in raw and token_hash("token-one") not in raw


async def test_an_approval_is_opened_once_fenced_and_listed_while_awaited(
    replicas: list[Store],
) -> None:
    """Opening is fenced (another replica's open raises LeaseLost) and kept: asking again
    (a resumed heal) returns the first approval, same deadline. While it waits the heal
    is listed by ``phase=awaiting_approval`` and among the open approvals; once closed it
    is in neither."""
    a, b, _ = replicas
    heal_id = await _started(a, "open-once")
    deadline = time.time() + 60
    with pytest.raises(LeaseLost):
        await b.open_approval(heal_id, token_hash("b"), ["test:t"], deadline)
    first, opened = await a.open_approval(heal_id, token_hash("a"), ["test:t"], deadline)
    again, reopened = await a.open_approval(heal_id, token_hash("x"), ["other"], deadline + 99)
    assert opened and not reopened and again == first
    assert [h["id"] for h in await b.list_heals(phase="awaiting_approval")] == [heal_id]
    assert [r["heal_id"] for r in await b.open_approvals()] == [heal_id]
    closed = await a.close_approval(heal_id, "expire")
    assert closed is not None and (closed["decision"], closed["via"]) == ("expire", "healer")
    assert await b.open_approvals() == []
    with pytest.raises(LeaseLost):
        await b.close_approval(heal_id, "expire")
