"""Chat platforms' approval callbacks: the approve/reject buttons of ``mode: approve``
messages (healer/notices.py renders them) land here and go to
:func:`healer.approvals.decide`. No admin token on these routes: each platform
authenticates its own way.

``POST /api/v1/integrations/slack``: Slack's interactive components (the app's
Interactivity Request URL). Slack posts ``application/x-www-form-urlencoded`` with one
field, ``payload``: JSON of type ``block_actions``. Before anything is parsed the request
must carry ``X-Slack-Request-Timestamp`` within :data:`SLACK_MAX_SKEW` of our clock (older:
a replay; newer: a forged clock) and ``X-Slack-Signature`` = ``v0=`` + hex
HMAC-SHA256(signing secret, ``v0:{timestamp}:{raw body}``), compared in constant time;
otherwise 401 and nothing is read. The button is the payload's first action: ``action_id``
:data:`SLACK_APPROVE` or :data:`SLACK_REJECT` says the decision, ``value`` names the heal
(JSON ``{"heal_id": ..., "decision": ...}``, as healer/notices.py writes it; a bare heal
id is taken too). The approver is the payload's ``user`` (id, username/name, team), as Slack
sent it. Answers: 200 and the decision; 401 signature/timestamp; 403 Slack not configured;
404/409 from decide (unknown / already decided: Slack shows the click failed); 4xx for a
malformed request. After a decision (or a click on a heal decided elsewhere: 409) the
clicked message is replaced through the click's ``response_url`` (who decided; the
buttons go), in the background and only when that URL is under
``integrations.slack.response_urls`` (Slack's ``https://hooks.slack.com/``).

``POST /api/v1/integrations/mattermost``: Mattermost's interactive message buttons
(``integration.url`` of each button). Mattermost posts JSON with ``user_id``,
``user_name``, ``channel_id``, ``post_id`` and the button's ``context`` as healer wrote it:
``{"heal_id", "token", "decision"}``. The token is the heal's single-use, unguessable
approval token: it is what authenticates the click (decide checks it: another heal's or a
wrong one is 403, a used one 409). Answers as Mattermost expects: 200 with
``{"update": {"message": ...}, "ephemeral_text": ...}`` (the post loses its buttons and
says who decided); 200 with only ``ephemeral_text`` when the heal is unknown or already
decided (a double click: the person is told, nothing acts); 403 for a bad token; 4xx for
a malformed request.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qsl, urlsplit

import httpx
import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError
from starlette.background import BackgroundTask

from healer.approvals import ApprovalError, Decision, decide
from healer.bounded import clip
from healer.errors import JournalUnavailable, PayloadError
from healer.http.body import read_body, read_json_body
from healer.http.schema import json_body
from healer.payload import pydantic_message
from healer.services import Services, services
from healer.strictjson import decode_json

router = APIRouter(tags=["integrations"])
log = structlog.get_logger("healer.integrations")

SLACK_MAX_SKEW = 300.0
"""Seconds a Slack request's timestamp may differ from our clock (Slack's own advice)."""
SLACK_APPROVE = "healer_approve"
SLACK_REJECT = "healer_reject"
_SLACK_DECISIONS: dict[str, Decision] = {SLACK_APPROVE: "approve", SLACK_REJECT: "reject"}
# A block_actions payload carries the whole message it was clicked in.
_SLACK_BODY_LIMIT = 256 * 1024
_MATTERMOST_BODY_LIMIT = 64 * 1024
_FORM = "application/x-www-form-urlencoded"
_SLACK_UPDATE_TIMEOUT = 5.0
# Ids, names and tokens: short (error answers may quote a heal id whole).
_ID_MAX = 128
_ID = Field(max_length=_ID_MAX)


def slack_signature(secret: str, timestamp: str, body: bytes) -> str:
    """``X-Slack-Signature`` of ``body`` sent at ``timestamp``: ``v0=`` + hex HMAC-SHA256
    over ``v0:{timestamp}:{body}`` keyed with the app's signing secret."""
    base = b"v0:" + timestamp.encode("ascii") + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def verify_slack(
    secret: str, timestamp: str | None, signature: str | None, body: bytes, now: float
) -> None:
    """PayloadError 401 unless ``signature`` is Slack's for ``body`` at ``timestamp`` and
    ``timestamp`` is within :data:`SLACK_MAX_SKEW` of ``now``."""
    if not timestamp or not signature:
        raise PayloadError("X-Slack-Request-Timestamp and X-Slack-Signature are required", 401)
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        raise PayloadError("X-Slack-Request-Timestamp is not a Unix time", 401)
    if abs(now - int(timestamp)) > SLACK_MAX_SKEW:
        raise PayloadError("X-Slack-Request-Timestamp is too old or in the future", 401)
    expected = slack_signature(secret, timestamp, body)
    # Both sides as bytes: compare_digest refuses non-ASCII str, and a header may hold any.
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        raise PayloadError("X-Slack-Signature does not match", 401)


