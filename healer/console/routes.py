"""The console's pages (GET): heals, one heal, rules, pause and circuits, login; and the
static files. The forms that change things are in actions.py, included here.

Every page reads through the same services as the API and shows what it shows (redacted).
Without the right to read (an admin token is configured and there is no login) a page
sends the browser to /ui/login.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response

from healer.console import actions
from healer.console.access import Access, reader
from healer.console.render import error_page, page, secured, see_other, static_file
from healer.console.svg import verify_chart
from healer.console.views import SINCE, HealFilters, heal_list, rule_summaries, timeline
from healer.outcomes import Outcome
from healer.redact import redact_data
from healer.services import services

router = APIRouter(prefix="/ui", include_in_schema=False)
router.include_router(actions.router)


Context = Callable[[Access], Awaitable[dict[str, Any] | Response]]
"""What one page shows (or an error page), for a reader with this access."""


async def _show(request: Request, template: str, context: Context) -> Response:
    """The page, or /ui/login (keeping where to come back to) for a reader who must log
    in first. Every page shows the pause banner."""
    access = reader(request)
    if access is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return see_other(f"/ui/login?next={quote(target, safe='')}")
    shown = await context(access)
    if isinstance(shown, Response):
        return shown
    pause = await services(request).gates.pause_state()
    return page(request, template, {"pause": pause, **shown}, access=access)


@router.get("")
@router.get("/heals")
async def heals_page(request: Request) -> Response:
    async def context(access: Access) -> dict[str, Any] | Response:
        svc = services(request)
        try:
            filters = HealFilters.parse(request.query_params)
        except ValueError as exc:
            return error_page(request, 400, str(exc), access)
        heals, older = await heal_list(svc, filters, now=time.time())
        return {
            "heals": heals,
            "older": older,
            "filters": filters,
            "rules": [r.name for r in svc.config.rules],
            "outcomes": [o.value for o in Outcome],
            "since_choices": list(SINCE),
            "live": any(h["outcome"] is None for h in heals),
        }

    return await _show(request, "heals.html", context)


@router.get("/heals/{heal_id}")
async def heal_page(request: Request, heal_id: str) -> Response:
    async def context(access: Access) -> dict[str, Any] | Response:
        heal = await services(request).journal.get_heal(heal_id)
        if heal is None:
            return error_page(request, 404, f"no heal {heal_id[:64]!r}", access)
        shown = redact_data(dict(heal))
        steps, samples = timeline(shown)
        return {
            "heal": shown,
            "steps": steps,
            "chart": verify_chart(samples),
            "live": shown["outcome"] is None,
        }

    return await _show(request, "heal.html", context)


@router.get("/rules")
async def rules_page(request: Request) -> Response:
    async def context(access: Access) -> dict[str, Any]:
        return {"rules": await rule_summaries(services(request))}

    return await _show(request, "rules.html", context)


@router.get("/safety")
async def safety_page(request: Request) -> Response:
    async def context(access: Access) -> dict[str, Any]:
        svc = services(request)
        return {
            "circuits": await svc.gates.circuits(include_closed=True),
            "max_pause": svc.config.safety.max_pause,
        }

    return await _show(request, "safety.html", context)


@router.get("/login")
async def login_page(request: Request) -> Response:
    svc = services(request)
    access = reader(request) if svc.secrets.admin_token is None else None
    return page(
        request,
        "login.html",
        {
            "next": actions.safe_next(request.query_params.get("next")),
            "error": None,
            "locked": svc.secrets.admin_token is not None,
        },
        access=access,
    )


@router.get("/static/{name}")
async def static(request: Request, name: str) -> Response:
    found = static_file(name)
    return found if found is not None else secured(Response("not found", status_code=404))
