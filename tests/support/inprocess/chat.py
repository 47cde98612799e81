"""Chat platforms' button callbacks, built exactly as Slack and Mattermost send them, for
healer's ``/api/v1/integrations/{slack,mattermost}`` (healer/http/integrations.py).

    body, headers = slack_click(SECRET, heal_id, "approve")     # signed, form-encoded
    body, headers = slack_click(SECRET, heal_id, "reject", at=time.time() - 600)
    await client.post(SLACK_PATH, content=body, headers=headers)
    await client.post(MATTERMOST_PATH, json=mattermost_click(heal_id, token, "approve"))

    # healer's own messages, posted to a WebhookRecorder standing in for the chats:
    message = await approval_request(recorder, "/mattermost", heal_id)
    resp = await click_mattermost(client, mattermost_buttons(message)["approve"])
    resp = await click_slack(client, slack_buttons(message)["healer_approve"], SECRET)

Slack: an interactivity request is ``application/x-www-form-urlencoded`` with one field,
``payload``, the ``block_actions`` JSON (user, team, container, channel, message,
response_url, actions), signed ``v0=hex(HMAC-SHA256(secret, "v0:{ts}:{body}"))`` in
``X-Slack-Signature`` with ``X-Slack-Request-Timestamp``. Mattermost: a JSON POST to the
button's ``integration.url`` with the clicking user, the channel and post, and the
button's ``context`` as healer wrote it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from healer.store import Store
from tests.support.servers.webhook import Received, WebhookRecorder

SLACK_PATH = "/api/v1/integrations/slack"
MATTERMOST_PATH = "/api/v1/integrations/mattermost"
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"  # a test's signing secret
ACTION_IDS = {"approve": "healer_approve", "reject": "healer_reject"}
# A Slack and a Mattermost notifier, in this order; their URLs (secrets) from these
# variables under ``healer serve``, from ``Secrets.notify_urls`` in-process.
CHAT_NOTIFY = [
    {"kind": "slack", "url_env": "CHAT_SLACK_URL", "backoff": "0s"},
    {"kind": "mattermost", "url_env": "CHAT_MM_URL", "backoff": "0s"},
]


def chat_urls(recorder: WebhookRecorder) -> tuple[str, str]:
    """:data:`CHAT_NOTIFY`'s URLs at ``recorder``: paths ``/slack`` and ``/mattermost``."""
    return f"{recorder.url}/slack", f"{recorder.url}/mattermost"


def approve_restart_config(journal: str, allow: str, **over: Any) -> dict[str, Any]:
    """One ``mode: approve`` rule, ``restart-approved``: ServiceDown -> docker.restart of
    ``labels.container``, containers matching ``allow``; told through
    :data:`CHAT_NOTIFY`; nobody at Prometheus (a restart ends ``unverified``)."""
    return {
        "journal": journal,
        "prometheus": {"url": "http://127.0.0.1:9", "timeout": "0.2s"},
        "verify": {"stable_for": "0s", "timeout": "0.3s"},
        "allow": [{"kind": "docker", "name": allow}],
        "notify": CHAT_NOTIFY,
        "rules": [
            {
                "name": "restart-approved",
                "match": 'alertname="ServiceDown"',
                "handler": "docker.restart",
                "params": {"containers": ["{{ labels.container }}"], "stop_timeout": 1},
                "mode": "approve",
            }
        ],
        **over,
    }


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """Slack's v0 signature, written out here from Slack's documentation (not healer's)."""
    base = f"v0:{timestamp}:".encode() + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def slack_payload(
    heal_id: str,
    decision: str,
    *,
    user: str = "alice",
    user_id: str = "U0ALICE",
    team_id: str = "T0ACME",
    value: str | None = None,
    action_id: str | None = None,
    response_url: str = "https://hooks.slack.com/actions/T0ACME/1/abc",
) -> dict[str, Any]:
    """A ``block_actions`` payload for a click on healer's approve/reject button."""
    action_id = action_id or ACTION_IDS[decision]
    value = value if value is not None else json.dumps({"heal_id": heal_id, "decision": decision})
    return {
        "type": "block_actions",
        "user": {"id": user_id, "username": user, "name": user, "team_id": team_id},
        "api_app_id": "A0HEALER",
        "token": "legacy-verification-token",
        "container": {
            "type": "message",
            "message_ts": "1764662400.000100",
            "channel_id": "C0OPS",
            "is_ephemeral": False,
        },
        "trigger_id": "1234567890.0987654321.abcdef",
        "team": {"id": team_id, "domain": "acme"},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": "C0OPS", "name": "ops"},
        "message": {"type": "message", "text": "healer asks for approval", "blocks": []},
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [
            {
                "action_id": action_id,
                "block_id": "healer-approval",
                "text": {"type": "plain_text", "text": decision.title(), "emoji": True},
                "value": value,
                "style": "primary" if decision == "approve" else "danger",
                "type": "button",
                "action_ts": "1764662401.000200",
            }
        ],
    }


