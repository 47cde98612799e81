"""The chat platforms' callbacks (healer/http/integrations.py) at the HTTP edge, in-process:
Slack's signature and timestamp checks come before anything is read, malformed requests
are refused, and nothing refused ever reaches a decision or acts. The approval flow
itself (approve, double click, tokens) is in tests/unit/test_chat_approvals.py.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path
from typing import Any

import pytest

from healer.config import ConfigError, Secrets, parse_config, resolve_secrets
from healer.errors import PayloadError
from healer.http.integrations import (
    allowed_response_url,
    slack_signature,
    verify_slack,
)
from tests.support.inprocess.chat import (
    MATTERMOST_PATH,
    SLACK_PATH,
    SLACK_SECRET,
    mattermost_click,
    slack_click,
    slack_payload,
    slack_request,
)
from tests.support.inprocess.inproc import InProcessHealer, Start

SLACK = Secrets(slack_signing_secret=SLACK_SECRET)


def test_the_slack_signature_is_v0_hmac_sha256_over_timestamp_and_body() -> None:
    """``slack_signature`` is Slack's documented v0 scheme: hex HMAC-SHA256 keyed with
    the signing secret over ``v0:{timestamp}:{body}``."""
    body = b"payload=%7B%7D"
    mac = hmac.new(b"s3cret", b"v0:1764662400:" + body, hashlib.sha256).hexdigest()
    assert slack_signature("s3cret", "1764662400", body) == f"v0={mac}"


@pytest.mark.parametrize(
    ("timestamp", "signature", "skew", "why"),
    [
        (None, "v0=00", 0, "required"),
        ("1764662400", None, 0, "required"),
        ("-1764662400", "good", 0, "not a Unix time"),
        ("\uff11" * 10, "v0=00", 0, "not a Unix time"),  # fullwidth digits: isdigit()
        ("1764662400", "good", 301, "too old"),  # replayed six minutes later
        ("1764662400", "good", -301, "in the future"),
        ("1764662400", "v0=" + "0" * 64, 0, "does not match"),
        ("1764662400", "v0=é", 0, "does not match"),  # non-ASCII: no TypeError
    ],
)
def test_slack_verification_refuses(
    timestamp: str | None, signature: str | None, skew: float, why: str
) -> None:
    """A missing header, a timestamp that is not digits, more than five minutes old or
    ahead, and a wrong signature are each refused 401."""
    body = b"payload=%7B%7D"
    if signature == "good":
        assert timestamp is not None
        signature = slack_signature(SLACK_SECRET, timestamp, body)
    with pytest.raises(PayloadError) as err:
        verify_slack(SLACK_SECRET, timestamp, signature, body, 1764662400 + skew)
    assert err.value.status == 401
    assert why in err.value.message


def test_slack_verification_accepts_skew_within_five_minutes() -> None:
    """Clocks a few minutes apart either way still verify (Slack's own advice: 5 min)."""
    body = b"payload=%7B%7D"
    sig = slack_signature(SLACK_SECRET, "1764662400", body)
    for skew in (-300, -5, 0, 5, 300):
        verify_slack(SLACK_SECRET, "1764662400", sig, body, 1764662400 + skew)


async def _post_slack(h: InProcessHealer, body: bytes, headers: dict[str, str]) -> Any:
    return await h.client.post(SLACK_PATH, content=body, headers=headers)


async def test_slack_is_refused_when_not_configured(start: Start) -> None:
    """Without ``integrations.slack`` (no signing secret) every Slack callback is 403."""
    async with start() as h:
        resp = await _post_slack(h, *slack_click(SLACK_SECRET, "h1", "approve"))
    assert resp.status_code == 403
    assert "not configured" in resp.json()["error"]


async def test_a_signed_slack_click_reaches_the_decision(start: Start) -> None:
    """A correctly signed click passes the edge: what answers is the decision itself
    (here: no such heal awaiting approval, 404)."""
    async with start(SLACK) as h:
        resp = await _post_slack(h, *slack_click(SLACK_SECRET, "no-such-heal", "approve"))
    assert resp.status_code == 404, resp.text
    assert "not awaiting approval" in resp.json()["error"]


async def test_forged_and_replayed_slack_clicks_are_refused(start: Start) -> None:
    """Another secret's signature, a body changed after signing, a six-minute-old
    timestamp and a signature moved to another timestamp are all 401, counted as
    refused in healer_chat_callbacks_total."""
    async with start(SLACK) as h:
        forged = slack_click("not-the-secret", "h1", "approve")
        body, headers = slack_click(SLACK_SECRET, "h1", "approve")
        tampered = (body.replace(b"approve", b"reject"), headers)
        old = slack_click(SLACK_SECRET, "h1", "approve", at=time.time() - 360)
        moved = (body, {**headers, "X-Slack-Request-Timestamp": str(int(time.time()) - 1)})
        for case in (forged, tampered, old, moved):
            resp = await _post_slack(h, *case)
            assert resp.status_code == 401, resp.text
        assert h.noop.acts == []
        refused = {"platform": "slack", "result": "refused"}
        assert h.sample("healer_chat_callbacks_total", refused) == 4


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"type": "view_submission"}, 422),
        ({"actions": []}, 422),
        ({"user": {"username": "no-id"}}, 422),
    ],
)
async def test_signed_slack_payloads_healer_did_not_ask_for_are_refused(
    start: Start, change: dict[str, Any], status: int
) -> None:
    """Signed, but not a healer button click (another interaction type, no action, no
    user id): refused before any decision."""
    async with start(SLACK) as h:
        payload = {**slack_payload("h1", "approve"), **change}
        resp = await _post_slack(h, *slack_request(SLACK_SECRET, payload))
    assert resp.status_code == status, resp.text


