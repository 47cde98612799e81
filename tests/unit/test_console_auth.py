"""Who may read and change things through the web console (healer/console/access.py,
session.py): reading follows the API's rule (open without an admin token, else a login
or the bearer token); the login exchanges the admin token for an HttpOnly, SameSite=Strict
session cookie (Secure over https or when configured); wrong tokens, forged and expired
cookies are refused; every change needs the session's CSRF token, and none is possible
without an admin token configured. Every /ui answer carries the security headers."""

from __future__ import annotations

import httpx

from healer.config import Secrets
from healer.console.actions import safe_next
from healer.console.session import COOKIE, ConsoleSessions
from tests.support.inprocess.console import csrf_of, login
from tests.support.inprocess.inproc import ADMIN, InProcessHealer, Start

PAGES = ("/ui", "/ui/heals", "/ui/rules", "/ui/safety")


def _cookie_header(resp: httpx.Response) -> str:
    [header] = [v for k, v in resp.headers.multi_items() if k == "set-cookie"]
    return header


async def test_without_admin_token_reading_is_open_and_changes_are_403(
    healer: InProcessHealer,
) -> None:
    """No admin token configured: every page reads without login; every state-changing
    form is refused 403 (as the API refuses manual actions), and nothing is paused."""
    for path in PAGES:
        resp = await healer.client.get(path)
        assert resp.status_code == 200, (path, resp.text)
    for path in ("/ui/pause", "/ui/resume", "/ui/circuits/close", "/ui/logout"):
        resp = await healer.client.post(path, data={"csrf": "x", "for": "5m", "rule": "poke-web"})
        assert resp.status_code == 403, (path, resp.text)
    resp = await healer.client.post("/ui/login", data={"token": "anything"})
    assert resp.status_code == 403
    assert await healer.services.gates.pause_state() is None


