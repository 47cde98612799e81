"""Rendering the console's pages: the Jinja2 environment (autoescape always on), the
security headers every /ui answer carries, and the static files shipped in the package.

Usage::

    return page(request, "heal.html", {"heal": heal}, access=access)
    return see_other("/ui/safety")
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined

from healer.console.access import Access

# No inline script or style anywhere: the one script and the stylesheet are files below
# /ui/static; the verify chart is inline SVG markup (presentation attributes, no style).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
STATIC = {"console.css": "text/css; charset=utf-8", "live.js": "text/javascript; charset=utf-8"}


def when(ts: float | None) -> str:
    """An epoch time as ``2026-12-02 10:04:05Z`` (empty for None)."""
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def pretty(value: Any) -> str:
    """Data as indented JSON text (escaped like any text when rendered)."""
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("healer.console", "templates"),
        autoescape=True,  # every template, whatever its name: label values are text
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    env.filters["pretty"] = pretty
    return env


# Templates are read once; like the module's router, this holds no state of a healer.
_ENV = _environment()


def secured(response: Response) -> Response:
    response.headers.update(HEADERS)
    return response


def page(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    access: Access | None,
    status: int = 200,
) -> Response:
    html = _ENV.get_template(template).render(access=access, path=request.url.path, **context)
    return secured(HTMLResponse(html, status_code=status))


def error_page(request: Request, status: int, message: str, access: Access | None) -> Response:
    return page(
        request, "error.html", {"status": status, "message": message}, access=access, status=status
    )


def see_other(url: str) -> Response:
    """After a form: back to a page (303, so the browser GETs it)."""
    return secured(RedirectResponse(url, status_code=303))


def static_file(name: str) -> Response | None:
    """A file of healer/console/static (only those listed in STATIC), or None."""
    if name not in STATIC:
        return None
    body = resources.files("healer.console").joinpath("static", name).read_bytes()
    response = Response(body, media_type=STATIC[name])
    secured(response)
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
