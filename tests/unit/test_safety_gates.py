"""The safety gates in-process, on the real journal: cooldown, budget and circuit with a
single escalation, closing circuits (API, quiet period), pause, dry-run and the global
concurrency cap. Notifications go to a real HTTP server on 127.0.0.1 (WebhookRecorder).

Prometheus is a dead port, so every heal that acts ends ``unverified``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from bench.noop import Noop, NoopParams
from healer.api import ActResult, CheckResult, HealContext
from healer.plugins import HandlerRegistry
from tests.support.inprocess.gates import (
    ADMIN,
    fire,
    fire_and_wait,
    gates_config,
    kinds,
    until,
    webhook_notifier,
    with_notify,
)
from tests.support.inprocess.inproc import InProcessHealer, running_healer
from tests.support.inprocess.noop import NoopForTests
from tests.support.servers.webhook import WebhookRecorder


def open_gauge(h: InProcessHealer, rule: str = "poke") -> float | None:
    return h.sample("healer_circuit_open", {"rule": rule})


# ---- cooldown ---------------------------------------------------------------------------


async def test_cooldown_suppresses_the_second_action(
    tmp_path: Path, handlers: HandlerRegistry, noop: Noop
) -> None:
    """After the rule acted on a target, a new alert for the same rule and target within
    the cooldown ends suppressed with "cooldown (... left)"; act ran once."""
    async with running_healer(
        gates_config(tmp_path, safety={"cooldown": "1h"}), handlers=handlers
    ) as h:
        first = await fire_and_wait(h, "t1", n=0)
        second = await fire_and_wait(h, "t1", n=1)
    assert first["outcome"] == "unverified"
    assert second["outcome"] == "suppressed"
    assert second["reason"].startswith("cooldown (")
    assert " left): poke acted on test:t1 less than 1h ago" in second["reason"]
    assert len(noop.acts) == 1


async def test_cooldown_is_per_rule_and_target(
    tmp_path: Path, handlers: HandlerRegistry, noop: Noop
) -> None:
    """The cooldown of (poke, t1) stops neither poke on t2 nor another rule on t1."""
    async with running_healer(
        gates_config(tmp_path, safety={"cooldown": "1h"}), handlers=handlers
    ) as h:
        await fire_and_wait(h, "t1", n=0)
        other_target = await fire_and_wait(h, "t2", n=0)
        other_rule = await fire_and_wait(h, "t1", n=0, name="Poke2")
    assert other_target["outcome"] == "unverified"
    assert other_rule["outcome"] == "unverified"
    assert len(noop.acts) == 3


async def test_a_rule_cooldown_overrides_the_default(
    tmp_path: Path, handlers: HandlerRegistry, noop: Noop
) -> None:
    """A rule's own ``cooldown: 0s`` wins over ``safety.cooldown``; the other rule keeps
    the default."""
    config = gates_config(tmp_path, safety={"cooldown": "1h"}, rule={"cooldown": "0s"})
    async with running_healer(config, handlers=handlers) as h:
        outcomes = [(await fire_and_wait(h, "t1", n=i))["outcome"] for i in range(2)]
        outcomes += [(await fire_and_wait(h, "t1", n=i, name="Poke2"))["outcome"] for i in range(2)]
    assert outcomes == ["unverified", "unverified", "unverified", "suppressed"]


async def test_the_cooldown_ends(tmp_path: Path, handlers: HandlerRegistry, noop: Noop) -> None:
    """Once the cooldown has passed, the rule acts on the target again."""
    async with running_healer(
        gates_config(tmp_path, safety={"cooldown": "300ms"}), handlers=handlers
    ) as h:
        await fire_and_wait(h, "t1", n=0)
        await asyncio.sleep(0.4)
        again = await fire_and_wait(h, "t1", n=1)
    assert again["outcome"] == "unverified"
    assert len(noop.acts) == 2


# ---- budget, circuit, escalation ---------------------------------------------------------


def budget_config(tmp_path: Path, *notifiers: dict[str, Any], **safety: Any) -> dict[str, Any]:
    return gates_config(
        tmp_path,
        safety={"budget": {"max_actions": 2, "window": "1h"}, **safety},
        notify=list(notifiers) or [webhook_notifier()],
    )


async def spend_budget(h: InProcessHealer) -> dict[str, Any]:
    """Two actions, then the third alert: returns that third heal."""
    for n in range(2):
        assert (await fire_and_wait(h, "t1", n=n))["outcome"] == "unverified"
    return await fire_and_wait(h, "t1", n=2)


async def test_a_spent_budget_opens_the_circuit_and_escalates_once(
    tmp_path: Path, handlers: HandlerRegistry, noop: Noop, webhook_recorder: WebhookRecorder
) -> None:
    """max_actions=2: the third alert finds the budget spent, opens the circuit and ends
    escalated after one notification; the six alerts after it end suppressed "circuit open"
    and notify nobody; the gauge is 1 for the rule; act ran twice."""
    url = f"{webhook_recorder.url}/hook"
    async with running_healer(
        budget_config(tmp_path), handlers=handlers, secrets=with_notify(url)
    ) as h:
        assert open_gauge(h) == 0
        third = await spend_budget(h)
        later = [await fire_and_wait(h, "t1", n=n) for n in range(3, 9)]
        gauge = open_gauge(h)
        circuits = (await h.client.get("/api/v1/circuits", headers=h.admin_headers)).json()
    assert third["outcome"] == "escalated"
    assert third["reason"] == (
        "budget spent: 2 actions by poke on test:t1 within the last 1h "
        "(max 2): circuit opened, escalated (1/1 notifiers reached)"
    )
    assert {"circuit_open", "escalation"} <= set(kinds(third))
    [delivery] = [e["data"] for e in third["timeline"] if e["kind"] == "escalation"]
    assert delivery == {
        "notifier": "webhook[0]",
        "kind": "webhook",
        "ok": True,
        "attempts": 1,
        "status": 200,
        "error": None,
    }
    assert [heal["outcome"] for heal in later] == ["suppressed"] * 6
    assert all(heal["reason"].startswith("circuit open: poke on test:t1") for heal in later)
    assert len(webhook_recorder.snapshot()) == 1
    assert gauge == 1
    assert len(noop.acts) == 2
    [circuit] = circuits["circuits"]
    assert (circuit["rule"], circuit["target"], circuit["state"]) == ("poke", "test:t1", "open")
    assert circuit["escalated_by"] == third["id"] and circuit["suppressed"] == 6
    assert circuit["escalation"][0]["ok"] is True


async def test_the_escalation_tells_what_happened(
    tmp_path: Path, handlers: HandlerRegistry, webhook_recorder: WebhookRecorder
) -> None:
    """Mattermost gets {"text"}, Slack {"text", "blocks"}, the generic webhook the circuit
    as JSON; each names the rule, the target, the heal and how to close the circuit."""
    notifiers = [
        webhook_notifier(kind="mattermost"),
        webhook_notifier(kind="slack"),
        webhook_notifier(name="pager"),
    ]
    urls = [f"{webhook_recorder.url}/{p}" for p in ("mm", "slack", "hook")]
    async with running_healer(
        budget_config(tmp_path, *notifiers), handlers=handlers, secrets=with_notify(*urls)
    ) as h:
        third = await spend_budget(h)
    by_path = {r.path: r.body for r in webhook_recorder.snapshot()}
    assert set(by_path["/mm"]) == {"text"}
    assert set(by_path["/slack"]) == {"text", "blocks"}
    assert by_path["/slack"]["blocks"][0]["text"]["type"] == "mrkdwn"
    for text in (by_path["/mm"]["text"], by_path["/slack"]["text"]):
        assert "circuit open for rule `poke` on `test:t1`" in text
        assert third["id"] in text
        assert "healer circuit-close poke --target test:t1" in text
    hook = by_path["/hook"]
    assert hook["event"] == "circuit_open"
    assert (hook["rule"], hook["target"], hook["heal_id"]) == ("poke", "test:t1", third["id"])
    assert hook["labels"] == {"alertname": "Poke", "target": "t1"}
    assert [e["data"]["notifier"] for e in third["timeline"] if e["kind"] == "escalation"] == [
        "mattermost[0]",
        "slack[1]",
        "pager",
    ]


async def test_the_budget_is_per_target(
    tmp_path: Path, handlers: HandlerRegistry, noop: Noop, webhook_recorder: WebhookRecorder
) -> None:
    """The circuit of (poke, t1) leaves t2 and the other rule free to act."""
    async with running_healer(
        budget_config(tmp_path), handlers=handlers, secrets=with_notify(webhook_recorder.url)
    ) as h:
        await spend_budget(h)
        assert (await fire_and_wait(h, "t2", n=0))["outcome"] == "unverified"
        assert (await fire_and_wait(h, "t1", n=0, name="Poke2"))["outcome"] == "unverified"
        assert open_gauge(h, "poke2") == 0


async def test_closing_the_circuit_through_the_api_resumes_healing(
    tmp_path: Path, handlers: HandlerRegistry, noop: Noop, webhook_recorder: WebhookRecorder
) -> None:
    """DELETE /api/v1/circuits/{rule}?target= (admin token) closes the circuit, the gauge
    drops to 0 and the next alert acts with a fresh budget; closing again is 404."""
    async with running_healer(
        budget_config(tmp_path), handlers=handlers, secrets=with_notify(webhook_recorder.url)
    ) as h:
        await spend_budget(h)
        path = "/api/v1/circuits/poke"
        assert (await h.client.delete(path, params={"target": "test:t1"})).status_code == 401
        resp = await h.client.delete(path, params={"target": "test:t1"}, headers=h.admin_headers)
        assert resp.status_code == 200
        [closed] = resp.json()["closed"]
        assert (closed["state"], closed["closed_by"]) == ("closed", "api")
        assert open_gauge(h) == 0
        after = [(await fire_and_wait(h, "t1", n=n))["outcome"] for n in range(3, 6)]
        again = await h.client.delete(path, headers=h.admin_headers)
        listed = (
            await h.client.get("/api/v1/circuits", params={"all": "true"}, headers=h.admin_headers)
        ).json()["circuits"]
    assert after == ["unverified", "unverified", "escalated"]
    assert again.status_code == 200  # the budget was spent again: a new circuit
    assert len(webhook_recorder.snapshot()) == 2
    assert [c["state"] for c in listed] == ["closed"]


async def test_closing_a_circuit_that_is_not_open_is_404(
    tmp_path: Path, handlers: HandlerRegistry
) -> None:
    """Nothing open for the rule (or the target): 404 naming it."""
    async with running_healer(gates_config(tmp_path), handlers=handlers) as h:
        resp = await h.client.delete(
            "/api/v1/circuits/poke", params={"target": "test:x"}, headers=h.admin_headers
        )
    assert resp.status_code == 404
    assert resp.json()["error"] == "no open circuit for rule 'poke' on test:x"


async def test_a_circuit_closes_after_the_quiet_period(
    tmp_path: Path, handlers: HandlerRegistry, noop: Noop, webhook_recorder: WebhookRecorder
) -> None:
    """With no new alert for ``circuit_quiet``, the circuit closes by itself: the gauge
    returns to 0 without any alert, the circuit is listed closed by "quiet period", and
    the rule acts again."""
    async with running_healer(
        budget_config(tmp_path, circuit_quiet="500ms"),
        handlers=handlers,
        secrets=with_notify(webhook_recorder.url),
    ) as h:
        assert (await spend_budget(h))["outcome"] == "escalated"
        await until(lambda: open_gauge(h) == 0, what="the quiet period to close the circuit")
        listed = (
            await h.client.get("/api/v1/circuits", params={"all": "true"}, headers=h.admin_headers)
        ).json()["circuits"]
        assert (await fire_and_wait(h, "t1", n=3))["outcome"] == "unverified"
    assert [(c["state"], c["closed_by"]) for c in listed] == [("closed", "quiet period")]


async def test_alerts_meeting_an_open_circuit_keep_it_open(
    tmp_path: Path, handlers: HandlerRegistry, webhook_recorder: WebhookRecorder
) -> None:
    """The quiet period counts from the last alert that met the circuit, not from when it
    opened: each suppressed alert pushes the close back."""
    async with running_healer(
        budget_config(tmp_path), handlers=handlers, secrets=with_notify(webhook_recorder.url)
    ) as h:
        await spend_budget(h)
        before = (await h.client.get("/api/v1/circuits", headers=h.admin_headers)).json()
        await asyncio.sleep(0.05)
        assert (await fire_and_wait(h, "t1", n=3))["outcome"] == "suppressed"
        after = (await h.client.get("/api/v1/circuits", headers=h.admin_headers)).json()
    assert after["circuits"][0]["closes_at"] > before["circuits"][0]["closes_at"]


# ---- dry-run -------------------------------------------------------------------------------


async def test_dry_run_heals_spend_no_budget_and_start_no_cooldown(
    tmp_path: Path, handlers: HandlerRegistry, noop: Noop
) -> None:
    """Five dry-run heals of a rule with a 1h cooldown and a budget of 1 all end dry_run;
    the first real alert still acts, and the next one meets the cooldown."""
    config = gates_config(
        tmp_path, safety={"cooldown": "1h", "budget": {"max_actions": 1, "window": "1h"}}
    )
    body = {"rule": "poke", "labels": {"alertname": "Poke", "target": "t1"}, "dry_run": True}
    async with running_healer(config, handlers=handlers) as h:
        for _ in range(5):
            resp = await h.client.post("/api/v1/heals", json=body, headers=h.admin_headers)
            assert (await h.wait_for_outcome(resp.json()["heal_id"]))["outcome"] == "dry_run"
        real = await fire_and_wait(h, "t1", n=0)
        next_one = await fire_and_wait(h, "t1", n=1)
    assert real["outcome"] == "unverified"
    assert next_one["reason"].startswith("cooldown (")
    assert len(noop.acts) == 1


# ---- pause ---------------------------------------------------------------------------------


async def test_paused_heals_are_suppressed_and_alerts_still_journaled(
    tmp_path: Path, handlers: HandlerRegistry, noop: Noop
) -> None:
    """While paused, a matching alert is journaled and its heal ends suppressed "paused:
    <reason>" without even checking; after DELETE /api/v1/pause healing resumes."""
    async with running_healer(gates_config(tmp_path), handlers=handlers) as h:
        resp = await h.client.post(
            "/api/v1/pause", json={"for": "30m", "reason": "deploy"}, headers=h.admin_headers
        )
        assert resp.status_code == 200
        assert resp.json()["paused"] is True and resp.json()["reason"] == "deploy"
        paused = await fire_and_wait(h, "t1", n=0)
        state = (await h.client.get("/api/v1/pause", headers=h.admin_headers)).json()
        counts = await h.services.journal.alert_counts()
        resumed = await h.client.delete("/api/v1/pause", headers=h.admin_headers)
        after = await fire_and_wait(h, "t1", n=1)
        state_after = (await h.client.get("/api/v1/pause", headers=h.admin_headers)).json()
    assert paused["outcome"] == "suppressed"
    assert paused["reason"].startswith("paused: deploy (until ")
    assert "check" not in kinds(paused)
    assert noop.checks[0].target == "t1" and len(noop.checks) == 1  # only the later heal
    assert state["paused"] is True and state["left_seconds"] > 0
    assert counts == {"started": 1}
    assert resumed.json()["was"]["reason"] == "deploy"
    assert after["outcome"] == "unverified"
    assert state_after == {"paused": False}