class _Lenient(BaseModel):
    # The platforms send more than healer reads; what it reads is type-checked.
    model_config = ConfigDict(extra="ignore")


class SlackUser(_Lenient):
    id: StrictStr = _ID
    username: StrictStr | None = _ID
    name: StrictStr | None = _ID
    team_id: StrictStr | None = _ID


class SlackTeam(_Lenient):
    id: StrictStr | None = _ID
    domain: StrictStr | None = _ID


class SlackAction(_Lenient):
    action_id: StrictStr = _ID
    value: StrictStr | None = Field(default=None, max_length=2000)


class SlackPayload(_Lenient):
    type: Literal["block_actions"]
    user: SlackUser
    team: SlackTeam | None = None
    actions: list[SlackAction] = Field(min_length=1, max_length=25)
    response_url: StrictStr | None = Field(default=None, max_length=2048)


class SlackForm(BaseModel):
    """What Slack posts (form-encoded): ``payload``, the interaction as JSON."""

    model_config = ConfigDict(extra="forbid")
    payload: StrictStr


class MattermostContext(_Lenient):
    heal_id: StrictStr = _ID
    token: StrictStr = _ID
    decision: Decision


class MattermostAction(_Lenient):
    user_id: StrictStr = _ID
    user_name: StrictStr | None = _ID
    channel_id: StrictStr | None = _ID
    team_id: StrictStr | None = _ID
    post_id: StrictStr | None = _ID
    context: MattermostContext


M = TypeVar("M", bound=BaseModel)


