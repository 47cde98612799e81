"""Approving or rejecting a heal that waits for a human (``mode: approve``), with the
admin token: ``POST /api/v1/heals/{id}/approve`` and ``POST /api/v1/heals/{id}/reject``,
JSON ``{"by": "alice", "comment": "go"}`` (``healer approve ID`` / ``healer reject ID``
send ``"via": "cli"``). The answer is the heal's approval state; 404: no such heal, or
one that never asked; 409: already decided (by a human, the deadline or the alert's
resolve) or ended. The heal waiting for it (on any replica) goes on: after an approval
it checks again and acts only on the approved targets.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from healer.approvals import ApprovalError, Decision, decide
from healer.errors import JournalUnavailable, PayloadError
from healer.http.auth import require_admin
from healer.http.body import read_json_body
from healer.http.schema import json_body
from healer.payload import pydantic_message
from healer.services import services
from healer.strictjson import decode_json

router = APIRouter(tags=["approvals"])

_BODY_LIMIT = 16 * 1024


class DecisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    by: StrictStr = Field(min_length=1, max_length=200)
    comment: StrictStr | None = Field(default=None, max_length=2000)
    via: Literal["api", "cli"] = "api"


_RESPONSES: dict[int | str, dict[str, str]] = {
    400: {"description": "not JSON"},
    401: {"description": "admin token missing or wrong"},
    403: {"description": "no admin token configured"},
    404: {"description": "no such heal, or it never asked for approval"},
    409: {"description": "already decided, expired, or the heal ended"},
    413: {"description": "body too large"},
    415: {"description": "not application/json"},
    422: {"description": "invalid request (by is required)"},
    503: {"description": "journal unavailable"},
}


async def _decide(request: Request, heal_id: str, decision: Decision) -> JSONResponse:
    svc = services(request)
    require_admin(request, svc.secrets)
    try:
        data = decode_json(await read_json_body(request, _BODY_LIMIT))
        try:
            req = DecisionRequest.model_validate(data)
        except ValidationError as exc:
            raise PayloadError(pydantic_message(exc)) from None
    except PayloadError as exc:
        return JSONResponse({"error": exc.message}, status_code=exc.status)
    try:
        state = await decide(svc, heal_id, decision, by=req.by, via=req.via, comment=req.comment)
    except ApprovalError as exc:
        return JSONResponse({"error": exc.message}, status_code=exc.status)
    except JournalUnavailable:
        return JSONResponse({"error": "journal unavailable, retry later"}, status_code=503)
    return JSONResponse(state)


@router.post(
    "/api/v1/heals/{heal_id}/approve",
    openapi_extra=json_body(DecisionRequest),
    responses=_RESPONSES,
)
async def approve(request: Request, heal_id: str) -> JSONResponse:
    """Approve a heal awaiting approval: it checks again, then acts on the approved
    targets (through the safety gates as usual)."""
    return await _decide(request, heal_id, "approve")


@router.post(
    "/api/v1/heals/{heal_id}/reject",
    openapi_extra=json_body(DecisionRequest),
    responses=_RESPONSES,
)
async def reject(request: Request, heal_id: str) -> JSONResponse:
    """Reject a heal awaiting approval: it ends ``rejected`` without acting."""
    return await _decide(request, heal_id, "reject")
