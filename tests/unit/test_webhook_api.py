"""The HTTP edge driven in-process: the Alertmanager webhook, manual triggers, heal
history, health and metrics, with the no-op test handler doing the "healing".

Prometheus is an unused loopback port, so every heal that acts ends ``unverified``
after the rules' tiny verify timeout (0.3 s); nothing here needs dockerd or Prometheus.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from healer.app import create_app
from healer.config import Secrets, parse_config
from healer.plugins import HandlerRegistry
from healer.store import SqliteStore
from tests.support.env import free_port
from tests.support.inproc import wait_for_heal


class Noop(Protocol):
    """The ``noop`` fixture of tests/unit/conftest.py, as these tests use it."""

    checks: list[Any]
    acts: list[Any]
    gate: asyncio.Event | None


ADMIN = "admin-s3cret"
WAIT = 5.0  # upper bound for any heal in these tests to finish


@pytest.fixture(scope="module")
def dead_port() -> int:
    """A loopback port nobody listens on: Prometheus "unreachable", answered at once."""
    return free_port()


def base_config(tmp_path: Path, port: int) -> dict[str, Any]:
    target = {"target": "{{ labels.instance }}"}
    return {
        "journal": str(tmp_path / "journal.db"),
        "shutdown_grace": "2s",
        "prometheus": {
            "url": f"http://127.0.0.1:{port}",
            "timeout": "0.5s",
            "evaluation_interval": "50ms",
        },
        "verify": {"timeout": "0.3s", "stable_for": "0s"},
        "allow": [{"kind": "test", "name": "web-*"}],
        "rules": [
            {
                "name": "poke-web",
                "match": ['alertname="WebDown"'],
                "handler": "test.noop",
                "params": target,
            },
            {
                "name": "poke-slow",
                "match": ['alertname="WebSlow"'],
                "handler": "test.noop",
                "params": target,
            },
            {
                "name": "rehearse",
                "match": ['alertname="WebRehearse"'],
                "handler": "test.noop",
                "params": target,
                "dry_run": True,
            },
            {
                "name": "explode",
                "match": 'alertname="Explode"',
                "handler": "test.noop",
                "params": {**target, "explode_in": "{{ labels.step }}"},
            },
        ],
    }


def alert(
    name: str = "WebDown",
    instance: str = "web-1",
    *,
    status: str = "firing",
    starts: str = "2024-05-01T10:00:00Z",
    **labels: str,
) -> dict[str, Any]:
    all_labels = {"alertname": name, "instance": instance, **labels}
    fingerprint = hashlib.sha256(json.dumps(all_labels, sort_keys=True).encode()).hexdigest()
    return {
        "status": status,
        "labels": all_labels,
        "annotations": {"summary": "s"},
        "startsAt": starts,
        "endsAt": "2024-05-01T10:05:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": fingerprint[:16],
    }


def group(*alerts: dict[str, Any], status: str = "firing") -> dict[str, Any]:
    return {
        "version": "4",
        "status": status,
        "receiver": "healer",
        "groupKey": "{}:{}",
        "truncatedAlerts": 0,
        "externalURL": "http://am",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "alerts": list(alerts),
    }


@dataclass
class Healer:
    app: FastAPI
    client: httpx.AsyncClient
    registry: CollectorRegistry
    noop: Noop

    @property
    def journal(self) -> SqliteStore:
        journal: SqliteStore = self.app.state.services.journal
        return journal

    async def post(self, body: Any, **kw: Any) -> httpx.Response:
        return await self.client.post("/api/v1/alerts", json=body, **kw)

    async def fire(self, *alerts: dict[str, Any]) -> list[str]:
        """Post a group and return the started heal ids."""
        resp = await self.post(group(*alerts))
        assert resp.status_code == 200, resp.text
        return [s["heal_id"] for s in resp.json()["started"]]

    async def wait(self, heal_id: str) -> dict[str, Any]:
        """The heal once it is done (bounded wait)."""
        try:
            return await wait_for_heal(self.journal, heal_id, WAIT)
        except TimeoutError as exc:
            pytest.fail(str(exc))

    async def idle(self) -> None:
        """Wait until no heal task is running."""
        deadline = time.monotonic() + WAIT
        while self.app.state.services.executor.running:
            if time.monotonic() > deadline:
                pytest.fail("heals still running")
            await asyncio.sleep(0.05)

    def heals_total(self, outcome: str, rule: str = "poke-web") -> float:
        return (
            self.registry.get_sample_value(
                "healer_heals_total", {"rule": rule, "handler": "test.noop", "outcome": outcome}
            )
            or 0.0
        )


Start = Callable[..., AbstractAsyncContextManager[Healer]]


@pytest.fixture
def start(tmp_path: Path, handlers: HandlerRegistry, noop: Noop, dead_port: int) -> Start:
    @asynccontextmanager
    async def _start(secrets: Secrets | None = None, **over: Any) -> AsyncIterator[Healer]:
        data = {**base_config(tmp_path, dead_port), **over}
        config = parse_config(data, handlers)
        registry = CollectorRegistry()
        app = create_app(config, secrets or Secrets(), handlers=handlers, registry=registry)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://healer") as client:
                healer = Healer(app, client, registry, noop)
                try:
                    yield healer
                finally:
                    await healer.idle()

    return _start


@pytest.fixture
async def healer(start: Start) -> AsyncIterator[Healer]:
    async with start() as h:
        yield h


@pytest.fixture
async def admin_healer(start: Start) -> AsyncIterator[Healer]:
    async with start(Secrets(admin_token=ADMIN)) as h:
        h.client.headers["Authorization"] = f"Bearer {ADMIN}"
        yield h


# --- health and metrics --------------------------------------------------------------


async def test_health_answers_ok(healer: Healer) -> None:
    """GET /health is liveness: always {"status": "ok"}."""
    resp = await healer.client.get("/health")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok"}


async def test_ready_names_the_dependency_that_is_down(healer: Healer) -> None:
    """/health/ready is 503 while Prometheus is unreachable and says which check failed;
    docker is not probed since no rule's handler needs it."""
    resp = await healer.client.get("/health/ready")
    assert resp.status_code == 503
    checks = resp.json()["checks"]
    assert checks["journal"] == {"status": "up"}
    assert checks["prometheus"]["status"] == "down"
    assert "docker" not in checks