def _validated(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise PayloadError(pydantic_message(exc), status=422) from None


def _slack_form(body: bytes) -> str:
    """The ``payload`` field of Slack's form body (exactly that one field)."""
    try:
        pairs = parse_qsl(
            body.decode("ascii"),
            keep_blank_values=True,
            strict_parsing=True,
            errors="strict",
            max_num_fields=8,
        )
    except ValueError:  # not ASCII, not a form, bad UTF-8 escapes, too many fields
        raise PayloadError("body is not a form with a payload field", status=400) from None
    names = [name for name, _ in pairs]
    if names != ["payload"]:
        raise PayloadError(
            f"the form must hold exactly one field, payload; got {clip(', '.join(names))}",
            status=422,
        )
    return pairs[0][1]


def _slack_heal(action: SlackAction) -> tuple[str, Decision]:
    decision = _SLACK_DECISIONS.get(action.action_id)
    if decision is None:
        raise PayloadError(f"action_id {clip(action.action_id)!r} is not healer's", status=422)
    value = (action.value or "").strip()
    if value.startswith("{"):
        carried = decode_json(value.encode())
        heal_id = carried.get("heal_id") if isinstance(carried, dict) else None
        said = carried.get("decision", decision) if isinstance(carried, dict) else None
        if not isinstance(heal_id, str) or said != decision:
            raise PayloadError("the button's value does not name a heal and its decision", 422)
        value = heal_id
    if not value or len(value) > _ID_MAX:
        raise PayloadError("the button's value names no heal", status=422)
    return value, decision


def _slack_identity(payload: SlackPayload) -> str:
    user = payload.user
    team = user.team_id or (payload.team.id if payload.team else None) or "?"
    name = user.username or user.name or user.id
    return f"{name} (Slack user {user.id}, team {team})"


def _mattermost_identity(action: MattermostAction) -> str:
    name = f"@{action.user_name}" if action.user_name else action.user_id
    return f"{name} (Mattermost user {action.user_id})"


async def _decide(
    svc: Services,
    heal_id: str,
    decision: Decision,
    by: str,
    via: Literal["slack", "mattermost"],
    token: str | None,
) -> dict[str, Any]:
    state = await decide(svc, heal_id, decision, by=by, via=via, token=token)
    log.info("heal decided", heal_id=heal_id, decision=decision, by=by, via=via)
    return state


def _refused(exc: PayloadError, platform: str) -> tuple[JSONResponse, int]:
    log.warning("chat callback refused", platform=platform, status=exc.status, error=exc.message)
    return JSONResponse({"error": exc.message}, status_code=exc.status), exc.status


async def _counted(
    request: Request,
    platform: str,
    answer: Callable[[Request, Services], Awaitable[tuple[JSONResponse, int]]],
) -> JSONResponse:
    """``answer``'s response, counted in ``healer_chat_callbacks_total`` by its status:
    decided, refused (signature, timestamp, token, not configured), not_awaiting (unknown
    or already decided: a double click), invalid (a malformed request) or unavailable."""
    svc = services(request)
    response, status = await answer(request, svc)
    result = _RESULTS.get(status, "invalid")
    svc.metrics.chat_callbacks.labels(platform=platform, result=result).inc()
    return response


_RESULTS = {
    200: "decided",
    401: "refused",
    403: "refused",
    404: "not_awaiting",
    409: "not_awaiting",
    503: "unavailable",
}


_UNAVAILABLE = JSONResponse({"error": "journal unavailable, retry later"}, status_code=503)
_COMMON: dict[int | str, dict[str, Any]] = {
    400: {"description": "not a well-formed body"},
    413: {"description": "body over the limit"},
    415: {"description": "wrong content type"},
    422: {"description": "not a healer button's callback"},
    503: {"description": "journal unavailable"},
}


@router.post(
    "/api/v1/integrations/slack",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {_FORM: {"schema": SlackForm.model_json_schema()}},
        }
    },
    responses={
        200: {"description": "decided"},
        401: {"description": "signature or timestamp missing, wrong, too old or in the future"},
        403: {"description": "the Slack integration is not configured"},
        404: {"description": "no such heal awaiting approval"},
        409: {"description": "already decided"},
        **_COMMON,
    },
)
async def slack_action(request: Request) -> JSONResponse:
    """Slack interactivity: an approve/reject button clicked in a healer message."""
    return await _counted(request, "slack", _slack)


async def _slack(request: Request, svc: Services) -> tuple[JSONResponse, int]:
    secret = svc.secrets.slack_signing_secret
    if secret is None:
        return _refused(PayloadError("the Slack integration is not configured", 403), "slack")
    try:
        body = await read_body(request, _SLACK_BODY_LIMIT, _FORM, "a Slack payload")
        verify_slack(
            secret,
            request.headers.get("x-slack-request-timestamp"),
            request.headers.get("x-slack-signature"),
            body,
            time.time(),
        )
        payload = _validated(SlackPayload, decode_json(_slack_form(body).encode()))
        heal_id, decision = _slack_heal(payload.actions[0])
    except PayloadError as exc:
        return _refused(exc, "slack")
    by = _slack_identity(payload)
    try:
        state = await _decide(svc, heal_id, decision, by, "slack", None)
    except ApprovalError as exc:
        log.info("chat decision refused", platform="slack", heal_id=heal_id, status=exc.status)
        # Decided elsewhere (the API, Mattermost, another click): the message says so.
        text = f":information_source: {exc.message}"
        update = _slack_update(svc, payload.response_url, text) if exc.status == 409 else None
        answer = JSONResponse({"error": exc.message}, status_code=exc.status, background=update)
        return answer, exc.status
    except JournalUnavailable:
        return _UNAVAILABLE, 503
    update = _slack_update(svc, payload.response_url, _decided_text(state, heal_id, by))
    return JSONResponse(state, background=update), 200


