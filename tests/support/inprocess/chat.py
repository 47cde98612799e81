"""Chat platforms' button callbacks, built exactly as Slack and Mattermost send them, for
healer's ``/api/v1/integrations/{slack,mattermost}`` (healer/http/integrations.py).

    body, headers = slack_click(SECRET, heal_id, "approve")     # signed, form-encoded
    body, headers = slack_click(SECRET, heal_id, "reject", at=time.time() - 600)
    await client.post(SLACK_PATH, content=body, headers=headers)
    await client.post(MATTERMOST_PATH, json=mattermost_click(heal_id, token, "approve"))

Slack: an interactivity request is ``application/x-www-form-urlencoded`` with one field,
``payload``, the ``block_actions`` JSON (user, team, container, channel, message,
response_url, actions), signed ``v0=hex(HMAC-SHA256(secret, "v0:{ts}:{body}"))`` in
``X-Slack-Signature`` with ``X-Slack-Request-Timestamp``. Mattermost: a JSON POST to the
button's ``integration.url`` with the clicking user, the channel and post, and the
button's ``context`` as healer wrote it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import urlencode

SLACK_PATH = "/api/v1/integrations/slack"
MATTERMOST_PATH = "/api/v1/integrations/mattermost"
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"  # a test's signing secret
ACTION_IDS = {"approve": "healer_approve", "reject": "healer_reject"}


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
        "response_url": "https://hooks.slack.com/actions/T0ACME/1/abc",
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