async def test_a_pause_expires_by_itself(
    tmp_path: Path, handlers: HandlerRegistry, noop: Noop
) -> None:
    """A pause ends when its duration has passed; heals act again."""
    async with running_healer(gates_config(tmp_path), handlers=handlers) as h:
        await h.client.post("/api/v1/pause", json={"for": "300ms"}, headers=h.admin_headers)

        async def unpaused() -> bool:
            resp = await h.client.get("/api/v1/pause", headers=h.admin_headers)
            return resp.json()["paused"] is False

        await until(unpaused, what="the pause to expire")
        assert (await fire_and_wait(h, "t1"))["outcome"] == "unverified"


async def test_a_pause_needs_a_bounded_duration_and_the_admin_token(
    tmp_path: Path, handlers: HandlerRegistry
) -> None:
    """No duration, zero, a non-duration or more than safety.max_pause is 422; no token 401."""
    config = gates_config(tmp_path, safety={"max_pause": "2h"})
    async with running_healer(config, handlers=handlers) as h:

        async def post(body: Any, **kw: Any) -> int:
            resp = await h.client.post("/api/v1/pause", json=body, **kw)
            return resp.status_code

        codes = [
            await post(b, headers=h.admin_headers)
            for b in (
                {"reason": "x"},
                {"for": "0s"},
                {"for": "soon"},
                {"for": "3h"},
                {"for": "1h", "x": 1},
            )
        ]
        assert codes == [422] * 5
        assert await post({"for": "1h"}) == 401
        assert await post({"for": "2h"}, headers=h.admin_headers) == 200
        assert (await h.client.delete("/api/v1/pause")).status_code == 401


