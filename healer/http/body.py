"""Reading request bodies with a hard size cap (413 instead of unbounded memory)."""

from __future__ import annotations

from fastapi import Request

from healer.errors import PayloadError


async def read_json_body(request: Request, limit: int) -> bytes:
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if ctype.lower() != "application/json":
        raise PayloadError(f"content type must be application/json, got {ctype!r}", status=415)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadError(f"body of {declared} bytes is over the {limit}-byte limit",
                           status=413)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadError(f"body is over the {limit}-byte limit", status=413)
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body:
        raise PayloadError("empty body: expected a JSON object", status=400)
    return body
