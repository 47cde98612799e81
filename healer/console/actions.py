"""The console's forms (POST): login, logout, pause, resume, close circuits, approve and
reject. Each change needs a login session and its CSRF token (healer/console/access.py);
each goes through the function the API uses (healer/http/controls.py pause_healing,
SafetyGates.close, healer/approvals.py decide), then back to the page (303).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl, quote

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from healer.approvals import ApprovalError, Decision, decide
from healer.console.access import Access, Form, Refused, actor, reader
from healer.console.render import error_page, page, see_other
from healer.console.session import Session, clear_session_cookie, set_session_cookie
from healer.errors import JournalUnavailable, PayloadError
from healer.http.auth import is_admin_token
from healer.http.body import read_body
from healer.http.controls import no_open_circuit, pause_healing
from healer.services import services

router = APIRouter()

_MAX_FIELD = 2000
_BODY_LIMIT = 16 * 1024
_FORM = "application/x-www-form-urlencoded"


def safe_next(value: str | None) -> str:
    """Where to go after logging in: a console path, never another site."""
    if value and value.startswith("/ui") and not value.startswith("//") and "\\" not in value:
        return value
    return "/ui"


def _field(form: Form, name: str) -> str:
    return form.get(name, "").strip()[:_MAX_FIELD]


async def _form(request: Request) -> Form:
    """The posted form (urlencoded, as a browser sends it), its body capped like the API's:
    PayloadError 413 / 415 / 400."""
    body = await read_body(request, _BODY_LIMIT, _FORM, "a form", allow_empty=True)
    try:
        pairs = parse_qsl(body.decode(), max_num_fields=20, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise PayloadError("not a form: expected UTF-8 urlencoded fields", status=400) from None
    return dict(pairs)


def reader_or_none(request: Request) -> Access | None:
    """The reader's access for an error page's menu (None: show no session)."""
    try:
        return reader(request)
    except HTTPException:  # a wrong bearer token
        return None


@router.post("/login")
async def login(request: Request) -> Response:
    svc = services(request)
    if svc.secrets.admin_token is None:
        return error_page(
            request, 403, "no admin token is configured: the console is read-only", None
        )
    try:
        form = await _form(request)
    except PayloadError as exc:
        return error_page(request, exc.status, exc.message, None)
    nxt = safe_next(_field(form, "next"))
    if not is_admin_token(_field(form, "token"), svc.secrets):
        return page(
            request,
            "login.html",
            {"next": nxt, "error": "wrong admin token", "locked": True},
            access=None,
            status=401,
        )
    session = svc.sessions.open(by=_field(form, "name")[:200] or "console")
    response = see_other(nxt)
    set_session_cookie(response, request, session, svc.config.console)
    return response


Change = Callable[[Session, Form], Awaitable[str | Response | None]]
"""One change a form asks for, by a session: the page to go back to (None: the safety
page), or the whole answer."""


async def _change(request: Request, change: Change) -> Response:
    """Run ``change`` for a form with a live session and its CSRF token; an error page for
    a refusal or a failure (with the API's status), else back to the page (303)."""
    try:
        form = await _form(request)
        back = await change(actor(request, form), form)
    except (Refused, PayloadError, ApprovalError) as exc:
        return error_page(request, exc.status, exc.message, reader_or_none(request))
    except JournalUnavailable:
        return error_page(request, 503, "journal unavailable, retry later", None)
    return back if isinstance(back, Response) else see_other(back or "/ui/safety")


@router.post("/logout")
async def logout(request: Request) -> Response:
    async def change(session: Session, form: Form) -> Response:
        svc = services(request)
        svc.sessions.close(session.id)
        response = see_other("/ui/login")
        clear_session_cookie(response, request, svc.config.console)
        return response

    return await _change(request, change)


@router.post("/pause")
async def pause(request: Request) -> Response:
    async def change(session: Session, form: Form) -> None:
        data = {"for": _field(form, "for"), "reason": _field(form, "reason")}
        await pause_healing(services(request), data)

    return await _change(request, change)


@router.post("/resume")
async def resume(request: Request) -> Response:
    async def change(session: Session, form: Form) -> None:
        await services(request).gates.resume()

    return await _change(request, change)


@router.post("/circuits/close")
async def close_circuit(request: Request) -> Response:
    async def change(session: Session, form: Form) -> None:
        rule, target = _field(form, "rule"), _field(form, "target") or None
        closed = await services(request).gates.close(
            rule, target=target, by=f"console:{session.by}"
        )
        if not closed:
            raise PayloadError(no_open_circuit(rule, target), status=404)

    return await _change(request, change)


async def _decide(request: Request, heal_id: str, decision: Decision) -> Response:
    async def change(session: Session, form: Form) -> str:
        comment = _field(form, "comment") or None
        svc = services(request)
        await decide(svc, heal_id, decision, by=session.by, via="console", comment=comment)
        return f"/ui/heals/{quote(heal_id, safe='')}"

    return await _change(request, change)


@router.post("/heals/{heal_id}/approve")
async def approve(request: Request, heal_id: str) -> Response:
    return await _decide(request, heal_id, "approve")


@router.post("/heals/{heal_id}/reject")
async def reject(request: Request, heal_id: str) -> Response:
    return await _decide(request, heal_id, "reject")