@pytest.mark.parametrize(
    ("kw", "why"),
    [
        ({"action_id": "somebody_elses"}, "not healer's"),
        ({"value": ""}, "names no heal"),
        ({"value": '{"heal_id": "h1", "decision": "reject"}'}, "decision"),  # approve button
        ({"value": '{"heal_id": 1}'}, "decision"),
        ({"value": "h" * 129}, "names no heal"),  # heal ids are short
    ],
)
async def test_slack_buttons_must_be_healers(start: Start, kw: dict[str, str], why: str) -> None:
    """The action must be healer's approve/reject button, its value a heal (and, when the
    value says a decision, the same as the button's)."""
    async with start(SLACK) as h:
        resp = await _post_slack(h, *slack_click(SLACK_SECRET, "h1", "approve", **kw))
    assert resp.status_code == 422, resp.text
    assert why in resp.json()["error"]


async def test_slack_accepts_a_bare_heal_id_as_the_button_value(start: Start) -> None:
    """A button whose value is just the heal id (the decision from its action_id) works."""
    async with start(SLACK) as h:
        resp = await _post_slack(
            h, *slack_click(SLACK_SECRET, "bare-id", "reject", value="bare-id")
        )
    assert resp.status_code == 404
    assert "bare-id" in resp.json()["error"]


@pytest.mark.parametrize(
    ("body", "ctype", "status"),
    [
        (b"payload=%7B%7D&token=x", "application/x-www-form-urlencoded", 422),  # two fields
        (b"text=hi", "application/x-www-form-urlencoded", 422),
        (b"payload=%FF", "application/x-www-form-urlencoded", 400),  # not UTF-8
        (b"payload=\xff", "application/x-www-form-urlencoded", 400),  # not ASCII
        (b"payload=%5B1%5D", "application/x-www-form-urlencoded", 422),  # a JSON array
        (b"payload=nan", "application/x-www-form-urlencoded", 400),
        (b'{"payload": {}}', "application/json", 415),
        (b"", "application/x-www-form-urlencoded", 400),
        (b"payload=" + b"a" * 300_000, "application/x-www-form-urlencoded", 413),
    ],
)
async def test_malformed_slack_bodies_are_refused(
    start: Start, body: bytes, ctype: str, status: int
) -> None:
    """Whatever the body, once its signature holds: one ``payload`` form field of strict
    JSON under the size limit, else a 4xx."""
    async with start(SLACK) as h:
        _, headers = slack_request(SLACK_SECRET, {})
        ts = headers["X-Slack-Request-Timestamp"]
        headers = {
            **headers,
            "Content-Type": ctype,
            "X-Slack-Signature": slack_signature(SLACK_SECRET, ts, body),
        }
        resp = await _post_slack(h, body, headers)
    assert resp.status_code == status, resp.text