async def test_with_admin_token_pages_send_to_login(admin_healer: InProcessHealer) -> None:
    """With an admin token and no login, each page answers 303 to /ui/login (keeping where
    to come back to); the bearer token reads as in the API, a wrong one is 401."""
    client = admin_healer.client
    bearer = client.headers.pop("Authorization")
    for path in PAGES:
        resp = await client.get(path)
        assert resp.status_code == 303, path
        assert resp.headers["location"].startswith("/ui/login?next=%2Fui")
    assert (await client.get("/ui", headers={"Authorization": bearer})).status_code == 200
    wrong = await client.get("/ui", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401


async def test_login_sets_a_strict_httponly_expiring_cookie(admin_healer: InProcessHealer) -> None:
    """The right token logs in: 303 back to ``next``, a cookie that is HttpOnly,
    SameSite=Strict, scoped to /ui, with a Max-Age of session_ttl and not Secure over
    plain http; the pages then read, showing a logout form."""
    client = admin_healer.client
    client.headers.pop("Authorization")
    resp = await client.post(
        "/ui/login", data={"token": ADMIN, "name": "alice", "next": "/ui/rules"}
    )
    assert resp.status_code == 303
    assert resp.headers["location"] == "/ui/rules"
    cookie = _cookie_header(resp).lower()
    for part in ("httponly", "samesite=strict", "path=/ui", "max-age=28800"):
        assert part in cookie, cookie
    assert "secure" not in cookie.replace("samesite", "")
    page = await client.get("/ui/rules")
    assert page.status_code == 200
    assert 'id="logout"' in page.text and "alice" in page.text


async def test_cookie_is_secure_over_https_or_when_configured(start: Start) -> None:
    """The session cookie is Secure on an https request, and on http when
    console.secure_cookie says so (a TLS proxy in front)."""

    async def cookie(h: InProcessHealer, base: str) -> str:
        transport = httpx.ASGITransport(app=h.app)
        async with httpx.AsyncClient(transport=transport, base_url=base) as client:
            return _cookie_header(await client.post("/ui/login", data={"token": ADMIN})).lower()

    async with start(Secrets(admin_token=ADMIN)) as h:
        assert "; secure" in await cookie(h, "https://healer")
        assert "; secure" not in await cookie(h, "http://healer")
    async with start(Secrets(admin_token=ADMIN), console={"secure_cookie": True}) as h:
        assert "; secure" in await cookie(h, "http://healer")


async def test_wrong_token_forged_and_expired_cookies_are_refused(
    admin_healer: InProcessHealer,
) -> None:
    """A wrong token is 401 with no cookie; a made-up cookie value reads nothing; a
    session past its ttl (the sessions' clock moved on) is gone."""
    client = admin_healer.client
    client.headers.pop("Authorization")
    resp = await client.post("/ui/login", data={"token": "wrong"})
    assert resp.status_code == 401
    assert "set-cookie" not in resp.headers
    assert "wrong admin token" in resp.text

    forged = await client.get("/ui", headers={"Cookie": f"{COOKIE}=forged-session-id"})
    assert forged.status_code == 303

    await login(client, ADMIN)
    assert (await client.get("/ui")).status_code == 200
    sessions = admin_healer.services.sessions
    now = sessions.clock()
    sessions.clock = lambda: now + sessions.ttl + 1
    assert (await client.get("/ui")).status_code == 303


async def test_changes_need_the_sessions_csrf_token(admin_healer: InProcessHealer) -> None:
    """A pause without the CSRF token is 403 (with or without a session), with another
    session's token 403, with a token but no session 401, all pausing nothing; with the
    session's token the pause happens (303 back to the page), and resume too."""
    client = admin_healer.client
    client.headers.pop("Authorization")
    assert (await client.post("/ui/pause", data={"for": "5m"})).status_code == 403
    assert (await client.post("/ui/pause", data={"for": "5m", "csrf": "x"})).status_code == 401
    csrf = await login(client, ADMIN)
    for data in ({"for": "5m"}, {"for": "5m", "csrf": ""}, {"for": "5m", "csrf": csrf + "x"}):
        resp = await client.post("/ui/pause", data=data)
        assert resp.status_code == 403, data
    assert await admin_healer.services.gates.pause_state() is None

    resp = await client.post("/ui/pause", data={"for": "5m", "reason": "deploy", "csrf": csrf})
    assert resp.status_code == 303 and resp.headers["location"] == "/ui/safety"
    state = await admin_healer.services.gates.pause_state()
    assert state is not None and state["reason"] == "deploy"
    assert "Healing is paused" in (await client.get("/ui")).text

    assert (await client.post("/ui/resume", data={})).status_code == 403
    assert (await client.post("/ui/resume", data={"csrf": csrf})).status_code == 303
    assert await admin_healer.services.gates.pause_state() is None


async def test_pause_form_keeps_the_apis_limits(admin_healer: InProcessHealer) -> None:
    """The pause form goes through the API's validation: a bad or too long duration is
    refused (422) with the API's message."""
    client = admin_healer.client
    client.headers.pop("Authorization")
    csrf = await login(client, ADMIN)
    resp = await client.post("/ui/pause", data={"for": "forever", "csrf": csrf})
    assert resp.status_code == 422
    resp = await client.post("/ui/pause", data={"for": "2d", "csrf": csrf})
    assert resp.status_code == 422 and "safety.max_pause" in resp.text
    assert await admin_healer.services.gates.pause_state() is None


async def test_logout_ends_the_session(admin_healer: InProcessHealer) -> None:
    """Logout needs the CSRF token; then the old cookie reads nothing, even if replayed."""
    client = admin_healer.client
    client.headers.pop("Authorization")
    csrf = await login(client, ADMIN)
    old = client.cookies.get(COOKIE)
    assert (await client.post("/ui/logout", data={})).status_code == 403
    resp = await client.post("/ui/logout", data={"csrf": csrf})
    assert resp.status_code == 303 and resp.headers["location"] == "/ui/login"
    client.cookies.clear()
    assert (await client.get("/ui", headers={"Cookie": f"{COOKIE}={old}"})).status_code == 303


async def test_every_answer_carries_the_security_headers(admin_healer: InProcessHealer) -> None:
    """Pages, redirects, errors and static files carry a strict CSP (no inline script),
    X-Frame-Options DENY and Referrer-Policy no-referrer."""
    client = admin_healer.client
    client.headers.pop("Authorization")
    answers = [
        await client.get("/ui/login"),
        await client.get("/ui"),  # 303
        await client.post("/ui/login", data={"token": "wrong"}),  # 401
        await client.get("/ui/static/console.css"),
        await client.get("/ui/static/nope.js"),  # 404
    ]
    csrf = await login(client, ADMIN)
    assert csrf
    answers += [await client.get("/ui"), await client.get("/ui/heals/unknown")]
    for resp in answers:
        csp = resp.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp
        assert "unsafe-inline" not in csp
        assert resp.headers["x-frame-options"] == "DENY"
        assert resp.headers["referrer-policy"] == "no-referrer"
    assert "<script>" not in answers[-2].text  # the page itself: no inline script


def test_login_only_returns_to_console_pages() -> None:
    """Where a login goes next is a /ui path; another site or a scheme-relative URL
    falls back to /ui (no open redirect)."""
    assert safe_next("/ui/heals?rule=x") == "/ui/heals?rule=x"
    for bad in (
        None,
        "",
        "https://evil.example/ui",
        "//evil.example/ui",
        "/api/v1/heals",
        "/ui\\@evil",
    ):
        assert safe_next(bad) == "/ui"


async def test_the_login_page_has_a_csrf_free_form_and_the_pages_a_token(
    admin_healer: InProcessHealer,
) -> None:
    """Every state-changing form on a logged-in page carries the session's token."""
    client = admin_healer.client
    client.headers.pop("Authorization")
    csrf = await login(client, ADMIN)
    page = (await client.get("/ui/safety")).text
    assert page.count('method="post"') == page.count(f'name="csrf" value="{csrf}"')
    assert csrf_of(page) == csrf


async def test_forms_are_capped_urlencoded_bodies(admin_healer: InProcessHealer) -> None:
    """A form body over 16 KiB is 413, another content type 415, more than 20 fields 400:
    each before any token is compared or anything changes."""
    client = admin_healer.client
    client.headers.pop("Authorization")
    csrf = await login(client, ADMIN)
    big = await client.post("/ui/pause", data={"for": "5m", "csrf": csrf, "reason": "x" * 20000})
    assert big.status_code == 413
    as_json = await client.post("/ui/pause", json={"for": "5m", "csrf": csrf})
    assert as_json.status_code == 415
    many = await client.post("/ui/pause", data={f"f{i}": "1" for i in range(30)} | {"csrf": csrf})
    assert many.status_code == 400
    assert (await client.post("/ui/login", json={"token": ADMIN})).status_code == 415
    assert await admin_healer.services.gates.pause_state() is None


def test_sessions_are_bounded_and_expire_by_their_clock() -> None:
    """At most ``limit`` sessions are kept (the oldest goes first); a session ends at its
    ttl on the sessions' clock; a CSRF token matches only its own session's."""
    now = [1000.0]
    sessions = ConsoleSessions(60.0, limit=2, clock=lambda: now[0])
    first, second, third = (sessions.open(by=n) for n in ("a", "b", "c"))
    assert sessions.get(first.id) is None
    assert sessions.get(second.id) == second and sessions.get(third.id) == third
    assert sessions.csrf_ok(second, second.csrf)
    assert not sessions.csrf_ok(second, third.csrf) and not sessions.csrf_ok(second, "")
    now[0] += 60.0
    assert sessions.get(second.id) is None
