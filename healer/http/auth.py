"""Webhook and admin authentication, compared in constant time.

The webhook accepts what Alertmanager's ``http_config`` sends: ``authorization``
(``Authorization: Bearer <token>``) or ``basic_auth``. Admin endpoints take a
separate bearer token. Tokens are compared in constant time (over SHA-256 digests),
only ever read from the ``Authorization`` header (never the query string), and are
never logged or echoed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from fastapi import HTTPException, Request

from healer.config import Secrets


def _bearer(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _basic(request: Request) -> tuple[str, str] | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except ValueError:  # not base64 (binascii.Error), non-ASCII text, not UTF-8 once decoded
        return None
    return (user, password) if sep else None


def _same(given: str, secrets: Secrets, which: str) -> bool:
    # Constant time over digests: not even the length of the secret shows in the timing.
    # The configured secret's digest is computed once (Secrets.digests), the given one per
    # request.
    return hmac.compare_digest(hashlib.sha256(given.encode()).digest(), secrets.digests[which])


def is_admin_token(given: str, secrets: Secrets) -> bool:
    """Whether ``given`` is the configured admin token, in constant time (the console's
    login form); False when none is configured."""
    return secrets.admin_token is not None and _same(given, secrets, "admin_token")


def _unauthorized(detail: str, *, basic: bool = False) -> HTTPException:
    challenge = 'Bearer realm="healer"' + (', Basic realm="healer"' if basic else "")
    return HTTPException(401, detail=detail, headers={"WWW-Authenticate": challenge})


def require_webhook_auth(request: Request, secrets: Secrets) -> None:
    if not secrets.webhook_auth:
        return
    basic_ok = secrets.webhook_basic is not None
    token = _bearer(request)
    if token is not None and secrets.webhook_token is not None:
        if _same(token, secrets, "webhook_token"):
            return
        raise _unauthorized("invalid webhook token", basic=basic_ok)
    basic = _basic(request)
    if basic is not None and secrets.webhook_basic is not None:
        # Evaluate both comparisons: no early exit that would time the username.
        ok_user = _same(basic[0], secrets, "webhook_user")
        ok_pass = _same(basic[1], secrets, "webhook_password")
        if ok_user and ok_pass:
            return
        raise _unauthorized("invalid webhook credentials", basic=basic_ok)
    raise _unauthorized("webhook authentication required", basic=basic_ok)


def require_admin(request: Request, secrets: Secrets, *, reading: bool = False) -> None:
    """Manual triggers always need the admin token; reading history needs it when one is set."""
    if secrets.admin_token is None:
        if reading:
            return
        raise HTTPException(
            403, detail="manual triggers are disabled: set HEALER_ADMIN_TOKEN or admin.token_file"
        )
    token = _bearer(request)
    if token is None:
        raise _unauthorized("admin token required")
    if not _same(token, secrets, "admin_token"):
        raise _unauthorized("invalid admin token")