async def test_a_mattermost_click_for_no_awaiting_heal_tells_the_clicker(
    healer: InProcessHealer,
) -> None:
    """Mattermost's answer to a click on an unknown or decided heal is a 200 with
    ``ephemeral_text`` saying why (Mattermost shows only that to the clicker)."""
    resp = await healer.client.post(MATTERMOST_PATH, json=mattermost_click("h1", "tok", "approve"))
    assert resp.status_code == 200
    assert "not awaiting approval" in resp.json()["ephemeral_text"]
    assert "update" not in resp.json()


@pytest.mark.parametrize(
    "change",
    [
        {"context": {"heal_id": "h1", "decision": "approve"}},  # no token
        {"context": {"heal_id": "h1", "token": "t", "decision": "maybe"}},
        {"context": None},
        {"user_id": 7},
    ],
)
async def test_malformed_mattermost_clicks_are_refused(
    healer: InProcessHealer, change: dict[str, Any]
) -> None:
    """A context without a token, an unknown decision, no context or a non-string user
    is 422; nothing acts."""
    body = {**mattermost_click("h1", "tok", "approve"), **change}
    resp = await healer.client.post(MATTERMOST_PATH, json=body)
    assert resp.status_code == 422, resp.text
    assert healer.noop.acts == []


def _slack_config(tmp_path: Path, **slack: str) -> dict[str, Any]:
    return {"journal": str(tmp_path / "j.db"), "integrations": {"slack": slack}}


def test_the_slack_signing_secret_resolves_like_the_other_secrets(tmp_path: Path) -> None:
    """From ``signing_secret_file``, from ``$HEALER_SLACK_SIGNING_SECRET`` (wins) or a named
    variable; never shown by ``repr``; a configured integration without one is an error."""
    secret_file = tmp_path / "slack"
    secret_file.write_text("from-file\n")
    by_file = parse_config(_slack_config(tmp_path, signing_secret_file=str(secret_file)))
    assert resolve_secrets(by_file, {}).slack_signing_secret == "from-file"
    env = {"HEALER_SLACK_SIGNING_SECRET": "from-env"}
    assert resolve_secrets(by_file, env).slack_signing_secret == "from-env"
    named = parse_config(_slack_config(tmp_path, signing_secret_env="MY_SLACK"))
    assert resolve_secrets(named, {"MY_SLACK": "mine"}).slack_signing_secret == "mine"
    assert "mine" not in repr(resolve_secrets(named, {"MY_SLACK": "mine"}))
    with pytest.raises(ConfigError, match=r"\$MY_SLACK"):
        resolve_secrets(named, {})
    unset = parse_config({"journal": str(tmp_path / "j.db")})
    assert resolve_secrets(unset, env).slack_signing_secret is None
    with pytest.raises(ConfigError, match="at most one"):
        parse_config(
            _slack_config(tmp_path, signing_secret_file=str(secret_file), signing_secret_env="X")
        )


@pytest.mark.parametrize(
    ("url", "called"),
    [
        ("https://hooks.slack.com/actions/T0/1/abc", True),
        ("https://hooks.slack.com.evil.example/actions/T0/1/abc", False),
        ("http://hooks.slack.com/actions/T0/1/abc", False),
        ("https://someone@hooks.slack.com/actions/T0/1/abc", False),
        ("https://hooks.slack.com:8443/actions/T0/1/abc", False),
        ("https://evil.example/https://hooks.slack.com/actions", False),
        ("https://[::1/actions", False),  # not a URL at all
    ],
)
def test_only_slacks_response_urls_are_called(url: str, called: bool) -> None:
    """The message update goes only to a ``response_url`` under a configured prefix
    (Slack's own by default): same scheme, same host and port, no user info, path under."""
    assert allowed_response_url(url, ["https://hooks.slack.com/"]) is called