async def test_a_manual_heal_by_handler_meets_only_the_pause(
    tmp_path: Path, handlers: HandlerRegistry, noop: Noop
) -> None:
    """A manual trigger by handler has no rule: no cooldown or budget, but a pause holds."""
    config = gates_config(
        tmp_path, safety={"cooldown": "1h", "budget": {"max_actions": 1, "window": "1h"}}
    )
    body = {"handler": "test.noop", "params": {"target": "t1"}}
    async with running_healer(config, handlers=handlers) as h:
        outcomes = []
        for _ in range(3):
            resp = await h.client.post("/api/v1/heals", json=body, headers=h.admin_headers)
            outcomes.append((await h.wait_for_outcome(resp.json()["heal_id"]))["outcome"])
        await h.client.post("/api/v1/pause", json={"for": "1h"}, headers=h.admin_headers)
        resp = await h.client.post("/api/v1/heals", json=body, headers=h.admin_headers)
        paused = await h.wait_for_outcome(resp.json()["heal_id"])
    assert outcomes == ["unverified"] * 3
    assert paused["reason"].startswith("paused: no reason given")


# ---- concurrency cap ---------------------------------------------------------------------


class Counting(NoopForTests):
    """test.noop that counts heals between the start of check and the end of act."""

    def __init__(self) -> None:
        super().__init__(record=True)
        self.active = 0
        self.peak = 0

    async def check(self, ctx: HealContext, params: NoopParams) -> CheckResult:
        self.active += 1
        self.peak = max(self.peak, self.active)
        return await super().check(ctx, params)

    async def act(self, ctx: HealContext, params: NoopParams, check: CheckResult) -> ActResult:
        try:
            return await super().act(ctx, params, check)
        finally:
            self.active -= 1


