"""The Alertmanager webhook (healer/http/receiver.py) driven in-process: what one POST
starts, ignores, deduplicates or resolves, exactly once across resends and restarts, and
503 while the journal cannot store the alerts; the no-op test handler does the "healing".

Prometheus is an unused loopback port, so every heal that acts ends ``unverified``
after the rules' tiny verify timeout (0.3 s); nothing here needs dockerd or Prometheus.
"""

from __future__ import annotations

import asyncio

from tests.support.inprocess.gates import until
from tests.support.inprocess.inproc import InProcessHealer, Start, set_query_only
from tests.support.inprocess.inproc import web_alert as alert
from tests.support.inprocess.payloads import payload as group
from tests.support.inprocess.stores import alert_log_counts


async def test_webhook_sorts_a_group_into_started_ignored_duplicates_resolved(
    healer: InProcessHealer,
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


async def test_concurrent_resends_start_exactly_one_heal(healer: InProcessHealer) -> None:
    """The same payload posted 20 times at once (HA peers, retries) starts one heal and
    the handler acts once."""
    body = group(alert())
    responses = await asyncio.gather(*(healer.post(body) for _ in range(20)))
    assert all(r.status_code == 200 for r in responses)
    started = [s for r in responses for s in r.json()["started"]]
    duplicates = [d for r in responses for d in r.json()["duplicates"]]
    assert len(started) == 1 and len(duplicates) == 19
    assert {d["heal_id"] for d in duplicates} == {started[0]["heal_id"]}
    await healer.wait_for_outcome(started[0]["heal_id"])
    assert len(healer.noop.checks) == 1 and len(healer.noop.acts) == 1


async def test_a_resend_after_a_restart_starts_nothing(start: Start) -> None:
    """Exactly-once survives a restart: the same alert posted to a new healer on the same
    journal is a duplicate, and the handler is not called again."""
    body = group(alert())
    async with start() as first:
        [heal_id] = await first.fire(alert())
        await first.wait_for_outcome(heal_id)
    async with start() as second:
        resp = await second.post(body)
        assert resp.json()["started"] == []
        assert resp.json()["duplicates"] == [
            {"fingerprint": body["alerts"][0]["fingerprint"], "heal_id": heal_id}
        ]
        await second.idle()
        assert len(second.noop.checks) == 1


async def test_a_new_firing_of_the_same_alert_starts_a_new_heal(healer: InProcessHealer) -> None:
    """The identity is fingerprint + startsAt: the alert firing again later is new work."""
    [first] = await healer.fire(alert())
    [second] = await healer.fire(alert(starts="2024-05-01T11:00:00Z"))
    assert first != second


async def test_resolved_alerts_never_start_a_heal(healer: InProcessHealer) -> None:
    """A resolved alert (even one matching a rule, never seen firing) does not act."""
    resp = await healer.post(group(alert(status="resolved"), status="resolved"))
    assert resp.status_code == 200
    assert resp.json()["started"] == [] and len(resp.json()["resolved"]) == 1
    await healer.idle()
    assert healer.noop.checks == []
    assert await healer.journal.list_heals() == []


async def test_resolution_is_noted_on_a_running_heal(healer: InProcessHealer) -> None:
    """A resolved notification for an alert whose heal is still running lands in that
    heal's timeline as a recovery signal."""
    healer.noop.gate = asyncio.Event()
    [heal_id] = await healer.fire(alert())
    await until(lambda: len(healer.noop.acts) == 1)
    await healer.post(group(alert(status="resolved"), status="resolved"))
    healer.noop.gate.set()
    heal = await healer.wait_for_outcome(heal_id)
    assert "alert_resolved" in [e["kind"] for e in heal["timeline"]]


async def test_an_unmatched_alert_is_ignored_and_journaled(healer: InProcessHealer) -> None:
    """An alert no rule matches is answered 200, recorded in the journal as ignored (in
    its delivery's body, with no row of its own), and starts no heal."""
    resp = await healer.post(group(alert("SomethingElse")))
    assert resp.status_code == 200
    assert resp.json()["ignored"][0]["reason"] == "no rule matches"
    assert await healer.journal.alert_counts() == {}
    assert await alert_log_counts(healer.journal) == {"ignored": 1}
    assert healer.noop.checks == []


async def test_alerts_received_are_counted_by_status(healer: InProcessHealer) -> None:
    """healer_alerts_received_total counts every alert of every POST by its status."""
    await healer.post(group(alert(), alert("Other"), alert(instance="web-3", status="resolved")))
    get = healer.registry.get_sample_value
    assert get("healer_alerts_received_total", {"status": "firing"}) == 2
    assert get("healer_alerts_received_total", {"status": "resolved"}) == 1


async def test_an_unwritable_journal_is_503_then_recovers(healer: InProcessHealer) -> None:
    """When the alerts cannot be stored the webhook answers 503 so Alertmanager retries;
    the retry after the journal recovers is accepted and starts the heal once."""
    body = group(alert())
    await set_query_only(healer.journal, True)
    try:
        resp = await healer.post(body)
        assert resp.status_code == 503
        assert "retry" in resp.json()["error"]
        assert healer.noop.checks == []
    finally:
        await set_query_only(healer.journal, False)
    resp = await healer.post(body)
    assert resp.status_code == 200
    [started] = resp.json()["started"]
    await healer.wait_for_outcome(started["heal_id"])
    assert len(healer.noop.checks) == 1
    assert (await healer.post(body)).json()["started"] == []
    assert healer.registry.get_sample_value("healer_webhook_requests_total", {"code": "503"}) == 1