async def test_metrics_expose_the_fixed_names(healer: Healer) -> None:
    """/metrics serves every metric of the spec, from the app's own registry."""
    await healer.fire(alert())
    await healer.idle()
    resp = await healer.client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    for name in (
        "healer_alerts_received_total",
        "healer_heals_total",
        "healer_heal_duration_seconds",
        "healer_time_to_recovery_seconds",
        "healer_heals_in_progress",
        "healer_circuit_open",
        "healer_webhook_requests_total",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in resp.text, name
    assert (
        'healer_heals_total{handler="test.noop",outcome="unverified",rule="poke-web"} 1.0'
        in resp.text
    )


# --- the webhook ----------------------------------------------------------------------


async def test_webhook_sorts_a_group_into_started_ignored_duplicates_resolved(
    healer: Healer,
) -> None:
    """One POST reports per alert what happened: a new matching firing alert is started,
    a non-matching one ignored, a repeated one duplicate, a resolved one resolved."""
    first = alert(instance="web-1")
    await healer.fire(first)
    body = group(
        first,
        alert("Nobody", "web-9"),
        alert(instance="web-2"),
        alert(instance="web-3", status="resolved"),
    )
    resp = await healer.post(body)
    assert resp.status_code == 200
    out = resp.json()
    assert out["accepted"] == 4
    assert [s["rule"] for s in out["started"]] == ["poke-web"]
    assert out["ignored"] == [
        {"fingerprint": body["alerts"][1]["fingerprint"], "reason": "no rule matches"}
    ]
    assert [d["fingerprint"] for d in out["duplicates"]] == [first["fingerprint"]]
    assert out["duplicates"][0]["heal_id"] is not None
    assert out["resolved"] == [{"fingerprint": body["alerts"][3]["fingerprint"]}]


async def test_concurrent_resends_start_exactly_one_heal(healer: Healer) -> None:
    """The same payload posted 20 times at once (HA peers, retries) starts one heal and
    the handler acts once."""
    body = group(alert())
    responses = await asyncio.gather(*(healer.post(body) for _ in range(20)))
    assert all(r.status_code == 200 for r in responses)
    started = [s for r in responses for s in r.json()["started"]]
    duplicates = [d for r in responses for d in r.json()["duplicates"]]
    assert len(started) == 1 and len(duplicates) == 19
    assert {d["heal_id"] for d in duplicates} == {started[0]["heal_id"]}
    await healer.wait(started[0]["heal_id"])
    assert len(healer.noop.checks) == 1 and len(healer.noop.acts) == 1


async def test_a_resend_after_a_restart_starts_nothing(start: Start) -> None:
    """Exactly-once survives a restart: the same alert posted to a new healer on the same
    journal is a duplicate, and the handler is not called again."""
    body = group(alert())
    async with start() as first:
        [heal_id] = await first.fire(alert())
        await first.wait(heal_id)
    async with start() as second:
        resp = await second.post(body)
        assert resp.json()["started"] == []
        assert resp.json()["duplicates"] == [
            {"fingerprint": body["alerts"][0]["fingerprint"], "heal_id": heal_id}
        ]
        await second.idle()
        assert len(second.noop.checks) == 1


async def test_a_new_firing_of_the_same_alert_starts_a_new_heal(healer: Healer) -> None:
    """The identity is fingerprint + startsAt: the alert firing again later is new work."""
    [first] = await healer.fire(alert())
    [second] = await healer.fire(alert(starts="2024-05-01T11:00:00Z"))
    assert first != second


async def test_resolved_alerts_never_start_a_heal(healer: Healer) -> None:
    """A resolved alert (even one matching a rule, never seen firing) does not act."""
    resp = await healer.post(group(alert(status="resolved"), status="resolved"))
    assert resp.status_code == 200
    assert resp.json()["started"] == [] and len(resp.json()["resolved"]) == 1
    await healer.idle()
    assert healer.noop.checks == []
    assert await healer.journal.list_heals() == []


async def test_resolution_is_noted_on_a_running_heal(healer: Healer) -> None:
    """A resolved notification for an alert whose heal is still running lands in that
    heal's timeline as a recovery signal."""
    healer.noop.gate = asyncio.Event()
    [heal_id] = await healer.fire(alert())
    await _until(lambda: len(healer.noop.acts) == 1)
    await healer.post(group(alert(status="resolved"), status="resolved"))
    healer.noop.gate.set()
    heal = await healer.wait(heal_id)
    assert "alert_resolved" in [e["kind"] for e in heal["timeline"]]


async def test_an_unmatched_alert_is_ignored_and_journaled(healer: Healer) -> None:
    """An alert no rule matches is answered 200, recorded in the journal as ignored, and
    starts no heal."""
    resp = await healer.post(group(alert("SomethingElse")))
    assert resp.status_code == 200
    assert resp.json()["ignored"][0]["reason"] == "no rule matches"
    assert await healer.journal.alert_counts() == {"ignored": 1}
    assert healer.noop.checks == []


async def test_alerts_received_are_counted_by_status(healer: Healer) -> None:
    """healer_alerts_received_total counts every alert of every POST by its status."""
    await healer.post(group(alert(), alert("Other"), alert(instance="web-3", status="resolved")))
    get = healer.registry.get_sample_value
    assert get("healer_alerts_received_total", {"status": "firing"}) == 2
    assert get("healer_alerts_received_total", {"status": "resolved"}) == 1


# --- auth -------------------------------------------------------------------------------


@pytest.fixture
async def token_healer(start: Start) -> AsyncIterator[Healer]:
    async with start(Secrets(webhook_token="wh-s3cret")) as h:
        yield h


async def test_the_right_bearer_token_is_accepted(token_healer: Healer) -> None:
    """Alertmanager's ``authorization`` credentials get in."""
    resp = await token_healer.post(group(alert()), headers={"Authorization": "Bearer wh-s3cret"})
    assert resp.status_code == 200
    assert len(resp.json()["started"]) == 1


async def test_basic_auth_is_accepted(start: Start) -> None:
    """Alertmanager's ``basic_auth`` works; a wrong password is 401."""
    async with start(Secrets(webhook_basic=("am", "pw"))) as h:
        assert (await h.post(group(alert()), auth=("am", "pw"))).status_code == 200
        assert (await h.post(group(alert()), auth=("am", "wrong"))).status_code == 401
        assert (await h.post(group(alert()), auth=("root", "pw"))).status_code == 401


async def test_auth_failures_are_counted(token_healer: Healer) -> None:
    """healer_webhook_requests_total counts 401s like any other answer."""
    await token_healer.post(group(alert()))
    assert (
        token_healer.registry.get_sample_value("healer_webhook_requests_total", {"code": "401"})
        == 1
    )


# --- malformed and hostile requests: tests/unit/test_hostile_input.py ---------------------


# --- journal failures ------------------------------------------------------------------


async def _set_query_only(journal: SqliteStore, on: bool) -> None:
    # Makes every write fail inside SQLite, as a full or read-only disk would.
    await journal.writer.call(lambda: journal.writer.conn().execute(f"PRAGMA query_only={int(on)}"))


async def test_an_unwritable_journal_is_503_then_recovers(healer: Healer) -> None:
    """When the alerts cannot be stored the webhook answers 503 so Alertmanager retries;
    the retry after the journal recovers is accepted and starts the heal once."""
    body = group(alert())
    await _set_query_only(healer.journal, True)
    try:
        resp = await healer.post(body)
        assert resp.status_code == 503
        assert "retry" in resp.json()["error"]
        assert healer.noop.checks == []
    finally:
        await _set_query_only(healer.journal, False)
    resp = await healer.post(body)
    assert resp.status_code == 200
    [started] = resp.json()["started"]
    await healer.wait(started["heal_id"])
    assert len(healer.noop.checks) == 1
    assert (await healer.post(body)).json()["started"] == []
    assert healer.registry.get_sample_value("healer_webhook_requests_total", {"code": "503"}) == 1


async def test_an_unwritable_journal_refuses_manual_triggers(admin_healer: Healer) -> None:
    """A manual trigger that cannot be journaled is 503 and runs nothing."""
    await _set_query_only(admin_healer.journal, True)
    try:
        resp = await admin_healer.client.post(
            "/api/v1/heals", json={"handler": "test.noop", "params": {"target": "web-1"}}
        )
    finally:
        await _set_query_only(admin_healer.journal, False)
    assert resp.status_code == 503
    await admin_healer.idle()
    assert admin_healer.noop.checks == []


# --- the heal path ----------------------------------------------------------------------


async def _until(cond: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached")
        await asyncio.sleep(0.01)


async def test_a_heal_runs_check_act_verify(healer: Healer) -> None:
    """A matching alert runs check then act with params rendered from its labels, and
    ends unverified when Prometheus cannot be reached (never recovered)."""
    [heal_id] = await healer.fire(alert(instance="web-7"))
    heal = await healer.wait(heal_id)
    assert heal["outcome"] == "unverified"
    assert heal["targets"] == ["test:web-7"]
    assert [p.target for p in healer.noop.checks] == ["web-7"]
    assert [p.target for p in healer.noop.acts] == ["web-7"]
    assert healer.heals_total("unverified") == 1
    assert healer.heals_total("recovered") == 0


async def test_the_timeline_records_every_step(healer: Healer) -> None:
    """GET /api/v1/heals/{id} shows matched, check (with evidence), act, verify_start,
    the verify samples and the outcome, in order."""
    [heal_id] = await healer.fire(alert())
    await healer.wait(heal_id)
    resp = await healer.client.get(f"/api/v1/heals/{heal_id}")
    assert resp.status_code == 200
    heal = resp.json()
    kinds = [e["kind"] for e in heal["timeline"]]
    assert kinds[:5] == ["matched", "check", "act", "verify_start", "verify_sample"]
    assert kinds[-1] == "outcome"
    assert set(kinds[4:-1]) == {"verify_sample"}
    events = {e["kind"]: e for e in heal["timeline"]}
    assert events["check"]["data"]["evidence"] == {"target": "web-1"}
    assert events["act"]["data"]["summary"] == "poked web-1"
    assert events["verify_start"]["data"]["query"].startswith(
        'ALERTS{alertname="WebDown", alertstate="firing"'
    )
    assert events["verify_sample"]["data"]["healthy"] is None
    assert events["outcome"]["data"]["outcome"] == "unverified"
    assert [e["seq"] for e in heal["timeline"]] == list(range(1, len(kinds) + 1))
    assert set(heal["durations"]) >= {"check", "act", "verify", "total"}


async def test_entries_a_handler_records_soon_land_before_the_act_result(healer: Healer) -> None:
    """What act queues with ``ctx.record_soon`` (without waiting for the disk) is on the
    timeline in the order queued, before the engine's own ``act`` entry."""
    healer.noop.notes = ["first", "second"]
    [heal_id] = await healer.fire(alert())
    await healer.wait(heal_id)
    heal = (await healer.client.get(f"/api/v1/heals/{heal_id}")).json()
    kinds = [e["kind"] for e in heal["timeline"]]
    assert kinds[:5] == ["matched", "check", "first", "second", "act"]
    assert heal["timeline"][2]["data"] == {"target": "web-1"}


async def _first_done(healer: Healer, ids: list[str]) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT
    while True:
        for heal_id in ids:
            heal = await healer.journal.get_heal(heal_id)
            if heal is not None and heal["phase"] == "done":
                return heal
        if time.monotonic() > deadline:
            pytest.fail(f"none of {ids} done after {WAIT}s")
        await asyncio.sleep(0.02)


async def test_one_target_one_action(healer: Healer) -> None:
    """Two different alerts whose params resolve to the same target at the same time: one
    acts, the other ends suppressed naming the busy target."""
    healer.noop.gate = asyncio.Event()
    ids = await healer.fire(alert("WebDown", "web-1"), alert("WebSlow", "web-1"))
    assert len(ids) == 2
    await _until(lambda: len(healer.noop.acts) == 1)
    # The act is held open: the other heal must end while the target is still busy.
    other = await _first_done(healer, ids)
    assert other["outcome"] == "suppressed"
    assert other["reason"] == "in flight: another heal is acting on test:web-1"
    healer.noop.gate.set()
    [acting] = [i for i in ids if i != other["id"]]
    assert (await healer.wait(acting))["outcome"] == "unverified"
    assert len(healer.noop.checks) == 2 and len(healer.noop.acts) == 1


async def test_different_targets_act_in_parallel(healer: Healer) -> None:
    """The lock is per target: two alerts on two targets both act."""
    healer.noop.gate = asyncio.Event()
    ids = await healer.fire(alert(instance="web-1"), alert(instance="web-2"))
    await _until(lambda: len(healer.noop.acts) == 2)
    healer.noop.gate.set()
    assert [(await healer.wait(i))["outcome"] for i in ids] == ["unverified", "unverified"]


async def test_a_dry_run_rule_never_acts(healer: Healer) -> None:
    """A dry-run rule checks, records what it would do and ends dry_run without acting."""
    [heal_id] = await healer.fire(alert("WebRehearse"))
    heal = await healer.wait(heal_id)
    assert heal["outcome"] == "dry_run"
    assert heal["reason"] == "dry run: would act on test:web-1"
    assert heal["dry_run"] is True
    assert len(healer.noop.checks) == 1 and healer.noop.acts == []
    assert "dry_run" in [e["kind"] for e in heal["timeline"]]
    assert healer.heals_total("dry_run", rule="rehearse") == 1


async def test_global_dry_run_never_acts(start: Start) -> None:
    """The top-level dry_run flag makes every rule a rehearsal."""
    async with start(dry_run=True) as h:
        [heal_id] = await h.fire(alert())
        assert (await h.wait(heal_id))["outcome"] == "dry_run"
        assert h.noop.acts == []


async def test_a_target_outside_the_allowlist_is_refused(healer: Healer) -> None:
    """A target no allowlist entry matches ends refused with the reason; act is never
    called."""
    [heal_id] = await healer.fire(alert(instance="db-1"))
    heal = await healer.wait(heal_id)
    assert heal["outcome"] == "refused"
    assert heal["reason"] == "test:db-1 is outside the allowlist"
    assert len(healer.noop.checks) == 1 and healer.noop.acts == []
    assert healer.heals_total("refused") == 1


async def test_an_empty_allowlist_refuses_everything(start: Start) -> None:
    """With no allowlist at all nothing may be acted on."""
    async with start(allow=[]) as h:
        [heal_id] = await h.fire(alert())
        heal = await h.wait(heal_id)
        assert heal["outcome"] == "refused"
        assert "allowlist is empty" in heal["reason"]


async def test_a_missing_label_refuses_the_heal(start: Start) -> None:
    """Params needing a label the alert lacks end refused; the handler is not called."""
    async with start() as h:
        body = alert()
        del body["labels"]["instance"]
        [heal_id] = await h.fire(body)
        heal = await h.wait(heal_id)
        assert heal["outcome"] == "refused"
        assert "labels.instance" in heal["reason"]
        assert h.noop.checks == []


async def test_a_raising_check_fails_the_heal_and_healer_keeps_answering(healer: Healer) -> None:
    """An exception from check ends the heal failed with the error in its reason; the
    daemon keeps serving requests and heals."""
    [heal_id] = await healer.fire(alert("Explode", step="check"))
    heal = await healer.wait(heal_id)
    assert heal["outcome"] == "failed"
    assert heal["reason"] == "check failed: RuntimeError: boom while checking web-1"
    assert healer.noop.acts == []
    assert (await healer.client.get("/health")).status_code == 200
    [next_id] = await healer.fire(alert())
    assert (await healer.wait(next_id))["outcome"] == "unverified"
    assert healer.heals_total("failed", rule="explode") == 1


async def test_a_raising_act_fails_the_heal(healer: Healer) -> None:
    """An exception from act ends the heal failed, never verified."""
    [heal_id] = await healer.fire(alert("Explode", step="act"))
    heal = await healer.wait(heal_id)
    assert heal["outcome"] == "failed"
    assert heal["reason"] == "act failed: RuntimeError: boom while acting on web-1"
    assert "verify_start" not in [e["kind"] for e in heal["timeline"]]


# --- history ------------------------------------------------------------------------------


async def test_history_filters_by_rule_outcome_and_target(healer: Healer) -> None:
    """GET /api/v1/heals filters by rule, outcome and target (what a heal acted on)."""
    ids = {}
    for name, instance in (
        ("WebDown", "web-1"),
        ("WebDown", "web-2"),
        ("WebRehearse", "web-1"),
        ("WebDown", "db-1"),
    ):
        [ids[(name, instance)]] = await healer.fire(alert(name, instance))
        await healer.wait(ids[(name, instance)])

    async def listed(**params: str) -> set[str]:
        resp = await healer.client.get("/api/v1/heals", params=params)
        assert resp.status_code == 200
        return {h["id"] for h in resp.json()["heals"]}

    assert await listed(rule="rehearse") == {ids[("WebRehearse", "web-1")]}
    assert await listed(rule="poke-web") == {
        ids[("WebDown", i)] for i in ("web-1", "web-2", "db-1")
    }
    assert await listed(outcome="refused") == {ids[("WebDown", "db-1")]}
    assert await listed(target="test:web-2") == {ids[("WebDown", "web-2")]}
    assert await listed(rule="poke-web", outcome="unverified", target="test:web-1") == {
        ids[("WebDown", "web-1")]
    }
    assert await listed(rule="nope") == set()


async def test_history_rejects_an_unknown_outcome(healer: Healer) -> None:
    """The outcome filter takes the fixed vocabulary only."""
    resp = await healer.client.get("/api/v1/heals", params={"outcome": "healed"})
    assert resp.status_code == 422


async def _all_pages(healer: Healer, limit: int) -> list[str]:
    seen: list[str] = []
    params: dict[str, Any] = {"limit": limit}
    for _ in range(20):
        page = (await healer.client.get("/api/v1/heals", params=params)).json()
        seen += [h["id"] for h in page["heals"]]
        if page["next_before"] is None:
            return seen
        params["before"] = page["next_before"]
    pytest.fail("pagination did not end")


async def test_history_paginates_newest_first(healer: Healer) -> None:
    """Pages come newest first; following next_before walks every heal exactly once."""
    ids = []
    for i in range(5):
        ids += await healer.fire(alert("WebRehearse", f"web-{i}"))
    await healer.idle()
    assert await _all_pages(healer, limit=2) == list(reversed(ids))


async def test_history_pages_keep_heals_started_by_one_post(healer: Healer) -> None:
    """Heals created by one webhook POST (same instant) are not lost between pages."""
    ids = await healer.fire(*(alert("WebRehearse", f"web-{i}") for i in range(4)))
    await healer.idle()
    assert sorted(await _all_pages(healer, limit=1)) == sorted(ids)


async def test_an_unknown_heal_is_404(healer: Healer) -> None:
    """GET /api/v1/heals/{id} for an id that does not exist is 404."""
    resp = await healer.client.get("/api/v1/heals/0123456789abcdef")
    assert resp.status_code == 404


async def test_history_needs_the_admin_token_when_one_is_set(admin_healer: Healer) -> None:
    """With an admin token configured, reading history needs it too."""
    resp = await admin_healer.client.get("/api/v1/heals", headers={"Authorization": ""})
    assert resp.status_code == 401
    assert (await admin_healer.client.get("/api/v1/heals")).status_code == 200


# --- manual triggers ----------------------------------------------------------------------


async def test_manual_triggers_are_disabled_without_an_admin_token(healer: Healer) -> None:
    """With no admin token configured, POST /api/v1/heals is 403 whatever is sent."""
    resp = await healer.client.post(
        "/api/v1/heals", json={"rule": "poke-web"}, headers={"Authorization": "Bearer anything"}
    )
    assert resp.status_code == 403
    assert "admin" in resp.json()["detail"]


async def test_a_wrong_admin_token_is_401(admin_healer: Healer) -> None:
    """A wrong (or missing) admin token is 401 and nothing runs."""
    body = {"handler": "test.noop", "params": {"target": "web-1"}}
    resp = await admin_healer.client.post(
        "/api/v1/heals", json=body, headers={"Authorization": "Bearer wrong"}
    )
    assert resp.status_code == 401
    resp = await admin_healer.client.post("/api/v1/heals", json=body, headers={"Authorization": ""})
    assert resp.status_code == 401
    assert await admin_healer.journal.list_heals() == []


async def test_the_webhook_token_is_not_an_admin_token(start: Start) -> None:
    """Manual triggers need the separate admin token: the webhook token is refused."""
    async with start(Secrets(webhook_token="wh", admin_token=ADMIN)) as h:
        resp = await h.client.post(
            "/api/v1/heals", json={"rule": "poke-web"}, headers={"Authorization": "Bearer wh"}
        )
        assert resp.status_code == 401


async def test_manual_trigger_by_rule_runs_the_heal(admin_healer: Healer) -> None:
    """A rule name plus labels its matchers accept is 202 with a url; the heal runs like
    an alert's, with params rendered from the given labels."""
    resp = await admin_healer.client.post(
        "/api/v1/heals",
        json={
            "rule": "poke-web",
            "labels": {"alertname": "WebDown", "instance": "web-4"},
            "reason": "deploy check",
        },
    )
    assert resp.status_code == 202
    accepted = resp.json()
    assert accepted["status"] == "pending"
    assert accepted["url"] == f"/api/v1/heals/{accepted['heal_id']}"
    await admin_healer.wait(accepted["heal_id"])
    heal = (await admin_healer.client.get(accepted["url"])).json()
    assert heal["source"] == "manual" and heal["rule"] == "poke-web"
    assert heal["outcome"] == "unverified"
    kinds = [e["kind"] for e in heal["timeline"]]
    assert kinds[:3] == ["manual_trigger", "note", "check"]
    assert [p.target for p in admin_healer.noop.acts] == ["web-4"]


async def test_manual_trigger_with_labels_the_rule_rejects_is_422(admin_healer: Healer) -> None:
    """Labels that the rule's matchers do not accept are refused, naming the matcher."""
    resp = await admin_healer.client.post(
        "/api/v1/heals",
        json={"rule": "poke-web", "labels": {"alertname": "WebSlow", "instance": "web-1"}},
    )
    assert resp.status_code == 422
    assert resp.json()["error"] == "labels do not match rule 'poke-web': alertname=\"WebDown\""
    assert admin_healer.noop.checks == []


async def test_manual_trigger_of_an_unknown_rule_is_404(admin_healer: Healer) -> None:
    """An unknown rule name is 404."""
    resp = await admin_healer.client.post("/api/v1/heals", json={"rule": "no-such-rule"})
    assert resp.status_code == 404
    assert "no-such-rule" in resp.json()["error"]


async def test_manual_trigger_by_handler_validates_params(admin_healer: Healer) -> None:
    """A handler plus params its model refuses is 422 naming the field; nothing runs."""
    resp = await admin_healer.client.post(
        "/api/v1/heals", json={"handler": "test.noop", "params": {"target": "; rm -rf /"}}
    )
    assert resp.status_code == 422
    assert resp.json()["error"].startswith("params: target:")
    resp = await admin_healer.client.post(
        "/api/v1/heals", json={"handler": "test.noop", "params": {"target": "web-1", "extra": 1}}
    )
    assert resp.status_code == 422
    assert await admin_healer.journal.list_heals() == []


async def test_manual_trigger_of_an_unknown_handler_is_422(admin_healer: Healer) -> None:
    """An unknown handler is refused, listing the loaded ones."""
    resp = await admin_healer.client.post("/api/v1/heals", json={"handler": "test.nope"})
    assert resp.status_code == 422
    assert "test.noop" in resp.json()["error"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"rule": "poke-web", "handler": "test.noop"},
        {"rule": "poke-web", "params": {"target": "web-1"}},
        {"rule": "poke-web", "bogus": 1},
    ],
)
async def test_manual_trigger_needs_exactly_one_of_rule_or_handler(
    admin_healer: Healer, body: dict[str, Any]
) -> None:
    """The body names a rule (+ labels) or a handler (+ params), not both, not neither."""
    resp = await admin_healer.client.post("/api/v1/heals", json=body)
    assert resp.status_code == 422