async def test_never_more_heals_at_once_than_max_concurrent_heals(tmp_path: Path) -> None:
    """Eight alerts on eight targets with max_concurrent_heals=2: while two acts are held
    open no third heal even checks, and over the whole run never more than two are between
    check and the end of act."""
    counting = Counting()
    counting.gate = asyncio.Event()
    handlers = HandlerRegistry.from_entry_points(("test.noop", counting))
    config = gates_config(tmp_path, max_concurrent_heals=2)
    async with running_healer(config, handlers=handlers) as h:
        ids = [await fire(h, f"t{i}") for i in range(8)]
        await until(lambda: len(counting.acts) == 2, what="two acts")
        await asyncio.sleep(0.3)  # room for a third heal to (wrongly) start
        held = (len(counting.checks), h.sample("healer_heals_in_progress"))
        counting.gate.set()
        outcomes = [(await h.wait_for_outcome(str(i), timeout=15))["outcome"] for i in ids]
    assert held == (2, 2.0)
    assert outcomes == ["unverified"] * 8
    assert counting.peak == 2


async def test_the_admin_token_guards_circuits(tmp_path: Path, handlers: HandlerRegistry) -> None:
    """Listing circuits needs the admin token when one is set."""
    async with running_healer(gates_config(tmp_path), handlers=handlers) as h:
        assert (await h.client.get("/api/v1/circuits")).status_code == 401
        resp = await h.client.get("/api/v1/circuits", headers={"Authorization": f"Bearer {ADMIN}"})
        assert resp.json() == {"circuits": []}