def _slack_update(svc: Services, url: str | None, text: str) -> BackgroundTask | None:
    """Replace the clicked message (its buttons go; it says who decided) through the
    click's ``response_url``, after the answer: only a URL under one of
    ``integrations.slack.response_urls`` (Slack's own, by default) is ever called."""
    slack = svc.config.integrations.slack
    if url is None or slack is None or not allowed_response_url(url, slack.response_urls):
        return None
    return BackgroundTask(_post_update, svc.http, url, {"replace_original": True, "text": text})


def allowed_response_url(url: str, prefixes: list[str]) -> bool:
    """Whether ``url`` is under one of ``prefixes``: the same scheme and host (port and
    user info included: any difference refuses), its path under the prefix's."""
    try:
        got = urlsplit(url)
    except ValueError:
        return False
    for prefix in prefixes:
        want = urlsplit(prefix)
        if (got.scheme, got.netloc) == (want.scheme, want.netloc) and got.path.startswith(
            want.path
        ):
            return True
    return False


async def _post_update(http: httpx.AsyncClient, url: str, body: dict[str, Any]) -> None:
    host = urlsplit(url).netloc  # the path is a capability: never logged
    try:
        resp = await http.post(url, json=body, timeout=_SLACK_UPDATE_TIMEOUT)
    except httpx.HTTPError as exc:
        log.warning("slack message not updated", host=host, error=type(exc).__name__)
        return
    if resp.status_code != 200:
        log.warning("slack message not updated", host=host, status=resp.status_code)


def _decided_text(state: dict[str, Any], heal_id: str, by: str) -> str:
    done = "approved" if state.get("decision") == "approve" else "rejected"
    mark = ":white_check_mark:" if done == "approved" else ":no_entry_sign:"
    return f"{mark} heal `{heal_id}` {done} by {by}"


def _mattermost_update(state: dict[str, Any], heal_id: str, by: str) -> dict[str, Any]:
    done = "approved" if state.get("decision") == "approve" else "rejected"
    text = _decided_text(state, heal_id, by)
    # props replaced: the buttons go, so nobody clicks a decided heal again.
    return {"update": {"message": text, "props": {}}, "ephemeral_text": f"You {done} it."}


@router.post(
    "/api/v1/integrations/mattermost",
    openapi_extra=json_body(MattermostAction),
    responses={
        200: {"description": "decided, or why not (ephemeral_text): unknown or already decided"},
        403: {"description": "the token is not this heal's"},
        **_COMMON,
    },
)
async def mattermost_action(request: Request) -> JSONResponse:
    """Mattermost interactive message button: approve/reject a heal with its token."""
    return await _counted(request, "mattermost", _mattermost)


async def _mattermost(request: Request, svc: Services) -> tuple[JSONResponse, int]:
    try:
        data = decode_json(await read_json_body(request, _MATTERMOST_BODY_LIMIT))
        action = _validated(MattermostAction, data)
    except PayloadError as exc:
        return _refused(exc, "mattermost")
    ctx = action.context
    by = _mattermost_identity(action)
    try:
        state = await _decide(svc, ctx.heal_id, ctx.decision, by, "mattermost", ctx.token)
    except ApprovalError as exc:
        log.info(
            "chat decision refused", platform="mattermost", heal_id=ctx.heal_id, status=exc.status
        )
        if exc.status in (404, 409):  # a double click, a decided heal: tell the clicker
            return JSONResponse({"ephemeral_text": exc.message}), exc.status
        body = {"error": exc.message, "ephemeral_text": exc.message}
        return JSONResponse(body, exc.status), exc.status
    except JournalUnavailable:
        return _UNAVAILABLE, 503
    return JSONResponse(_mattermost_update(state, ctx.heal_id, by)), 200