async def test_manual_trigger_by_handler_runs(admin_healer: Healer) -> None:
    """A handler trigger runs check and act; with no alert and no verify.query there is
    nothing to verify, which is unverified (never recovered)."""
    resp = await admin_healer.client.post(
        "/api/v1/heals", json={"handler": "test.noop", "params": {"target": "web-5"}}
    )
    assert resp.status_code == 202
    heal = await admin_healer.wait(resp.json()["heal_id"])
    assert heal["outcome"] == "unverified"
    assert heal["reason"].startswith("nothing to verify")
    assert [p.target for p in admin_healer.noop.acts] == ["web-5"]
    assert (
        admin_healer.registry.get_sample_value(
            "healer_heals_total",
            {"rule": "(manual)", "handler": "test.noop", "outcome": "unverified"},
        )
        == 1
    )


@pytest.mark.parametrize(
    "body",
    [
        {"rule": "poke-web", "labels": {"alertname": "WebDown", "instance": "web-1"}},
        {"handler": "test.noop", "params": {"target": "web-1"}},
    ],
)
async def test_manual_dry_run_is_honoured(admin_healer: Healer, body: dict[str, Any]) -> None:
    """``dry_run: true`` on a manual trigger checks without acting."""
    resp = await admin_healer.client.post("/api/v1/heals", json={**body, "dry_run": True})
    assert resp.status_code == 202
    heal = await admin_healer.wait(resp.json()["heal_id"])
    assert heal["outcome"] == "dry_run"
    assert len(admin_healer.noop.checks) == 1 and admin_healer.noop.acts == []
