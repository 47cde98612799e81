"""Pause / maintenance mode and circuits, for humans (and ``healer pause`` / ``healer
circuits``). Changing anything needs the admin token; reading needs it when one is set.

``POST /api/v1/pause`` ``{"for": "30m", "reason": "deploy"}`` pauses every heal (they end
``suppressed``, alerts are still journaled) until the pause expires or
``DELETE /api/v1/pause`` ends it; ``GET /api/v1/pause`` shows it.
``GET /api/v1/circuits`` lists open circuits (``?all=true``: closed ones too);
``DELETE /api/v1/circuits/{rule}?target=docker:web-1`` closes them.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from healer.bounded import clip
from healer.errors import JournalUnavailable, PayloadError
from healer.gates import PauseView
from healer.http.auth import require_admin
from healer.http.body import read_json_body
from healer.http.schema import json_body
from healer.payload import pydantic_message
from healer.services import Services, services
from healer.strictjson import decode_json
from healer.timefmt import format_seconds
from healer.units import Duration

router = APIRouter(tags=["safety"])

_BODY_LIMIT = 16 * 1024
_UNAVAILABLE = JSONResponse({"error": "journal unavailable, retry later"}, status_code=503)


class PauseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    duration: Duration = Field(alias="for", gt=0)
    reason: StrictStr = Field(default="", max_length=500)


@router.post(
    "/api/v1/pause",
    openapi_extra=json_body(PauseRequest),
    responses={
        400: {"description": "not JSON"},
        401: {"description": "admin token missing or wrong"},
        413: {"description": "body too large"},
        415: {"description": "not application/json"},
        403: {"description": "no admin token configured"},
        422: {"description": "no or bad duration"},
        503: {"description": "journal unavailable"},
    },
)
async def pause(request: Request) -> JSONResponse:
    """Pause healing for ``for`` (e.g. "30m", at most ``safety.max_pause``)."""
    svc = services(request)
    require_admin(request, svc.secrets)
    try:
        data = decode_json(await read_json_body(request, _BODY_LIMIT))
        state = await pause_healing(svc, data)
    except PayloadError as exc:
        return JSONResponse({"error": exc.message}, status_code=exc.status)
    except JournalUnavailable:
        return _UNAVAILABLE
    return JSONResponse({"paused": True, **state})


async def pause_healing(svc: Services, data: Any) -> PauseView:
    """Pause as ``data`` (``{"for": "30m", "reason": "deploy"}``) asks, within
    ``safety.max_pause``: the API's body and the console's form. Raises PayloadError
    (422) for a bad request, JournalUnavailable."""
    try:
        req = PauseRequest.model_validate(data)
    except ValidationError as exc:
        raise PayloadError(pydantic_message(exc)) from None
    limit = svc.config.safety.max_pause
    if req.duration > limit:
        raise PayloadError(f"for: at most {format_seconds(limit)} (safety.max_pause)")
    return await svc.gates.pause(req.duration, req.reason)


@router.delete("/api/v1/pause", responses={401: {}, 403: {}, 503: {}})
async def resume(request: Request) -> JSONResponse:
    """End the pause now. ``was`` is the pause that was active (null if none)."""
    svc = services(request)
    require_admin(request, svc.secrets)
    try:
        was = await svc.gates.resume()
    except JournalUnavailable:
        return _UNAVAILABLE
    return JSONResponse({"paused": False, "was": was})


@router.get("/api/v1/pause")
async def pause_state(request: Request) -> dict[str, Any]:
    """Whether healing is paused, until when and why."""
    svc = services(request)
    require_admin(request, svc.secrets, reading=True)
    state = await svc.gates.pause_state()
    return {"paused": True, **state} if state is not None else {"paused": False}


@router.get("/api/v1/circuits")
async def list_circuits(
    request: Request,
    all: bool = Query(default=False, description="closed ones too"),
) -> dict[str, Any]:
    """Open circuits (rule + target), why they opened, who was told, when they close."""
    svc = services(request)
    require_admin(request, svc.secrets, reading=True)
    return {"circuits": await svc.gates.circuits(include_closed=all)}


@router.delete(
    "/api/v1/circuits/{rule}",
    responses={401: {}, 403: {}, 404: {"description": "no open circuit matches"}, 503: {}},
)
async def close_circuits(
    request: Request,
    rule: str,
    target: str | None = Query(default=None, description="e.g. docker:web-1"),
) -> JSONResponse:
    """Close the rule's open circuits (all targets, or ``target``): healing resumes with a
    fresh budget."""
    svc = services(request)
    require_admin(request, svc.secrets)
    try:
        closed = await svc.gates.close(rule, target=target, by="api")
    except JournalUnavailable:
        return _UNAVAILABLE
    if not closed:
        return JSONResponse({"error": no_open_circuit(rule, target)}, status_code=404)
    return JSONResponse({"closed": closed})


def no_open_circuit(rule: str, target: str | None) -> str:
    """What closing circuits that are not open answers (the API's 404, the console's)."""
    where = f" on {clip(target)}" if target else ""
    return f"no open circuit for rule {clip(rule)!r}{where}"
