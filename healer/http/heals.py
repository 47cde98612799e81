"""Manual triggers and heal history.

``POST /api/v1/heals`` takes a rule name plus labels (the rule's matchers must
accept them) or a handler plus params, and runs through the same path as an
alert: params validation, check, allowlist, dry-run, target lock, act, verify.
``GET /api/v1/heals`` lists heals newest first; ``GET /api/v1/heals/{id}`` shows
one with its full timeline.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, model_validator

from healer.bounded import clip
from healer.docker_config import ENGINE_NAME
from healer.errors import JournalUnavailable, PayloadError
from healer.executor import HealJob
from healer.http.auth import require_admin
from healer.http.body import read_json_body
from healer.http.schema import json_body
from healer.outcomes import Outcome, Phase
from healer.payload import LabelName, Text, pydantic_message
from healer.redact import redact_data
from healer.services import Services, services
from healer.store import HealPlan
from healer.strictjson import decode_json
from healer.templating import placeholder_params

router = APIRouter(tags=["heals"])

_MANUAL_BODY_LIMIT = 64 * 1024


class VerifyOverride(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: Text | None = None
    stable_for: float | None = Field(default=None, ge=0, le=86400)
    timeout: float | None = Field(default=None, gt=0, le=86400)


class ManualHeal(BaseModel):
    """Either ``rule`` (+ ``labels``) or ``handler`` (+ ``params``)."""

    # The one-of rule below, in the OpenAPI document too (for /docs and schema fuzzers).
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {
                    "required": ["rule"],
                    "properties": {
                        "rule": {"type": "string"},
                        "handler": {"type": "null"},
                        "params": {"type": "null"},
                    },
                },
                {
                    "required": ["handler"],
                    "properties": {"handler": {"type": "string"}, "rule": {"type": "null"}},
                },
            ]
        },
    )
    rule: StrictStr | None = None
    handler: StrictStr | None = None
    labels: dict[LabelName, Text] = Field(default_factory=dict)
    annotations: dict[Text, Text] = Field(default_factory=dict)
    params: dict[str, Any] | None = None
    # The Docker engine (docker.engines) the handler acts on; a rule brings its own.
    engine: StrictStr | None = Field(default=None, pattern=ENGINE_NAME.pattern)
    verify: VerifyOverride | None = None
    dry_run: bool = False
    reason: StrictStr = Field(default="", max_length=500)

    @model_validator(mode="after")
    def _one_of(self) -> ManualHeal:
        if (self.rule is None) == (self.handler is None):
            raise ValueError("give exactly one of 'rule' or 'handler'")
        if self.rule is not None and self.params is not None:
            raise ValueError("'params' go with 'handler'; a rule brings its own params")
        if self.rule is not None and self.engine is not None:
            raise ValueError("'engine' goes with 'handler'; a rule brings its own engine")
        return self


class Accepted(BaseModel):
    heal_id: str
    status: Literal["pending"]
    url: str


def _plan(svc: Services, req: ManualHeal) -> HealPlan:
    if req.rule is not None:
        rule = svc.rules.get(req.rule)
        if rule is None:
            raise PayloadError(f"unknown rule {clip(req.rule)!r}", status=404)
        misses = [str(m) for m in rule.match.matchers if not m.matches(req.labels)]
        if misses:
            raise PayloadError(f"labels do not match rule {rule.name!r}: {', '.join(misses)}")
        plan = svc.rules.plan(rule, dry_run=req.dry_run)
        verify = svc.rules.verify_spec(rule, req.verify.model_dump() if req.verify else None)
        return HealPlan(plan.rule, plan.handler, plan.params, verify, plan.dry_run)
    assert req.handler is not None
    handler = svc.handlers.get(req.handler)
    if handler is None:
        raise PayloadError(
            f"unknown handler {clip(req.handler)!r} (known: {', '.join(svc.handlers)})"
        )
    params = req.params or {}
    try:
        handler.Params.model_validate(placeholder_params(params))
    except ValidationError as exc:
        raise PayloadError(f"params: {pydantic_message(exc)}") from None
    verify = svc.rules.verify_spec(None, req.verify.model_dump() if req.verify else None)
    if req.engine is not None:
        verify["engine"] = req.engine  # journaled with the heal, as a rule's is
    return HealPlan(None, req.handler, params, verify, req.dry_run or svc.config.dry_run)


@router.post(
    "/api/v1/heals",
    status_code=202,
    response_model=Accepted,
    openapi_extra=json_body(ManualHeal),
    responses={
        400: {"description": "not JSON"},
        401: {"description": "admin token missing or wrong"},
        403: {"description": "no admin token configured"},
        404: {"description": "unknown rule"},
        413: {"description": "body over 64 KiB"},
        415: {"description": "not application/json"},
        422: {"description": "invalid request"},
        503: {"description": "journal unavailable"},
    },
)
async def trigger_heal(request: Request) -> JSONResponse:
    """Start a heal by hand (admin token). Follow it at the returned ``url``."""
    svc = services(request)
    require_admin(request, svc.secrets)
    try:
        data = decode_json(await read_json_body(request, _MANUAL_BODY_LIMIT))
        try:
            req = ManualHeal.model_validate(data)
        except ValidationError as exc:
            raise PayloadError(pydantic_message(exc)) from None
        plan = _plan(svc, req)
    except PayloadError as exc:
        return JSONResponse({"error": exc.message}, status_code=exc.status)
    labels = dict(req.labels)
    try:
        heal_id = await svc.journal.create_manual_heal(plan, labels, dict(req.annotations))
        if req.reason:
            await svc.journal.add_event(heal_id, "pending", "note", {"reason": req.reason})
    except JournalUnavailable:
        return JSONResponse({"error": "journal unavailable, retry later"}, status_code=503)
    svc.executor.submit(
        HealJob(
            heal_id=heal_id,
            rule=plan.rule,
            handler=plan.handler,
            params=plan.params,
            verify=plan.verify,
            dry_run=plan.dry_run,
            labels=labels,
            annotations=dict(req.annotations),
        )
    )
    return JSONResponse(
        {"heal_id": heal_id, "status": "pending", "url": f"/api/v1/heals/{heal_id}"},
        status_code=202,
    )


@router.get("/api/v1/heals")
async def list_heals(
    request: Request,
    rule: str | None = None,
    outcome: Outcome | None = None,
    target: str | None = Query(default=None, description="e.g. docker:web-1"),
    limit: int = Query(default=50, ge=1, le=500),
    before: float | None = Query(default=None, description="page: next_before of the last page"),
    phase: Phase | None = None,
    since: float | None = Query(
        default=None, description="only heals created at or after this time (epoch seconds)"
    ),
) -> dict[str, Any]:
    """Heals, newest first, filterable by rule, outcome, target, phase and time."""
    svc = services(request)
    require_admin(request, svc.secrets, reading=True)
    heals = await svc.journal.list_heals(
        rule=rule,
        outcome=outcome,
        target=target,
        limit=limit,
        before=before,
        phase=phase,
        since=since,
    )
    next_before = heals[-1]["created_at"] if len(heals) == limit else None
    return {"heals": redact_data(heals), "next_before": next_before}


@router.get("/api/v1/heals/{heal_id}", responses={404: {"description": "no such heal"}})
async def get_heal(request: Request, heal_id: str) -> dict[str, Any]:
    """One heal with its timeline: match, check evidence, action, every verify sample."""
    svc = services(request)
    require_admin(request, svc.secrets, reading=True)
    heal = await svc.journal.get_heal(heal_id)
    if heal is None:
        raise HTTPException(404, detail=f"no heal {clip(heal_id)!r}")
    # Labels and params are stored as received (a restart re-runs them); what is shown
    # has every password masked.
    return dict(redact_data(heal))