def slack_request(
    secret: str, payload: dict[str, Any], *, at: float | None = None
) -> tuple[bytes, dict[str, str]]:
    """The form body and headers Slack sends for ``payload``, signed at ``at`` (now)."""
    body = urlencode({"payload": json.dumps(payload)}).encode()
    timestamp = str(int(time.time() if at is None else at))
    return body, {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": sign(secret, timestamp, body),
        "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
    }


def slack_click(
    secret: str, heal_id: str, decision: str, *, at: float | None = None, **kw: Any
) -> tuple[bytes, dict[str, str]]:
    """A signed Slack click on ``decision``'s button of ``heal_id``'s message."""
    return slack_request(secret, slack_payload(heal_id, decision, **kw), at=at)


def mattermost_click(
    heal_id: str,
    token: str,
    decision: str,
    *,
    user: str = "bob",
    user_id: str = "mm0bob0000000000000000000a",
) -> dict[str, Any]:
    """The JSON Mattermost posts to a button's ``integration.url``."""
    return {
        "user_id": user_id,
        "user_name": user,
        "channel_id": "mm0channel00000000000000ch",
        "channel_name": "ops",
        "team_id": "mm0team00000000000000000te",
        "team_domain": "acme",
        "post_id": "mm0post00000000000000000po",
        "trigger_id": "mm0trigger",
        "type": "",
        "data_source": "",
        "context": {"heal_id": heal_id, "token": token, "decision": decision},
    }


def mattermost_buttons(message: Received) -> dict[str, dict[str, Any]]:
    """The interactive buttons of a Mattermost message healer posted, by id."""
    attachments = (message.body or {}).get("attachments", [])
    return {a["id"]: a for att in attachments for a in att.get("actions", [])}


def slack_buttons(message: Received) -> dict[str, dict[str, Any]]:
    """The buttons of a Slack message healer posted, by action_id."""
    blocks = (message.body or {}).get("blocks", [])
    return {
        e["action_id"]: e
        for b in blocks
        if b.get("type") == "actions"
        for e in b.get("elements", [])
    }


async def approval_request(
    recorder: WebhookRecorder, path: str, heal_id: str, timeout: float = 20.0
) -> Received:
    """healer's approval request for ``heal_id`` as posted to ``path`` (``/slack`` or
    ``/mattermost``): a message naming the heal that has buttons. Polled asynchronously
    (an in-process healer runs on the caller's event loop), bounded by ``timeout``."""
    buttons = mattermost_buttons if path == "/mattermost" else slack_buttons
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for r in recorder.snapshot():
            if r.path == path and heal_id in r.raw.decode() and buttons(r):
                return r
        await asyncio.sleep(0.05)
    raise TimeoutError(f"no approval request for {heal_id} at {path}: {recorder.snapshot()}")


async def await_phase(journal: Store, heal_id: str, phase: str, timeout: float = 20.0) -> None:
    """Bounded async wait until the heal is in ``phase`` (e.g. ``awaiting_approval``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        heal = await journal.get_heal(heal_id)
        if heal is not None and heal["phase"] == phase:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"heal {heal_id} never reached {phase}")


async def click_mattermost(
    client: httpx.AsyncClient, button: dict[str, Any], **kw: Any
) -> httpx.Response:
    """POST what Mattermost posts when ``button`` (from healer's message) is clicked, to
    the path of the button's ``integration.url`` on ``client``."""
    integration = button["integration"]
    ctx = integration["context"]
    body = mattermost_click(ctx["heal_id"], ctx["token"], ctx["decision"], **kw)
    return await client.post(urlsplit(integration["url"]).path, json=body)


async def click_slack(
    client: httpx.AsyncClient,
    button: dict[str, Any],
    secret: str,
    *,
    at: float | None = None,
    **kw: Any,
) -> httpx.Response:
    """POST what Slack posts when ``button`` (from healer's message) is clicked, signed
    with ``secret`` at ``at`` (now); ``kw`` go to :func:`slack_payload`."""
    decision = "approve" if button["action_id"] == "healer_approve" else "reject"
    heal_id = json.loads(button["value"])["heal_id"]
    payload = slack_payload(heal_id, decision, value=button["value"], **kw)
    body, headers = slack_request(secret, payload, at=at)
    return await client.post(SLACK_PATH, content=body, headers=headers)
