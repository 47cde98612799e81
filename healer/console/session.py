"""The console's logins: server-side sessions in memory, their cookie and CSRF tokens.

Usage (healer/console/routes.py and actions.py)::

    session = sessions.open(by="alice")            # after the admin token was checked
    set_session_cookie(response, request, session, config.console)
    session = sessions.get(request.cookies.get(COOKIE))   # None: none, expired, logged out
    sessions.csrf_ok(session, form.get("csrf"))    # constant-time comparison
    sessions.close(session.id)                     # logout: the cookie is dead at once

Why server-side rather than a signed cookie: the cookie is an opaque random value, so
there is nothing to forge or to derive a key for, and logging out (or a restart) ends
the session for real instead of leaving a still-valid signed cookie in some browser.
The cost, shared with a per-process signing key, is that sessions live in one process:
behind a balancer over several replicas, keep a user on one replica (or log in again).
At most ``limit`` sessions are kept; the oldest goes first.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Request, Response

from healer.config import ConsoleConfig

COOKIE = "healer_session"
PATH = "/ui"


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    csrf: str  # carried by every state-changing form of this session
    by: str  # who logged in (as they said): the "by" of their approvals
    expires: float  # clock() time


class ConsoleSessions:
    """The logins of this process. ``clock`` is injectable for tests of expiry."""

    def __init__(
        self, ttl: float, *, limit: int = 1000, clock: Callable[[], float] = time.time
    ) -> None:
        self.ttl = ttl
        self.clock = clock
        self._limit = limit
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def open(self, by: str) -> Session:
        session = Session(
            id=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            by=by,
            expires=self.clock() + self.ttl,
        )
        self._sessions[session.id] = session
        while len(self._sessions) > self._limit:
            self._sessions.popitem(last=False)
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of this cookie value; None when unknown, expired or closed."""
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expires <= self.clock():
            del self._sessions[session_id]
            return None
        return session

    def close(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    @staticmethod
    def csrf_ok(session: Session, token: str | None) -> bool:
        """Whether a form's CSRF token is this session's, in constant time."""
        if not token:
            return False
        return hmac.compare_digest(session.csrf.encode(), token.encode(errors="replace"))


def secure(request: Request, config: ConsoleConfig) -> bool:
    """Whether the cookie needs ``Secure``: an https request (uvicorn reads
    X-Forwarded-Proto from trusted proxies), or the config says so."""
    return config.secure_cookie or request.url.scheme == "https"


def set_session_cookie(
    response: Response, request: Request, session: Session, config: ConsoleConfig
) -> None:
    response.set_cookie(
        COOKIE,
        session.id,
        max_age=int(config.session_ttl),
        path=PATH,
        httponly=True,
        samesite="strict",
        secure=secure(request, config),
    )


def clear_session_cookie(response: Response, request: Request, config: ConsoleConfig) -> None:
    response.delete_cookie(
        COOKIE,
        path=PATH,
        httponly=True,
        samesite="strict",
        secure=secure(request, config),
    )
