"""Approving and rejecting ``mode: approve`` heals from Slack and Mattermost, end to end
in-process: healer posts its approval request to local HTTP servers standing in for
Slack's and Mattermost's incoming webhooks (the real message formats), and the test
clicks the buttons found in those messages by posting the callbacks exactly as each
platform sends them. The ``test.noop`` handler records what acted; nothing here needs
dockerd or Prometheus (a heal that acts ends ``unverified``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from healer.config import Secrets
from tests.support.inprocess.chat import (
    CHAT_NOTIFY,
    MATTERMOST_PATH,
    SLACK_SECRET,
    approval_request,
    await_phase,
    chat_urls,
    click_mattermost,
    click_slack,
    mattermost_buttons,
    mattermost_click,
    slack_buttons,
)
from tests.support.inprocess.inproc import InProcessHealer, Start
from tests.support.inprocess.inproc import web_alert as alert
from tests.support.servers.webhook import WebhookRecorder

PUBLIC = "http://healer.example.org"


@pytest.fixture
async def approving(
    start: Start, webhook_recorder: WebhookRecorder
) -> AsyncIterator[InProcessHealer]:
    """healer with one ``mode: approve`` rule (WebDown -> test.noop on the instance),
    telling a Slack and a Mattermost stand-in (``webhook_recorder``, paths ``/slack`` and
    ``/mattermost``), with a Slack signing secret."""
    secrets = Secrets(
        slack_signing_secret=SLACK_SECRET,
        notify_urls=chat_urls(webhook_recorder),
    )
    rules = [
        {
            "name": "approve-web",
            "match": ['alertname="WebDown"'],
            "handler": "test.noop",
            "params": {"target": "{{ labels.instance }}"},
            "mode": "approve",
        }
    ]
    # Slack's response_url (where the clicked message is replaced) at the stand-in too.
    integrations = {"slack": {"response_urls": [f"{webhook_recorder.url}/slack-response/"]}}
    async with start(
        secrets, rules=rules, notify=CHAT_NOTIFY, public_url=PUBLIC, integrations=integrations
    ) as h:
        yield h


async def _click_mattermost(
    h: InProcessHealer, button: dict[str, Any], **kw: Any
) -> dict[str, Any]:
    """Click ``button`` as Mattermost would (to ``public_url``'s path); the JSON answer."""
    assert button["integration"]["url"] == f"{PUBLIC}{MATTERMOST_PATH}"
    resp = await click_mattermost(h.client, button, **kw)
    assert resp.status_code == 200, resp.text
    answer: dict[str, Any] = resp.json()
    return answer


async def _click_slack(
    h: InProcessHealer,
    button: dict[str, Any],
    *,
    secret: str = SLACK_SECRET,
    at: float | None = None,
    **kw: Any,
) -> Any:
    return await click_slack(h.client, button, secret, at=at, **kw)


async def _awaiting(h: InProcessHealer, heal_id: str) -> None:
    await await_phase(h.journal, heal_id, "awaiting_approval")


def _decisions(heal: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in heal["timeline"] if e["kind"] in ("approved", "rejected")]


async def _heal(h: InProcessHealer, heal_id: str) -> dict[str, Any]:
    resp = await h.client.get(f"/api/v1/heals/{heal_id}", headers=h.admin_headers)
    assert resp.status_code == 200, resp.text
    heal: dict[str, Any] = resp.json()
    return heal


async def test_a_mattermost_button_approves_once(
    approving: InProcessHealer, webhook_recorder: WebhookRecorder
) -> None:
    """The Approve button of healer's Mattermost message approves: the heal re-checks and
    acts once on its target, the post is updated without buttons, and the clicker's
    Mattermost identity is journaled; a second click of the same token decides nothing
    (both counted in healer_chat_callbacks_total)."""
    h = approving
    [heal_id] = await h.fire(alert("WebDown", "web-1"))
    await _awaiting(h, heal_id)
    message = await approval_request(webhook_recorder, "/mattermost", heal_id)
    buttons = mattermost_buttons(message)
    assert set(buttons) == {"approve", "reject"}
    assert h.noop.acts == []

    answer = await _click_mattermost(h, buttons["approve"])
    assert answer["update"]["props"] == {}
    assert "approved by @bob" in answer["update"]["message"]
    heal = await h.wait_for_outcome(heal_id)
    assert heal["outcome"] == "unverified"  # acted; nobody answers at Prometheus
    assert [a.target for a in h.noop.acts] == ["web-1"]

    again = await _click_mattermost(h, buttons["approve"])
    assert "update" not in again
    assert "already decided" in again["ephemeral_text"]
    await h.idle()
    assert len(h.noop.acts) == 1
    [decided] = _decisions(await _heal(h, heal_id))
    assert decided["kind"] == "approved"
    assert decided["data"]["via"] == "mattermost"
    assert decided["data"]["by"].startswith("@bob (Mattermost user mm0bob")
    for result, count in (("decided", 1), ("not_awaiting", 1)):
        labels = {"platform": "mattermost", "result": result}
        assert h.sample("healer_chat_callbacks_total", labels) == count


async def test_a_signed_slack_button_approves_and_a_replay_is_refused(
    approving: InProcessHealer, webhook_recorder: WebhookRecorder
) -> None:
    """The Approve button of healer's Slack message, signed with the app's secret,
        approves (Slack's user and team journaled); a wrong signature and an old timestamp
        are refused first and nothing acts until the valid click, which replaces the message
        through its ``response_url`` (buttons gone, who decided); a second valid click is 409
    and the message it was clicked in says who decided."""
    h = approving
    [heal_id] = await h.fire(alert("WebDown", "web-2"))
    await _awaiting(h, heal_id)
    buttons = slack_buttons(await approval_request(webhook_recorder, "/slack", heal_id))
    approve = buttons["healer_approve"]

    forged = await _click_slack(h, approve, secret="someone-elses-secret")
    replayed = await _click_slack(h, approve, at=time.time() - 600)
    assert (forged.status_code, replayed.status_code) == (401, 401)
    assert (await h.journal.get_heal(heal_id) or {})["phase"] == "awaiting_approval"
    assert h.noop.acts == []

    response_url = f"{webhook_recorder.url}/slack-response/actions/T0ACME/1/abc"
    resp = await _click_slack(h, approve, response_url=response_url)
    assert resp.status_code == 200, resp.text
    assert resp.json()["decision"] == "approve"
    [update] = [r for r in webhook_recorder.snapshot() if r.path.startswith("/slack-response/")]
    assert update.body["replace_original"] is True  # the buttons go
    assert "approved by alice (Slack user U0ALICE" in update.body["text"]
    await h.wait_for_outcome(heal_id)
    assert [a.target for a in h.noop.acts] == ["web-2"]
    second = await _click_slack(h, approve, response_url=response_url)
    assert second.status_code == 409
    updates = [r for r in webhook_recorder.snapshot() if r.path.startswith("/slack-response/")]
    assert len(updates) == 2
    assert "already decided: approve by alice" in updates[1].body["text"]
    [decided] = _decisions(await _heal(h, heal_id))
    assert decided["data"]["via"] == "slack"
    assert decided["data"]["by"] == "alice (Slack user U0ALICE, team T0ACME)"


async def test_tokens_of_other_heals_and_made_up_tokens_are_refused(
    approving: InProcessHealer, webhook_recorder: WebhookRecorder
) -> None:
    """A Mattermost click carrying another heal's token, or a made-up one, is 403 and
    decides nothing; the heal's own Reject button then rejects it and nothing ever acts."""
    h = approving
    [first, second] = await h.fire(alert("WebDown", "web-3"), alert("WebDown", "web-4"))
    for heal_id in (first, second):
        await _awaiting(h, heal_id)
    mine = mattermost_buttons(await approval_request(webhook_recorder, "/mattermost", first))
    theirs = mattermost_buttons(await approval_request(webhook_recorder, "/mattermost", second))
    their_token = theirs["approve"]["integration"]["context"]["token"]

    for token in (their_token, "made-up-token", ""):
        resp = await h.client.post(MATTERMOST_PATH, json=mattermost_click(first, token, "approve"))
        assert resp.status_code == 403, resp.text
    assert (await h.journal.get_heal(first) or {})["phase"] == "awaiting_approval"

    answer = await _click_mattermost(h, mine["reject"])
    assert "rejected by @bob" in answer["update"]["message"]
    assert (await h.wait_for_outcome(first))["outcome"] == "rejected"
    assert _decisions(await _heal(h, first))[0]["kind"] == "rejected"
    await _click_mattermost(h, theirs["reject"])
    assert (await h.wait_for_outcome(second))["outcome"] == "rejected"
    assert h.noop.acts == []


async def test_racing_clicks_on_both_platforms_act_once(
    approving: InProcessHealer, webhook_recorder: WebhookRecorder
) -> None:
    """Slack and Mattermost approvals of one heal sent at once (plus a double click):
    exactly one decides, the others are told it was decided, and the heal acts once."""
    h = approving
    [heal_id] = await h.fire(alert("WebDown", "web-5"))
    await _awaiting(h, heal_id)
    slack = slack_buttons(await approval_request(webhook_recorder, "/slack", heal_id))
    mm = mattermost_buttons(await approval_request(webhook_recorder, "/mattermost", heal_id))

    async def mm_click() -> bool:
        answer = await _click_mattermost(h, mm["approve"])
        return "update" in answer

    async def slack_click() -> bool:
        resp = await _click_slack(h, slack["healer_approve"])
        assert resp.status_code in (200, 409), resp.text
        return resp.status_code == 200

    won = await asyncio.gather(mm_click(), slack_click(), mm_click(), slack_click())
    assert sum(won) == 1
    await h.wait_for_outcome(heal_id)
    await h.idle()
    assert [a.target for a in h.noop.acts] == ["web-5"]
    assert len(_decisions(await _heal(h, heal_id))) == 1
