"""Who may read and who may change things through the console.

Reading follows the API (healer/http/auth.py ``require_admin(reading=True)``): open when
no admin token is configured, else a login session (or the admin token as a bearer
header, as the API takes it). Changing anything needs a login session and its CSRF token
in the form; with no admin token configured every change is refused (403), as the API
refuses manual actions.

Usage::

    access = reader(request)            # None: not logged in, send to /ui/login
    session = actor(request, form)      # raises Refused(401 / 403)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fastapi import Request

from healer.console.session import COOKIE, Session
from healer.http.auth import require_admin
from healer.services import services

Form = Mapping[str, str]
"""A posted form's fields (healer/console/actions.py reads them, capped)."""


@dataclass(frozen=True, slots=True)
class Access:
    session: Session | None  # a login: its forms carry session.csrf
    locked: bool  # an admin token is configured (so there is a login)

    @property
    def can_act(self) -> bool:
        return self.session is not None


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def reader(request: Request) -> Access | None:
    """This request's right to read, or None when it must log in first. A wrong bearer
    token raises the API's 401."""
    svc = services(request)
    if svc.secrets.admin_token is None:
        return Access(session=None, locked=False)
    session = svc.sessions.get(request.cookies.get(COOKIE))
    if session is not None:
        return Access(session=session, locked=True)
    if request.headers.get("authorization"):
        require_admin(request, svc.secrets, reading=True)
        return Access(session=None, locked=True)
    return None


def actor(request: Request, form: Form) -> Session:
    """The session allowed to submit ``form``, or Refused: 403 without an admin token
    configured, without a CSRF token or with another than the session's; 401 without a
    live session."""
    svc = services(request)
    if svc.secrets.admin_token is None:
        raise Refused(403, "changes are disabled: set HEALER_ADMIN_TOKEN or admin.token_file")
    token = form.get("csrf")
    if not token:
        raise Refused(403, "missing CSRF token: reload the page and try again")
    session = svc.sessions.get(request.cookies.get(COOKIE))
    if session is None:
        raise Refused(401, "log in first (or your session expired)")
    if not svc.sessions.csrf_ok(session, token):
        raise Refused(403, "wrong CSRF token: reload the page and try again")
    return session
