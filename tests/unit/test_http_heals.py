"""Heal history and manual triggers (healer/http/heals.py) driven in-process: filters,
pagination, admin-token rules, triggers by rule or by handler, with the no-op test
handler doing the "healing".

Prometheus is an unused loopback port, so every heal that acts ends ``unverified``
after the rules' tiny verify timeout (0.3 s); nothing here needs dockerd or Prometheus.
"""

from __future__ import annotations

from typing import Any

import pytest

from healer.config import Secrets
from tests.support.inprocess.inproc import ADMIN, InProcessHealer, Start, set_query_only
from tests.support.inprocess.inproc import web_alert as alert


async def test_an_unwritable_journal_refuses_manual_triggers(admin_healer: InProcessHealer) -> None:
    """A manual trigger that cannot be journaled is 503 and runs nothing."""
    await set_query_only(admin_healer.journal, True)
    try:
        resp = await admin_healer.client.post(
            "/api/v1/heals", json={"handler": "test.noop", "params": {"target": "web-1"}}
        )
    finally:
        await set_query_only(admin_healer.journal, False)
    assert resp.status_code == 503
    await admin_healer.idle()
    assert admin_healer.noop.checks == []


async def test_history_filters_by_rule_outcome_and_target(healer: InProcessHealer) -> None:
    """GET /api/v1/heals filters by rule, outcome and target (what a heal acted on)."""
    ids = {}
    for name, instance in (
        ("WebDown", "web-1"),
        ("WebDown", "web-2"),
        ("WebRehearse", "web-1"),
        ("WebDown", "db-1"),
    ):
        [ids[(name, instance)]] = await healer.fire(alert(name, instance))
        await healer.wait_for_outcome(ids[(name, instance)])

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


async def test_history_rejects_an_unknown_outcome(healer: InProcessHealer) -> None:
    """The outcome filter takes the fixed vocabulary only."""
    resp = await healer.client.get("/api/v1/heals", params={"outcome": "healed"})
    assert resp.status_code == 422


async def _all_pages(healer: InProcessHealer, limit: int) -> list[str]:
    seen: list[str] = []
    params: dict[str, Any] = {"limit": limit}
    for _ in range(20):
        page = (await healer.client.get("/api/v1/heals", params=params)).json()
        seen += [h["id"] for h in page["heals"]]
        if page["next_before"] is None:
            return seen
        params["before"] = page["next_before"]
    pytest.fail("pagination did not end")


async def test_history_paginates_newest_first(healer: InProcessHealer) -> None:
    """Pages come newest first; following next_before walks every heal exactly once."""
    ids = []
    for i in range(5):
        ids += await healer.fire(alert("WebRehearse", f"web-{i}"))
    await healer.idle()
    assert await _all_pages(healer, limit=2) == list(reversed(ids))


async def test_history_pages_keep_heals_started_by_one_post(healer: InProcessHealer) -> None:
    """Heals created by one webhook POST (same instant) are not lost between pages."""
    ids = await healer.fire(*(alert("WebRehearse", f"web-{i}") for i in range(4)))
    await healer.idle()
    assert sorted(await _all_pages(healer, limit=1)) == sorted(ids)


async def test_an_unknown_heal_is_404(healer: InProcessHealer) -> None:
    """GET /api/v1/heals/{id} for an id that does not exist is 404."""
    resp = await healer.client.get("/api/v1/heals/0123456789abcdef")
    assert resp.status_code == 404


async def test_history_needs_the_admin_token_when_one_is_set(admin_healer: InProcessHealer) -> None:
    """With an admin token configured, reading history needs it too."""
    resp = await admin_healer.client.get("/api/v1/heals", headers={"Authorization": ""})
    assert resp.status_code == 401
    assert (await admin_healer.client.get("/api/v1/heals")).status_code == 200


# --- manual triggers ----------------------------------------------------------------------


async def test_manual_triggers_are_disabled_without_an_admin_token(healer: InProcessHealer) -> None:
    """With no admin token configured, POST /api/v1/heals is 403 whatever is sent."""
    resp = await healer.client.post(
        "/api/v1/heals", json={"rule": "poke-web"}, headers={"Authorization": "Bearer anything"}
    )
    assert resp.status_code == 403
    assert "admin" in resp.json()["detail"]


async def test_a_wrong_admin_token_is_401(admin_healer: InProcessHealer) -> None:
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


async def test_manual_trigger_by_rule_runs_the_heal(admin_healer: InProcessHealer) -> None:
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
    await admin_healer.wait_for_outcome(accepted["heal_id"])
    heal = (await admin_healer.client.get(accepted["url"])).json()
    assert heal["source"] == "manual" and heal["rule"] == "poke-web"
    assert heal["outcome"] == "unverified"
    kinds = [e["kind"] for e in heal["timeline"]]
    assert kinds[:3] == ["manual_trigger", "note", "check"]
    assert [p.target for p in admin_healer.noop.acts] == ["web-4"]


async def test_manual_trigger_with_labels_the_rule_rejects_is_422(
    admin_healer: InProcessHealer,
) -> None:
    """Labels that the rule's matchers do not accept are refused, naming the matcher."""
    resp = await admin_healer.client.post(
        "/api/v1/heals",
        json={"rule": "poke-web", "labels": {"alertname": "WebSlow", "instance": "web-1"}},
    )
    assert resp.status_code == 422
    assert resp.json()["error"] == "labels do not match rule 'poke-web': alertname=\"WebDown\""
    assert admin_healer.noop.checks == []


async def test_manual_trigger_of_an_unknown_rule_is_404(admin_healer: InProcessHealer) -> None:
    """An unknown rule name is 404."""
    resp = await admin_healer.client.post("/api/v1/heals", json={"rule": "no-such-rule"})
    assert resp.status_code == 404
    assert "no-such-rule" in resp.json()["error"]


async def test_manual_trigger_by_handler_validates_params(admin_healer: InProcessHealer) -> None:
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


async def test_manual_trigger_of_an_unknown_handler_is_422(admin_healer: InProcessHealer) -> None:
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
    admin_healer: InProcessHealer, body: dict[str, Any]
) -> None:
    """The body names a rule (+ labels) or a handler (+ params), not both, not neither."""
    resp = await admin_healer.client.post("/api/v1/heals", json=body)
    assert resp.status_code == 422


async def test_manual_trigger_by_handler_runs(admin_healer: InProcessHealer) -> None:
    """A handler trigger runs check and act; with no alert and no verify.query there is
    nothing to verify, which is unverified (never recovered)."""
    resp = await admin_healer.client.post(
        "/api/v1/heals", json={"handler": "test.noop", "params": {"target": "web-5"}}
    )
    assert resp.status_code == 202
    heal = await admin_healer.wait_for_outcome(resp.json()["heal_id"])
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
async def test_manual_dry_run_is_honoured(
    admin_healer: InProcessHealer, body: dict[str, Any]
) -> None:
    """``dry_run: true`` on a manual trigger checks without acting."""
    resp = await admin_healer.client.post("/api/v1/heals", json={**body, "dry_run": True})
    assert resp.status_code == 202
    heal = await admin_healer.wait_for_outcome(resp.json()["heal_id"])
    assert heal["outcome"] == "dry_run"
    assert len(admin_healer.noop.checks) == 1 and admin_healer.noop.acts == []
