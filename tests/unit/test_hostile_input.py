"""Hostile input at the HTTP edge: the one named list of what an attacker (or a broken
script) may send, and the answer each gets.

Every refused request is answered with its 4xx code and an error naming the problem,
and leaves nothing behind: no alert journaled, no heal created, the handler never
called. Hostile *label values* are different: they are data, so they are journaled
verbatim, and the heal they would drive ends ``refused`` before the handler acts.

The healer here runs in-process with a webhook token and an admin token set, the
``test.noop`` handler behind rule ``poke`` (``alertname="Poke"``, target from
``labels.target``) and an allowlist of ``test:web-*`` only.
"""

from __future__ import annotations

import json
import sqlite3
from base64 import b64encode
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from healer.config import Secrets
from healer.plugins import HandlerRegistry
from healer.templating import render_params
from tests.support.inprocess.inproc import InProcessHealer, noop_config, running_healer
from tests.support.inprocess.payloads import alert, alert_payload, payload
from tests.support.inprocess.stores import alert_log_counts

WEBHOOK_TOKEN = "wh-t0ken-hostile"
ADMIN_TOKEN = "adm-t0ken-hostile"
AUTH = {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
JSON = {"Content-Type": "application/json"}
MAX_BODY = 1024 * 1024  # the default webhook.max_body
FIFTY_MB = 50 * 1024 * 1024
CHUNK = 64 * 1024


def config(journal: Path, **over: Any) -> dict[str, Any]:
    return {**noop_config(journal), "allow": [{"kind": "test", "name": "web-*"}], **over}


@pytest.fixture
async def healer(tmp_path: Path, handlers: HandlerRegistry) -> AsyncIterator[InProcessHealer]:
    secrets = Secrets(webhook_token=WEBHOOK_TOKEN, admin_token=ADMIN_TOKEN)
    async with running_healer(
        config(tmp_path / "journal.db"), handlers=handlers, secrets=secrets
    ) as h:
        yield h


def poke(target: str = "web-1", **labels: str) -> dict[str, Any]:
    return alert_payload({"alertname": "Poke", "target": target, **labels})


def with_alert(**over: Any) -> bytes:
    body = poke()
    body["alerts"][0].update(over)
    return json.dumps(body).encode()


def counting_stream(data_size: int, counter: list[int]) -> Callable[[], AsyncIterator[bytes]]:
    """A body of ``data_size`` bytes produced lazily; ``counter[0]`` counts what was pulled,
    so a test can prove the server stopped reading early."""

    async def stream() -> AsyncIterator[bytes]:
        sent = 0
        while sent < data_size:
            chunk = b" " * min(CHUNK, data_size - sent)
            sent += len(chunk)
            counter[0] += len(chunk)
            yield chunk

    return stream


@dataclass
class Case:
    """One hostile request and the answer it must get."""

    body: bytes | None = None
    headers: dict[str, str | bytes] = field(default_factory=lambda: {**AUTH, **JSON})
    params: dict[str, str] = field(default_factory=dict)
    status: int = 422
    error: str = ""  # a substring of the error message ("error" or "detail")
    # A lazily streamed body of this many bytes instead of ``body``.
    stream_size: int | None = None
    # At most this many body bytes may be pulled from the stream before the answer.
    max_read: int | None = None


def _nest(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = {"k": value}
    return value


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


CASES: dict[str, Case] = {
    # --- not JSON / not this API -------------------------------------------------------
    "invalid JSON": Case(b'{"version": "4",', status=400, error="invalid JSON"),
    "not UTF-8": Case(b'{"version": "\xff\xfe"}', status=400, error="not UTF-8 JSON"),
    "empty body": Case(b"", status=400, error="empty body"),
    "text/plain content type": Case(
        json.dumps(poke()).encode(),
        {**AUTH, "Content-Type": "text/plain"},
        status=415,
        error="content type must be application/json",
    ),
    "form content type": Case(
        b"version=4",
        {**AUTH, "Content-Type": "application/x-www-form-urlencoded"},
        status=415,
        error="application/json",
    ),
    "JSON array body": Case(b"[]", error="body must be a JSON object"),
    'version "3"': Case(
        json.dumps({**poke(), "version": "3"}).encode(),
        error='version: healer speaks Alertmanager webhook version "4", got "3"',
    ),
    "version missing": Case(
        json.dumps({k: v for k, v in poke().items() if k != "version"}).encode(), error="got null"
    ),
    "alerts not a list": Case(
        json.dumps({**poke(), "alerts": {"0": {}}}).encode(),
        error="alerts: Input should be a valid list",
    ),
    "non-string label value": Case(
        with_alert(labels={"alertname": "Poke", "target": 5}),
        error="alerts[0].labels.target: Input should be a valid string",
    ),
    "null label value": Case(
        with_alert(labels={"alertname": "Poke", "target": None}), error="alerts[0].labels.target"
    ),
    "nested object as label value": Case(
        with_alert(labels={"alertname": "Poke", "target": {"a": ["b"]}}),
        error="alerts[0].labels.target",
    ),
    "fingerprint with ../": Case(
        with_alert(fingerprint="../../etc"), error="alerts[0].fingerprint"
    ),
    "startsAt not a time": Case(
        with_alert(startsAt="'; DROP TABLE alerts; --"), error="alerts[0].startsAt"
    ),
    "lone surrogate in a label": Case(
        with_alert(labels={"alertname": "Poke", "target": "\ud800"}),
        error="alerts[0].labels.target: Value error, not valid Unicode",
    ),
    "startsAt out of range": Case(
        with_alert(startsAt="0001-01-01T00:00:00+01:00"),
        error="alerts[0].startsAt: Value error, time out of range",
    ),
    "5000-digit number": Case(
        b'{"version": "4", "truncatedAlerts": ' + b"9" * 5000 + b"}",
        status=400,
        error="invalid JSON: a number is too long",
    ),
    # Deep enough to exhaust the JSON parser's recursion, yet under max_body.
    "deeply nested JSON": Case(_deep(400_000), status=400, error="nested too deeply"),
    # --- strict JSON (issue 12; tests/unit/test_strict_json.py tries each class widely) ---
    "UTF-16 with a BOM": Case(
        json.dumps(poke()).encode("utf-16"), status=400, error="must be UTF-8 JSON"
    ),
    "UTF-16 without a BOM": Case(
        json.dumps(poke()).encode("utf-16-le"), status=400, error="must be UTF-8 JSON"
    ),
    "UTF-32 with a BOM": Case(
        json.dumps(poke()).encode("utf-32"), status=400, error="must be UTF-8 JSON"
    ),
    "UTF-8 with a BOM": Case(
        json.dumps(poke()).encode("utf-8-sig"), status=400, error="without a byte order mark"
    ),
    "UTF-8-encoded surrogate": Case(
        json.dumps(poke()).encode()[:-1] + b', "x": "\xed\xa0\x80"}',
        status=400,
        error="not UTF-8 JSON",
    ),
    "NaN": Case(
        json.dumps(poke()).encode()[:-1] + b', "x": NaN}',
        status=400,
        error="NaN is not a JSON value",
    ),
    "two alerts arrays": Case(
        json.dumps(poke()).encode()[:-1] + b', "alerts": []}', error='duplicate key "alerts"'
    ),
    "a label given twice": Case(
        json.dumps(poke())
        .replace('"target": "web-1"', '"target": "web-1", "target": "db-1"', 1)
        .encode(),
        error='duplicate key "target"',
    ),
    "an empty label name": Case(
        with_alert(labels={"alertname": "Poke", "": "x"}), error="alerts[0].labels"
    ),
    "nested 40 deep": Case(
        json.dumps({**poke(), "groupLabels": _nest(40)}).encode(), error="groupLabels" + ".k" * 30
    ),
    "a 500 KB version": Case(
        json.dumps({**poke(), "version": "4" * 500_000}).encode(), error="4...[499802 more chars]"
    ),
    # --- authentication ------------------------------------------------------------------
    "basic auth, non-ASCII bytes": Case(
        json.dumps(poke()).encode(),
        {**JSON, "Authorization": b"Basic \xe9\xe9"},
        status=401,
        error="webhook authentication required",
    ),
    "basic auth, not base64": Case(
        json.dumps(poke()).encode(),
        {**JSON, "Authorization": "Basic %%%="},
        status=401,
        error="webhook authentication required",
    ),
    # --- size ----------------------------------------------------------------------------
    "50 MB body, Content-Length declared": Case(
        headers={**AUTH, **JSON, "Content-Length": str(FIFTY_MB)},
        stream_size=FIFTY_MB,
        status=413,
        error=f"body of {FIFTY_MB} bytes is over the {MAX_BODY}-byte limit",
        max_read=0,
    ),
    "50 MB body, chunked": Case(
        stream_size=FIFTY_MB,
        status=413,
        error=f"body is over the {MAX_BODY}-byte limit",
        max_read=MAX_BODY + 2 * CHUNK,
    ),
    # --- authentication ------------------------------------------------------------------
    "missing token": Case(
        json.dumps(poke()).encode(), JSON, status=401, error="webhook authentication required"
    ),
    "wrong token": Case(
        json.dumps(poke()).encode(),
        {**JSON, "Authorization": "Bearer nope"},
        status=401,
        error="invalid webhook token",
    ),
    "empty bearer": Case(
        json.dumps(poke()).encode(),
        {**JSON, "Authorization": "Bearer "},
        status=401,
        error="webhook authentication required",
    ),
    "wrong auth scheme": Case(
        json.dumps(poke()).encode(),
        {**JSON, "Authorization": f"Token {WEBHOOK_TOKEN}"},
        status=401,
        error="webhook authentication required",
    ),
    "token as basic-auth password": Case(
        json.dumps(poke()).encode(),
        {**JSON, "Authorization": "Basic " + b64encode(f"am:{WEBHOOK_TOKEN}".encode()).decode()},
        status=401,
        error="webhook authentication required",
    ),
    "admin token on the webhook": Case(
        json.dumps(poke()).encode(),
        {**JSON, "Authorization": f"Bearer {ADMIN_TOKEN}"},
        status=401,
        error="invalid webhook token",
    ),
    "token in the query string": Case(
        json.dumps(poke()).encode(),
        JSON,
        params={"token": WEBHOOK_TOKEN, "access_token": WEBHOOK_TOKEN},
        status=401,
        error="webhook authentication required",
    ),
}


async def _stored(h: InProcessHealer) -> tuple[dict[str, int], list[dict[str, Any]]]:
    return await h.services.journal.alert_counts(), await h.services.journal.list_heals()


@pytest.mark.parametrize("name", list(CASES))
async def test_a_hostile_request_is_refused_and_leaves_nothing(
    healer: InProcessHealer, noop: Any, name: str
) -> None:
    """Each named hostile request gets its 4xx code and an error naming the problem; no
    alert is journaled, no heal created, the handler is never called, the answer is
    counted in healer_webhook_requests_total, and a 401 carries WWW-Authenticate."""
    case = CASES[name]
    pulled = [0]
    content: Any = case.body
    if case.stream_size is not None:
        content = counting_stream(case.stream_size, pulled)()
    resp = await healer.client.post(
        "/api/v1/alerts", content=content, headers=case.headers, params=case.params
    )
    assert resp.status_code == case.status, resp.text
    answer = resp.json()
    assert case.error in answer.get("error", answer.get("detail", "")), answer
    if case.status == 401:
        assert resp.headers["www-authenticate"].startswith("Bearer")
        assert WEBHOOK_TOKEN not in resp.text and ADMIN_TOKEN not in resp.text
    if case.max_read is not None:
        assert pulled[0] <= case.max_read, f"read {pulled[0]} bytes of a refused body"
    assert await _stored(healer) == ({}, [])
    assert noop.checks == [] and noop.acts == []
    assert healer.sample("healer_webhook_requests_total", {"code": str(case.status)}) == 1


# --- hostile label values: journaled as data, never acted on -------------------------------


REFUSED_TARGETS: dict[str, tuple[str, str]] = {
    # name -> (label value, expected start of the heal's reason)
    "shell metacharacters": ("web-1; rm -rf / #", "invalid params: target:"),
    "command substitution": ("web-$(id)`id`", "invalid params: target:"),
    "SQL": ("web-1'; DROP TABLE alerts; --", "invalid params: target:"),
    "path traversal": ("../../etc/passwd", "invalid params: target:"),
    "NUL and control characters": ("web-1\x00\x1b[31m\r\n", "invalid params: target:"),
    "a template in the value": ("{{ labels.alertname }}", "invalid params: target:"),
    "outside the allowlist": ("db-1", "test:db-1 is outside the allowlist"),
}


@pytest.mark.parametrize("name", list(REFUSED_TARGETS))
async def test_a_hostile_label_value_is_data_and_the_heal_is_refused(
    healer: InProcessHealer, noop: Any, tmp_path: Path, name: str
) -> None:
    """A label value carrying shell, SQL, ``../``, NUL or a template is accepted (200, it
    is only data), journaled byte for byte, and the heal templating it into params ends
    ``refused`` (params model or allowlist): the handler never acts."""
    value, reason = REFUSED_TARGETS[name]
    resp = await healer.client.post("/api/v1/alerts", json=poke(value), headers=AUTH)
    assert resp.status_code == 200, resp.text
    [started] = resp.json()["started"]
    heal = await healer.wait_for_outcome(started["heal_id"], timeout=10)
    assert heal["outcome"] == "refused"
    assert heal["reason"].startswith(reason), heal["reason"]
    assert heal["labels"]["target"] == value
    assert noop.acts == []
    with sqlite3.connect(tmp_path / "journal.db") as db:
        [(labels,)] = db.execute("SELECT labels FROM alert_log").fetchall()
        assert json.loads(labels)["target"] == value
        assert db.execute("SELECT COUNT(*) FROM heals").fetchone() == (1,)


async def test_hostile_values_in_alertname_are_stored_verbatim(
    healer: InProcessHealer, tmp_path: Path
) -> None:
    """NUL, escape sequences, quotes and SQL in the alertname itself round-trip through
    the journal unchanged (the body is kept as received; ``alert_log`` reads the labels
    from it); no rule matches them."""
    nasty = "Poke\x00'); DELETE FROM heals; --\x1b[2J"
    resp = await healer.client.post(
        "/api/v1/alerts", headers=AUTH, json=alert_payload({"alertname": nasty, "target": "web-1"})
    )
    assert resp.status_code == 200
    assert resp.json()["ignored"][0]["reason"] == "no rule matches"
    with sqlite3.connect(tmp_path / "journal.db") as db:
        [(labels,)] = db.execute("SELECT labels FROM alert_log").fetchall()
    assert json.loads(labels)["alertname"] == nasty


def test_a_substituted_label_value_is_never_expanded_again() -> None:
    """Templating is one pass over the rule's text: a label value that looks like a
    template stays a literal string (no second-order expansion of another label or an
    annotation)."""
    rendered = render_params(
        {"target": "x-{{ labels.a }}"},
        {"a": "{{ annotations.secret }}{{ labels.b }}", "b": "web-1"},
        {"secret": "s3cret"},
    )
    assert rendered == {"target": "x-{{ annotations.secret }}{{ labels.b }}"}


# --- big groups ---------------------------------------------------------------------------


def big_group(count: int) -> dict[str, Any]:
    starts = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    return payload(
        *(
            alert(
                "Quiet",
                {"i": str(i)},
                fingerprint=f"{i:016x}",
                starts_at=starts + timedelta(seconds=i),
            )
            for i in range(count)
        )
    )


async def test_ten_thousand_alerts_within_max_body_are_all_journaled(
    tmp_path: Path, handlers: HandlerRegistry
) -> None:
    """Alertmanager may send a huge group: there is no alert-count limit, only max_body.
    10,000 alerts in one POST under a raised max_body are answered 200 and every one is
    journaled once."""
    body = json.dumps(big_group(10_000)).encode()
    cfg = config(tmp_path / "journal.db", webhook={"max_body": "16MiB"})
    async with running_healer(cfg, handlers=handlers, secrets=Secrets()) as h:
        resp = await h.client.post("/api/v1/alerts", content=body, headers=JSON)
        assert resp.status_code == 200
        assert resp.json()["accepted"] == 10_000
        assert await alert_log_counts(h.services.journal) == {"ignored": 10_000}


async def test_a_group_over_max_body_is_413_naming_the_limit(healer: InProcessHealer) -> None:
    """The same 10,000-alert group under the default 1 MiB max_body is refused whole with
    413 and a message naming the limit (raise webhook.max_body, or Alertmanager's
    ``max_alerts``); nothing of it is journaled."""
    body = json.dumps(big_group(10_000)).encode()
    assert len(body) > MAX_BODY
    resp = await healer.client.post("/api/v1/alerts", content=body, headers={**AUTH, **JSON})
    assert resp.status_code == 413
    assert f"{MAX_BODY}-byte limit" in resp.json()["error"]
    assert await _stored(healer) == ({}, [])


async def test_a_body_just_under_the_limit_is_read(
    tmp_path: Path, handlers: HandlerRegistry
) -> None:
    """The limit refuses only what is over it: a streamed (chunked) body under a small
    max_body is read whole and accepted."""
    cfg = config(tmp_path / "journal.db", webhook={"max_body": "1KiB"})
    data = json.dumps(poke()).encode()
    assert len(data) < 1024

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 100):
            yield data[i : i + 100]

    async with running_healer(cfg, handlers=handlers, secrets=Secrets()) as h:
        request = h.client.build_request("POST", "/api/v1/alerts", content=chunks(), headers=JSON)
        assert "content-length" not in request.headers
        resp = await h.client.send(request)
        assert resp.status_code == 200, resp.text


async def test_an_unwanted_method_is_405(healer: InProcessHealer) -> None:
    """GET, PUT and DELETE on the webhook are 405, not a crash or a silent 200."""
    for method in ("GET", "PUT", "DELETE"):
        resp = await healer.client.request(method, "/api/v1/alerts", headers=AUTH)
        assert resp.status_code == 405, method


def test_cases_cover_the_issue_list() -> None:
    """The table keeps the named cases of issue 4 (so a refactor cannot drop one)."""
    names = set(CASES) | set(REFUSED_TARGETS)
    for wanted in (
        "invalid JSON",
        "text/plain content type",
        'version "3"',
        "alerts not a list",
        "non-string label value",
        "deeply nested JSON",
        "50 MB body, chunked",
        "NUL and control characters",
        "shell metacharacters",
        "SQL",
        "path traversal",
        "outside the allowlist",
        "missing token",
        "wrong token",
        "wrong auth scheme",
        "token in the query string",
    ):
        assert wanted in names, wanted
