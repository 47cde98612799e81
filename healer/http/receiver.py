"""Where an alert enters: ``POST /api/v1/alerts``, Alertmanager's webhook.

The answer comes only after every alert of the group is durably journaled, and
never waits for a handler:

* 200 with what was started, ignored, duplicate or resolved;
* 4xx when the request itself is bad (Alertmanager does not retry those);
* 503 when the journal could not store the alerts, so Alertmanager retries and
  nothing is lost.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import structlog
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from healer.errors import JournalBroken, JournalUnavailable, PayloadError
from healer.executor import HealJob
from healer.http.auth import require_webhook_auth
from healer.http.body import read_json_body
from healer.http.schema import json_body
from healer.payload import WebhookMessage, parse_webhook
from healer.services import Services, services

log = structlog.get_logger("healer.receiver")


def mount(app: FastAPI) -> None:
    """The webhook's route, on the app itself and before any other: the hot path is
    matched first, without an included router's indirection (FastAPI matches included
    routers through a wrapper per router: ~15 us a post)."""
    app.add_api_route(
        "/api/v1/alerts",
        receive_alerts,
        methods=["POST"],
        tags=["webhook"],
        openapi_extra=json_body(WebhookMessage),
        responses={
            200: {"description": "alerts journaled; heals started in the background"},
            400: {"description": "not JSON"},
            401: {"description": "missing or wrong credentials"},
            413: {"description": "body over the limit"},
            415: {"description": "not application/json"},
            422: {"description": "not an Alertmanager v4 payload"},
            503: {"description": "journal unavailable: retry"},
        },
    )


async def receive_alerts(request: Request) -> JSONResponse:
    """Alertmanager webhook receiver (payload version "4")."""
    arrived = time.time()
    svc = services(request)
    status = 500
    try:
        response = await _receive(request, svc, arrived)
        status = response.status_code
        return response
    except HTTPException as exc:
        status = exc.status_code
        raise
    finally:
        svc.metrics.webhook_answered(status)


async def _receive(request: Request, svc: Services, arrived: float) -> JSONResponse:
    require_webhook_auth(request, svc.secrets)
    try:
        body = await read_json_body(request, svc.config.webhook.max_body)
        message = parse_webhook(body)
    except PayloadError as exc:
        log.warning("webhook rejected", status=exc.status, error=exc.message)
        return JSONResponse({"error": exc.message}, status_code=exc.status)
    alerts = message.alerts
    try:
        dispositions = await svc.journal.ingest(
            alerts, svc.rules.plan_for, body=body.decode(), received_at=arrived
        )
    except JournalUnavailable as exc:
        if not isinstance(exc, JournalBroken):  # that one is logged once, by the journal
            log.error("journal unavailable; asking Alertmanager to retry", error=str(exc))
        return JSONResponse({"error": "journal unavailable, retry later"}, status_code=503)

    started: list[dict[str, Any]] = []
    ignored: list[dict[str, Any]] = []
    duplicates: list[dict[str, Any]] = []
    resolved: list[dict[str, Any]] = []
    firing = 0
    resent: list[str | None] = []  # heals whose firing alert came again
    for parsed, d in zip(alerts, dispositions, strict=True):
        firing += parsed.status == "firing"
        if d.status == "ignored":
            ignored.append({"fingerprint": d.fingerprint, "reason": d.reason})
        elif d.status == "duplicate":
            duplicates.append({"fingerprint": d.fingerprint, "heal_id": d.heal_id})
            if parsed.status == "firing":
                resent.append(d.heal_id)
        elif d.status == "resolved":
            resolved.append({"fingerprint": d.fingerprint})
            svc.executor.alert_resolved(parsed.fingerprint, parsed.starts_at)
        elif d.plan is not None and d.heal_id is not None:  # started
            alert = parsed.to_alert()
            svc.executor.submit(
                HealJob(
                    heal_id=d.heal_id,
                    rule=d.plan.rule,
                    handler=d.plan.handler,
                    params=d.plan.params,
                    verify=d.plan.verify,
                    dry_run=d.plan.dry_run,
                    alert=alert,
                    labels=alert.labels,
                    annotations=alert.annotations,
                )
            )
            started.append({"fingerprint": d.fingerprint, "heal_id": d.heal_id, "rule": d.rule})
            log.info(
                "heal started",
                heal_id=d.heal_id,
                rule=d.rule,
                handler=d.plan.handler,
                fingerprint=d.fingerprint,
                alertname=alert.name,
            )
    if resent:  # what follows a not_recovered heal is decided in the background
        svc.followups.duplicates(resent)
    for status, count in (("firing", firing), ("resolved", len(alerts) - firing)):
        if count:
            svc.metrics.alerts_by_status[status].inc(count)
    log.log(
        logging.DEBUG if svc.config.log.requests == "debug" else logging.INFO,
        "webhook accepted",
        alerts=len(alerts),
        started=len(started),
        duplicates=len(duplicates),
        receiver=message.receiver,
    )
    return JSONResponse(
        {
            "accepted": len(alerts),
            "started": started,
            "ignored": ignored,
            "duplicates": duplicates,
            "resolved": resolved,
        },
        status_code=200,
    )
