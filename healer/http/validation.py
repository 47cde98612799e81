"""FastAPI's own 422 (a path or query parameter of the wrong type or value), without the
unbounded echo: its default answer quotes each offending ``input`` whole. Same shape
(``{"detail": [{"loc", "msg", "type"}]}``, as the OpenAPI document says), values clipped.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from healer.bounded import clip

_ERRORS_SHOWN = 5


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    detail = [
        {
            "type": err["type"],
            "loc": [clip(part) if isinstance(part, str) else part for part in err["loc"]],
            "msg": clip(str(err["msg"])),
        }
        for err in exc.errors()[:_ERRORS_SHOWN]
    ]
    return JSONResponse({"detail": detail}, status_code=422)
