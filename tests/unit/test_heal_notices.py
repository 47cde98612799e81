"""Heal notices (healer/notices.py): every told event of a heal reaches the notifiers in
their own formats (Mattermost attachments, Slack blocks, webhook JSON), approval requests
carry the buttons each chat platform calls back with, a storm on one rule is grouped
into summaries (all counted), delivery failures are retried and journaled but never touch
the heal, and an alert that keeps firing after ``not_recovered`` is told once.

In-process healer on the real journal and executor; notifiers post to real HTTP servers on
127.0.0.1 (WebhookRecorder); Prometheus is a stand-in where a heal must verify.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from healer.approvals import decide
from healer.config import parse_config
from healer.metrics import Metrics
from healer.notices import (
    ApprovalRequest,
    HealNotice,
    HealNotices,
    _Group,
    evidence_lines,
    render,
    render_summary,
    summary_text,
    tells,
)
from healer.notify import Notifiers
from healer.plugins import HandlerRegistry
from tests.support.inprocess.gates import (
    BASE,
    fingerprint,
    fire,
    gates_config,
    kinds,
    until,
    webhook_notifier,
    with_notify,
)
from tests.support.inprocess.inproc import InProcessHealer, running_healer
from tests.support.inprocess.payloads import alert_payload
from tests.support.servers.prometheus_standin import StillFiring
from tests.support.servers.webhook import WebhookRecorder

PUBLIC = "https://healer.example.org"


@pytest.fixture
def prom() -> Iterator[StillFiring]:
    with StillFiring() as standin:
        yield standin


def three_notifiers(**over: Any) -> list[dict[str, Any]]:
    """Mattermost, Slack and webhook notifiers (URLs: the recorder's /mm, /slack, /hook)."""
    return [webhook_notifier(kind=k, name=k, **over) for k in ("mattermost", "slack", "webhook")]


def three_urls(recorder: WebhookRecorder) -> tuple[str, str, str]:
    return (f"{recorder.url}/mm", f"{recorder.url}/slack", f"{recorder.url}/hook")


def notices_config(
    tmp_path: Path,
    *,
    notify_on: list[str],
    notify: list[dict[str, Any]],
    prom: StillFiring | None = None,
    group: dict[str, Any] | None = None,
    rule: dict[str, Any] | None = None,
) -> dict[str, Any]:
    config = gates_config(tmp_path, rule=rule, notify=notify, public_url=PUBLIC)
    config["notifications"] = {"notify_on": notify_on, "group": group or {}}
    if prom is not None:
        config["prometheus"] = {"url": prom.url, "timeout": "2s"}
        config["rules"][0]["verify"] = {"stable_for": "0s", "timeout": "0.3s", "interval": "0.05s"}
    return config


@asynccontextmanager
async def telling(
    config: dict[str, Any], handlers: HandlerRegistry, *urls: str
) -> AsyncIterator[InProcessHealer]:
    """healer running ``config`` with notifier URLs ``urls``."""
    async with running_healer(config, handlers=handlers, secrets=with_notify(*urls)) as h:
        yield h


async def ended(h: InProcessHealer, *targets: str, timeout: float = 15) -> list[dict[str, Any]]:
    """Fire the alert on each target (rule ``poke``), then wait for every heal's end."""
    ids = [await fire(h, target) for target in targets]
    return [await h.wait_for_outcome(i or "", timeout=timeout) for i in ids]


def at(recorder: WebhookRecorder, path: str) -> list[Any]:
    return [r.body for r in recorder.snapshot() if r.path == path]


def notice(event: str, **over: Any) -> HealNotice:
    base: dict[str, Any] = {
        "event": event,
        "heal_id": "h-1",
        "rule": "db",
        "handler": "docker.restart",
        "alertname": "DbDown",
        "labels": {"alertname": "DbDown", "instance": "db-1"},
        "evidence": {"status": "exited", "exit_code": 137},
        "targets": ["docker:db-1"],
    }
    return HealNotice(**(base | over))


async def notify_entries(h: InProcessHealer, heal_id: str, count: int) -> list[dict[str, Any]]:
    """The heal's ``notify`` timeline entries once there are ``count`` (bounded wait)."""
    found: list[dict[str, Any]] = []

    async def enough() -> bool:
        heal = await h.journal.get_heal(heal_id) or {"timeline": []}
        found[:] = [e["data"] for e in heal["timeline"] if e["kind"] == "notify"]
        return len(found) >= count

    await until(enough, what=f"{count} notify entries")
    return found


# ---- which events are told ------------------------------------------------------------------


def test_rule_notify_on_overrides_the_default_and_approval_events_are_always_told(
    tmp_path: Path, handlers: HandlerRegistry
) -> None:
    """``notify_on`` of a rule wins over ``notifications.notify_on``; a rule without one
    takes the default; approval requests and their ends are told whatever the lists say,
    ``suggested`` always for ``mode: suggest``; a rule's ``no_action`` only in approve mode;
    ``expired`` never (the heal's approval_expired escalation tells it)."""
    raw = notices_config(tmp_path, notify_on=["failed"], notify=[], rule={"notify_on": ["acted"]})
    raw["rules"].append({**raw["rules"][0], "name": "ask", "mode": "approve", "notify_on": []})
    raw["rules"].append({**raw["rules"][0], "name": "tell", "mode": "suggest", "notify_on": []})
    config = parse_config(raw, handlers)
    assert [e for e in ("acted", "failed") if tells(config, "poke", e)] == ["acted"]
    assert [e for e in ("acted", "failed") if tells(config, "poke2", e)] == ["failed"]
    assert tells(config, "(manual)", "failed") and not tells(config, "(manual)", "acted")
    for event in ("awaiting_approval", "rejected", "no_action"):
        assert tells(config, "ask", event), event
    assert not tells(config, "ask", "expired")  # its escalation tells it, once
    assert not tells(config, "poke", "no_action")
    assert tells(config, "tell", "suggested") and not tells(config, "poke", "suggested")


# ---- rendering ------------------------------------------------------------------------------


def test_approval_requests_carry_each_platforms_buttons_and_the_token_only_for_mattermost() -> None:
    """An ``awaiting_approval`` notice: Slack gets an ``actions`` block with buttons
    ``healer_approve``/``healer_reject`` whose value names the heal and the decision;
    Mattermost gets attachment actions posting {heal_id, token, decision} to
    ``{public_url}/api/v1/integrations/mattermost``; the webhook JSON names the approve
    and reject endpoints but never carries the token."""
    n = notice(
        "awaiting_approval",
        approval=ApprovalRequest("tok-secret", time.time() + 900, ("docker:db-1",)),
    )
    slack = render("slack", n, PUBLIC)
    [actions] = [b for b in slack["blocks"] if b["type"] == "actions"]
    buttons = {e["action_id"]: json.loads(e["value"]) for e in actions["elements"]}
    assert buttons == {
        "healer_approve": {"heal_id": "h-1", "decision": "approve"},
        "healer_reject": {"heal_id": "h-1", "decision": "reject"},
    }
    assert "tok-secret" not in json.dumps(slack)
    [attachment] = render("mattermost", n, PUBLIC)["attachments"]
    assert attachment["title_link"] == f"{PUBLIC}/api/v1/heals/h-1"
    assert [
        (a["name"], a["integration"]["url"], a["integration"]["context"])
        for a in attachment["actions"]
    ] == [
        (
            label,
            f"{PUBLIC}/api/v1/integrations/mattermost",
            {"heal_id": "h-1", "token": "tok-secret", "decision": decision},
        )
        for label, decision in (("Approve", "approve"), ("Reject", "reject"))
    ]
    hook = render("webhook", n, PUBLIC)
    assert "tok-secret" not in json.dumps(hook)
    assert hook["approval"]["approve"] == f"POST {PUBLIC}/api/v1/heals/h-1/approve"
    assert hook["approval"]["targets"] == ["docker:db-1"]
    rejected = render("mattermost", notice("rejected", summary="db-1 exited"), PUBLIC)
    assert "**Would act on:** `docker:db-1` (nothing was done)" in str(rejected)
    assert "Done" not in str(rejected)
    for event in ("recovered", "suggested", "rejected"):
        assert not [
            b for b in render("slack", notice(event), PUBLIC)["blocks"] if b["type"] == "actions"
        ]
        assert "actions" not in render("mattermost", notice(event), PUBLIC)["attachments"][0]


def test_a_message_says_what_fired_what_check_found_what_was_done_and_how_it_ended() -> None:
    """A ``recovered`` notice names the alert and its labels, the evidence, the action on
    its targets, the outcome with the time to recovery and the heal's link, in both chats'
    markup and the webhook's fields."""
    n = notice("recovered", summary="restarted db-1", outcome="recovered", time_to_recovery=75.0)
    mm = render("mattermost", n, PUBLIC)
    text = mm["attachments"][0]["text"]
    for part in ("`DbDown`", "`instance`=`db-1`", "exit_code: 137", "`restarted db-1`"):
        assert part in text, part
    assert "`docker:db-1`" in text and "1m15s" in text, text
    slack = render("slack", n, PUBLIC)
    assert "*Outcome:* `recovered` after 1m15s" in slack["blocks"][0]["text"]["text"]
    assert f"<{PUBLIC}/api/v1/heals/h-1|heal h-1>" in json.dumps(slack)
    hook = render("webhook", n, PUBLIC)
    assert (hook["event"], hook["heal_url"], hook["time_to_recovery"]) == (
        "recovered",
        f"{PUBLIC}/api/v1/heals/h-1",
        75.0,
    )
    assert hook["evidence"] == ["exit_code: 137", "status: exited"]


def test_alert_text_cannot_ping_format_or_flood_a_message() -> None:
    """Label values and evidence come from alerts and handlers: Slack control sequences
    are escaped, backticks cannot close a code span, newlines stay out, long values and
    many evidence keys are cut to a few bounded lines; passwords in evidence, reasons and
    summaries are masked."""
    n = notice(
        "failed",
        labels={"alertname": "X", "who": "<!channel> `x`\nnext"},
        evidence={f"k{i:02}": "v" * 1000 for i in range(20)},
    )
    slack = render("slack", n, PUBLIC)["blocks"][0]["text"]["text"]
    assert "<!channel>" not in slack and "&lt;!channel&gt;" in slack
    assert "`x`" not in slack and "\nnext" not in slack
    assert len(slack) <= 3000
    leaky = notice(
        "failed",
        evidence={"dsn": "postgresql://app:hunter2@db/app"},
        reason="connect failed: password=hunter2",
        summary="tried postgresql://app:hunter2@db/app",
    )
    for kind in ("slack", "mattermost", "webhook"):
        assert "hunter2" not in json.dumps(render(kind, leaky, PUBLIC)), kind
    lines = evidence_lines(n.evidence)
    assert len(lines) == 7 and lines[-1] == "… and 14 more"
    assert all(len(line) <= 210 for line in lines)


def test_a_summary_counts_heals_and_events() -> None:
    """A summary reads like "37 heals: 35 recovered, 2 failed", per notifier kind."""
    group = _Group()
    for i in range(37):
        group.events["failed" if i < 2 else "recovered"] += 1
        group.heals.add(f"h{i}")
    assert "37 heals: 35 recovered, 2 failed" in summary_text("db", group, 60, slack=False)
    hook = render_summary("webhook", "db", group, 60, PUBLIC)
    assert (hook["heals"], hook["events"]) == (37, {"recovered": 35, "failed": 2})
    assert hook["history_url"] == f"{PUBLIC}/api/v1/heals?rule=db"


# ---- end to end, in process -----------------------------------------------------------------


async def test_a_recovered_heal_is_told_in_every_notifier_format_and_journaled(
    tmp_path: Path,
    handlers: HandlerRegistry,
    prom: StillFiring,
    webhook_recorder: WebhookRecorder,
) -> None:
    """notify_on [started, acted, recovered]: each notifier gets three messages, in order;
    the ``recovered`` one carries what check found, what was done to which target and the
    time to recovery; each delivery is a ``notify`` entry on the heal's timeline; the
    notices are counted sent."""
    prom.firing = False
    config = notices_config(
        tmp_path,
        notify_on=["started", "acted", "recovered"],
        notify=three_notifiers(),
        prom=prom,
    )
    async with telling(config, handlers, *three_urls(webhook_recorder)) as h:
        [heal] = await ended(h, "t1")
        heal_id = heal["id"]
        assert heal["outcome"] == "recovered", heal["reason"]
        entries = await notify_entries(h, heal_id, 9)
        sent = h.sample("healer_notices_total", {"event": "recovered", "result": "sent"})
    hooks = at(webhook_recorder, "/hook")
    assert [b["event"] for b in hooks] == ["started", "acted", "recovered"]
    recovered = hooks[-1]
    assert recovered["targets"] == ["test:t1"] and recovered["summary"] == "poked t1"
    assert recovered["heal_url"] == f"{PUBLIC}/api/v1/heals/{heal_id}"
    assert "target: t1" in recovered["evidence"]
    assert recovered["time_to_recovery"] > 0
    mm = at(webhook_recorder, "/mm")
    assert len(mm) == 3 and "recovered" in mm[-1]["text"]
    assert "`poked t1`" in mm[-1]["attachments"][0]["text"]
    slack = at(webhook_recorder, "/slack")
    assert len(slack) == 3 and slack[-1]["blocks"][0]["type"] == "section"
    assert sorted((e["event"], e["notifier"]) for e in entries) == sorted(
        (event, name)
        for event in ("started", "acted", "recovered")
        for name in ("mattermost", "slack", "webhook")
    )
    assert all(e["ok"] for e in entries)
    assert sent == 1


async def test_delivery_failures_are_retried_journaled_and_never_touch_the_heal(
    tmp_path: Path,
    handlers: HandlerRegistry,
    webhook_recorder: WebhookRecorder,
    dead_port: int,
) -> None:
    """One notifier answers 500 once (retried: delivered at the second attempt), another
    listens nowhere (failed after its retries): the heal ends as it would without them,
    the timeline records both deliveries, the failure is counted."""
    webhook_recorder.responses = [500]
    notify = [
        webhook_notifier(name="flaky", retries=1),
        webhook_notifier(name="gone", retries=1, timeout="0.5s"),
    ]
    config = notices_config(tmp_path, notify_on=["acted"], notify=notify)
    urls = (f"{webhook_recorder.url}/hook", f"http://127.0.0.1:{dead_port}/hook")
    async with telling(config, handlers, *urls) as h:
        [heal] = await ended(h, "t1")
        heal_id = heal["id"]
        entries = await notify_entries(h, heal_id, 2)
        failed = h.sample("healer_notices_total", {"event": "acted", "result": "failed"})
    assert heal["outcome"] == "unverified", heal["reason"]
    by_name = {e["notifier"]: e for e in entries}
    assert (by_name["flaky"]["ok"], by_name["flaky"]["attempts"]) == (True, 2)
    assert (by_name["gone"]["ok"], by_name["gone"]["attempts"]) == (False, 2)
    assert [b["event"] for b in at(webhook_recorder, "/hook")] == ["acted", "acted"]  # a retry
    assert failed == 1


async def test_a_storm_of_200_heals_on_one_rule_sends_a_bounded_number_of_messages(
    tmp_path: Path, handlers: HandlerRegistry, webhook_recorder: WebhookRecorder
) -> None:
    """200 heals on one rule, notify_on [acted], group after 5 in a window: 5 messages
    one by one, the other 195 folded into one summary (sent when its interval ends, or
    at shutdown: flushed here): 6 messages in all; every notice is counted (5 sent + 195
    grouped), the summary's count says 195 heals and its delivery is on the timeline of
    the last heal it counts."""
    config = notices_config(
        tmp_path,
        notify_on=["acted"],
        notify=[webhook_notifier()],
        group={"after": 5, "window": "1h", "interval": "1h"},
    )
    async with telling(config, handlers, webhook_recorder.url) as h:
        ids = [heal["id"] for heal in await ended(h, *(f"s{i}" for i in range(200)), timeout=60)]
        await h.services.notices.drain()

        def count(event: str, result: str) -> float:
            return h.sample("healer_notices_total", {"event": event, "result": result}) or 0

        assert (count("acted", "sent"), count("acted", "grouped")) == (5, 195)
        assert len(webhook_recorder.snapshot()) == 5  # the summary waits for its interval
        h.services.notices.flush()  # as at shutdown
        await h.services.notices.drain()
        bodies = [r.body for r in webhook_recorder.snapshot()]
        assert [b["event"] for b in bodies] == ["acted"] * 5 + ["summary"]
        assert (bodies[-1]["heals"], bodies[-1]["events"]) == (195, {"acted": 195})
        assert count("summary", "sent") == 1
        timelines = [await h.journal.get_heal(i) or {"timeline": []} for i in ids]
        told = [
            e["data"]
            for heal in timelines
            for e in heal["timeline"]
            if e["kind"] == "notify" and e["data"]["event"] == "summary"
        ]
    assert len(told) == 1 and told[0]["heals"] == 195 and told[0]["ok"]


async def test_a_summary_is_sent_every_interval_while_the_storm_lasts(
    tmp_path: Path, handlers: HandlerRegistry, webhook_recorder: WebhookRecorder
) -> None:
    """group.after 1, interval 0.2s: the first heal is told alone, the next two are
    counted in summaries sent by their timer while healer runs (no shutdown flush)."""
    config = notices_config(
        tmp_path,
        notify_on=["acted"],
        notify=[webhook_notifier()],
        group={"after": 1, "window": "1h", "interval": "0.2s"},
    )
    async with telling(config, handlers, webhook_recorder.url) as h:
        await ended(h, "s0", "s1", "s2")

        def summed() -> int:
            bodies = [r.body for r in webhook_recorder.snapshot()]
            return sum(b["heals"] for b in bodies if b["event"] == "summary")

        await until(lambda: summed() >= 2, what="summaries of the two later heals")
    bodies = [r.body for r in webhook_recorder.snapshot()]
    assert bodies[0]["event"] == "acted"
    summaries = bodies[1:]  # one, unless the machine was slow enough to split them in two
    assert summaries and all(b["event"] == "summary" for b in summaries)
    assert sum(b["events"]["acted"] for b in summaries) == 2


# ---- told once ------------------------------------------------------------------------------


def _resend(h: InProcessHealer) -> Any:
    return h.client.post(
        "/api/v1/alerts",
        json=alert_payload(
            {"alertname": "Poke", "target": "t1"},
            fingerprint=fingerprint("Poke", "t1"),
            starts_at=BASE,
        ),
    )


async def test_not_recovered_is_told_once_not_again_by_the_follow_up_escalation(
    tmp_path: Path,
    handlers: HandlerRegistry,
    prom: StillFiring,
    webhook_recorder: WebhookRecorder,
) -> None:
    """notify_on [not_recovered] and on_not_recovered escalate: the heal's notice tells
    people; the alert's re-sends then decide the follow-up escalation, which records that
    the notice told and sends nothing: one message in all."""
    config = notices_config(
        tmp_path, notify_on=["not_recovered"], notify=[webhook_notifier()], prom=prom
    )
    async with telling(config, handlers, webhook_recorder.url) as h:
        [heal] = await ended(h, "t1")
        heal_id = heal["id"]
        assert heal["outcome"] == "not_recovered", heal["reason"]
        await notify_entries(h, heal_id, 1)
        for _ in range(2):
            assert (await _resend(h)).status_code == 200
            await h.services.followups.drain()
        after = await h.journal.get_heal(heal_id) or {}
    bodies = [r.body for r in webhook_recorder.snapshot()]
    assert len(bodies) == 1 and bodies[0]["heal_url"].endswith(heal_id), bodies
    assert kinds(after).count("not_recovered_escalation") == 1
    [told] = [e["data"] for e in after["timeline"] if e["kind"] == "escalation"]
    assert told["told_by"] == "not_recovered notice"


async def test_a_retried_alert_that_stays_not_recovered_is_told_once(
    tmp_path: Path,
    handlers: HandlerRegistry,
    prom: StillFiring,
    webhook_recorder: WebhookRecorder,
) -> None:
    """on_not_recovered retry: the alert's second heal (the retry) ends not_recovered too;
    people heard it once, the repeat is counted ``told_before``."""
    config = notices_config(
        tmp_path,
        notify_on=["not_recovered"],
        notify=[webhook_notifier()],
        prom=prom,
        rule={"on_not_recovered": "retry"},
    )
    async with telling(config, handlers, webhook_recorder.url) as h:
        [heal] = await ended(h, "t1")
        heal_id = heal["id"]
        assert (await _resend(h)).status_code == 200
        await h.services.followups.drain()

        async def retried() -> bool:
            rows = await h.journal.list_heals(limit=10)
            return len(rows) == 2 and all(r["outcome"] == "not_recovered" for r in rows)

        await until(retried, timeout=15, what="the retry heal to end not_recovered")
        await h.idle()
        await h.services.notices.drain()
        repeat = h.sample(
            "healer_notices_total", {"event": "not_recovered", "result": "told_before"}
        )
    assert [r.body["heal_url"] for r in webhook_recorder.snapshot()] == [
        f"{PUBLIC}/api/v1/heals/{heal_id}"
    ]
    assert repeat == 1


async def test_no_notifier_or_nothing_to_tell_sends_nothing(
    tmp_path: Path, handlers: HandlerRegistry, webhook_recorder: WebhookRecorder
) -> None:
    """With notifiers but an empty notify_on (today's default), a heal sends no message and
    writes no ``notify`` entry: escalations stay the only messages."""
    config = notices_config(tmp_path, notify_on=[], notify=[webhook_notifier()])
    async with telling(config, handlers, webhook_recorder.url) as h:
        [heal] = await ended(h, "t1")
        await h.services.notices.drain()
        await asyncio.sleep(0)
    assert "notify" not in kinds(heal)
    assert webhook_recorder.snapshot() == []


# ---- approval flow --------------------------------------------------------------------------


async def test_an_approval_request_is_told_with_buttons_then_its_decision_and_outcome(
    tmp_path: Path, handlers: HandlerRegistry, webhook_recorder: WebhookRecorder
) -> None:
    """mode approve with notify_on [acted] only: the request reaches Slack (healer_approve /
    healer_reject buttons naming the heal) and Mattermost (buttons whose context carries
    the heal's token, which decides it); once approved the heal acts and ``acted`` is
    told; the webhook saw the request without the token."""
    config = notices_config(
        tmp_path, notify_on=["acted"], notify=three_notifiers(), rule={"mode": "approve"}
    )
    async with telling(config, handlers, *three_urls(webhook_recorder)) as h:
        heal_id = await fire(h, "t1")
        assert heal_id is not None
        await until(lambda: len(webhook_recorder.snapshot()) >= 3, what="the approval request")
        [mm] = at(webhook_recorder, "/mm")
        [approve, _] = mm["attachments"][0]["actions"]
        context = approve["integration"]["context"]
        assert (context["heal_id"], context["decision"]) == (heal_id, "approve")
        await decide(
            h.services, heal_id, "approve", by="@alice", via="mattermost", token=context["token"]
        )
        heal = await h.wait_for_outcome(heal_id, timeout=15)
        await h.services.notices.drain()
    assert heal["outcome"] == "unverified", heal["reason"]
    [request, acted] = at(webhook_recorder, "/hook")
    assert (request["event"], acted["event"]) == ("awaiting_approval", "acted")
    assert request["approval"]["targets"] == ["test:t1"]
    assert context["token"] not in json.dumps(request)
    [slack_request, _] = at(webhook_recorder, "/slack")
    [actions] = [b for b in slack_request["blocks"] if b["type"] == "actions"]
    assert [e["action_id"] for e in actions["elements"]] == ["healer_approve", "healer_reject"]
    assert json.loads(actions["elements"][0]["value"])["heal_id"] == heal_id


async def test_a_rejection_and_a_suggestion_are_told_though_notify_on_is_empty(
    tmp_path: Path, handlers: HandlerRegistry, webhook_recorder: WebhookRecorder
) -> None:
    """Approval events are always told: a rejected heal tells its request, then who
    rejected it; a ``mode: suggest`` rule tells what it would do (nothing acts)."""
    config = notices_config(
        tmp_path, notify_on=[], notify=[webhook_notifier()], rule={"mode": "approve"}
    )
    config["rules"][1]["mode"] = "suggest"
    async with telling(config, handlers, webhook_recorder.url) as h:
        heal_id = await fire(h, "t1")
        assert heal_id is not None
        await until(lambda: webhook_recorder.snapshot(), what="the approval request")
        await decide(h.services, heal_id, "reject", by="bob", via="api", comment="not now")
        rejected = await h.wait_for_outcome(heal_id, timeout=15)
        suggested_id = await fire(h, "t2", name="Poke2")
        assert suggested_id is not None
        suggested = await h.wait_for_outcome(suggested_id, timeout=15)
        await h.services.notices.drain()
    assert (rejected["outcome"], suggested["outcome"]) == ("rejected", "suggested")
    assert h.noop.acts == []
    bodies = [r.body for r in webhook_recorder.snapshot()]
    assert [(b["event"], b["heal_id"]) for b in bodies] == [
        ("awaiting_approval", heal_id),
        ("rejected", heal_id),
        ("suggested", suggested_id),
    ]
    assert bodies[1]["decided_by"] == "bob" and "not now" in bodies[1]["reason"]
    assert bodies[2]["targets"] == ["test:t2"]


async def test_expiry_is_told_once_and_a_resolve_while_waiting_is_told_no_action(
    tmp_path: Path, handlers: HandlerRegistry, webhook_recorder: WebhookRecorder
) -> None:
    """An approval nobody answers: the request, then one message, the heal's
    approval_expired escalation (no second ``expired`` notice). An alert that resolves
    while its heal awaits approval: the request, then a ``no_action`` message."""
    config = notices_config(
        tmp_path,
        notify_on=[],
        notify=[webhook_notifier()],
        rule={"mode": "approve", "approval": {"timeout": "0.3s"}},
    )
    config["rules"][1]["mode"] = "approve"
    async with telling(config, handlers, webhook_recorder.url) as h:
        expired_id = await fire(h, "t1")
        assert expired_id is not None
        expired = await h.wait_for_outcome(expired_id, timeout=15)
        resolved_id = await fire(h, "t2", name="Poke2")
        assert resolved_id is not None
        await until(lambda: len(webhook_recorder.snapshot()) >= 3, what="the second request")
        await fire(h, "t2", name="Poke2", status="resolved")
        resolved = await h.wait_for_outcome(resolved_id, timeout=15)
        await h.services.notices.drain()
    assert (expired["outcome"], resolved["outcome"]) == ("expired", "no_action")
    assert h.noop.acts == []
    told = [(r.body["event"], r.body["heal_id"]) for r in webhook_recorder.snapshot()]
    assert sorted(told) == sorted(  # the escalation is sent by the heal, not the notices'
        [  # sender: its order against the request is not the point
            ("awaiting_approval", expired_id),
            ("approval_expired", expired_id),
            ("awaiting_approval", resolved_id),
            ("no_action", resolved_id),
        ]
    )


async def test_a_full_queue_drops_and_counts_and_notice_never_waits(
    tmp_path: Path, handlers: HandlerRegistry, dead_port: int
) -> None:
    """A notifier that is down (retries with backoff) holds the one sender; with room
    for one queued notice, a third is dropped and counted ``dropped``; ``notice`` returns
    at once every time (it is a plain call, never awaited); closing is bounded."""
    raw = notices_config(
        tmp_path, notify_on=["acted"], notify=[webhook_notifier(retries=3, backoff="1s")]
    )
    config = parse_config(raw, handlers)
    metrics = Metrics(CollectorRegistry())
    async with httpx.AsyncClient() as http:
        notifiers = Notifiers.from_config(
            config.notify, [f"http://127.0.0.1:{dead_port}/hook"], http
        )
        notices = HealNotices(config, notifiers, metrics=metrics, max_queue=1)
        for i in range(3):
            notices.notice(notice("acted", rule="poke", heal_id=f"h{i}"))
            await asyncio.sleep(0)  # the sender takes the first one off the queue
        dropped = metrics.registry.get_sample_value(
            "healer_notices_total", {"event": "acted", "result": "dropped"}
        )
        await notices.aclose(timeout=0.2)
    assert dropped == 1
