"""Reading request bodies with a hard size cap (413 instead of unbounded memory)."""

from __future__ import annotations

from fastapi import Request
from starlette.requests import ClientDisconnect

from healer.bounded import clip
from healer.errors import PayloadError

CLIENT_CLOSED = 499
"""The status counted (and logged) for a request whose client left mid-body."""


async def read_json_body(request: Request, limit: int) -> bytes:
    return await read_body(request, limit, "application/json", "a JSON object")


async def read_body(
    request: Request, limit: int, content_type: str, what: str, *, allow_empty: bool = False
) -> bytes:
    """The raw body of a ``content_type`` request (no content type: assumed), at most
    ``limit`` bytes; PayloadError 415 / 413 / 499 / 400 (empty, unless ``allow_empty``:
    ``what`` was expected)."""
    ctype = request.headers.get("content-type", content_type).split(";")[0].strip()
    if ctype.lower() != content_type:
        raise PayloadError(f"content type must be {content_type}, got {clip(ctype)!r}", status=415)
    declared = request.headers.get("content-length", "")
    # ASCII digits only ("²".isdigit() is True); a length int() would refuse is over anyway.
    if declared.isascii() and declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
        raise PayloadError(
            f"body of {clip(declared, 20)} bytes is over the {limit}-byte limit", status=413
        )
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadError(f"body is over the {limit}-byte limit", status=413)
            chunks.append(chunk)
    except ClientDisconnect:
        # Nobody is left to answer: nginx's 499 keeps it apart from healer's own 5xx.
        raise PayloadError(
            f"client disconnected after {size} body bytes", status=CLIENT_CLOSED
        ) from None
    body = b"".join(chunks)
    if not body and not allow_empty:
        raise PayloadError(f"empty body: expected {what}", status=400)
    return body
