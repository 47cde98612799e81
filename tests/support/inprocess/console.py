"""Driving the web console (/ui) in-process: log in, read a page's CSRF token.

csrf = await login(h.client, ADMIN, name="alice")   # the client now holds the cookie
resp = await h.client.post("/ui/pause", data={"csrf": csrf, "for": "5m"})
"""

from __future__ import annotations

import re

import httpx

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token the page's forms carry (fails when the page has none)."""
    found = _CSRF.search(html)
    assert found, "no CSRF token on the page"
    return found.group(1)


async def login(client: httpx.AsyncClient, token: str, *, name: str = "tester") -> str:
    """Log ``client`` in with the admin ``token``; the session's CSRF token."""
    resp = await client.post("/ui/login", data={"token": token, "name": name, "next": "/ui"})
    assert resp.status_code == 303, resp.text
    page = await client.get("/ui/safety")
    assert page.status_code == 200, page.text
    return csrf_of(page.text)
