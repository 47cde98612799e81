"""The HTTP edge under inputs nobody hand-picked: no request makes the webhook, the
admin API or the chat callbacks answer 5xx, a refusal is small whatever it quotes, any
``Authorization`` header that is not the right credential is a 401 (never a 500), and a
client that leaves mid-body is counted as 499 with one log line, not as a crash.

The app is the real one (app factory, tmp journal, ``test.noop``), run in-process on an
event loop of its own thread so hypothesis can drive it synchronously. Derandomized and
bounded (``max_examples``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from healer.config import Secrets
from healer.plugins import HandlerRegistry
from tests.support.inprocess.chat import MATTERMOST_PATH, SLACK_PATH, SLACK_SECRET, sign
from tests.support.inprocess.inproc import noop_config, running_healer
from tests.support.inprocess.payloads import alert_payload

FUZZ = settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
WEBHOOK_TOKEN = "wh-edge-fuzz"
BASIC = ("am", "pässwörd")
ADMIN_TOKEN = "adm-edge-fuzz"
JSON = {"Content-Type": "application/json"}
WEBHOOK = {**JSON, "Authorization": f"Bearer {WEBHOOK_TOKEN}"}
ADMIN = {**JSON, "Authorization": f"Bearer {ADMIN_TOKEN}"}
SMALL_ANSWER = 4096  # bytes: a refusal names the problem, it does not quote the input whole


class Edge:
    """The in-process healer on its own thread's loop; ``post``/``get``/``delete`` wait
    (bounded) for the answer."""

    def __init__(self, config: dict[str, Any], handlers: HandlerRegistry) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._running = running_healer(
            config,
            handlers=handlers,
            secrets=Secrets(
                webhook_token=WEBHOOK_TOKEN,
                webhook_basic=BASIC,
                admin_token=ADMIN_TOKEN,
                slack_signing_secret=SLACK_SECRET,
            ),
        )
        self.healer = self._run(self._running.__aenter__())

    def _run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=60)

    def post(self, url: str, **kwargs: Any) -> Any:
        return self._run(self.healer.client.post(url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> Any:
        return self._run(self.healer.client.get(url, **kwargs))

    def delete(self, url: str, **kwargs: Any) -> Any:
        return self._run(self.healer.client.delete(url, **kwargs))

    def close(self) -> None:
        try:
            self._run(self._running.__aexit__(None, None, None))
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
            self._loop.close()


@pytest.fixture
def edge(tmp_path: Path, handlers: HandlerRegistry) -> Iterator[Edge]:
    server = Edge(
        {**noop_config(tmp_path / "j.db"), "allow": [{"kind": "test", "name": "web-*"}]}, handlers
    )
    try:
        yield server
    finally:
        server.close()


# --- authorization headers -------------------------------------------------------------

HEADER_BYTES = st.binary(max_size=40).map(lambda b: bytes(c for c in b if c not in b"\r\n\x00"))
CREDENTIALS = st.one_of(
    HEADER_BYTES,  # raw bytes, any
    st.binary(max_size=30).map(base64.b64encode),  # base64 of any bytes
    st.text(max_size=20).map(lambda t: base64.b64encode(t.encode("utf-8", "replace"))),
    st.sampled_from(
        [
            b"\xff\xfe",
            b"w6k6w6k=",
            base64.b64encode("é:é".encode("latin-1")),
            b"====",
            b"YW06",
            b"\xc3\xa9",
            "Bearer ü".encode("latin-1"),
        ]
    ),
)
SCHEMES = st.sampled_from([b"Basic", b"basic", b"BASIC", b"Bearer", b"bearer", b"Token", b""])


@FUZZ
@given(SCHEMES, CREDENTIALS)
def test_any_wrong_authorization_header_is_401(
    edge: Edge, scheme: bytes, credential: bytes
) -> None:
    """Any scheme with any bytes (non-ASCII, bad base64, base64 of text that is not UTF-8
    or of latin-1) is 401 on the webhook and on the admin API, never 500."""
    client = edge
    header = {"Authorization": scheme + b" " + credential, "Content-Type": "application/json"}
    body = json.dumps(alert_payload({"alertname": "Poke", "target": "web-1"}))
    assert client.post("/api/v1/alerts", content=body, headers=header).status_code == 401
    assert client.post("/api/v1/pause", content='{"for": "1m"}', headers=header).status_code == 401
    assert client.get("/api/v1/heals", headers=header).status_code == 401


def test_right_basic_credentials_with_non_ascii_pass(edge: Edge) -> None:
    """(The other side) basic auth whose password is non-ASCII UTF-8 is accepted."""
    client = edge
    token = base64.b64encode(f"{BASIC[0]}:{BASIC[1]}".encode()).decode()
    resp = client.post(
        "/api/v1/alerts",
        headers={**JSON, "Authorization": f"Basic {token}"},
        content=json.dumps(alert_payload({"alertname": "Quiet"})),
    )
    assert resp.status_code == 200, resp.text


# --- any body, any parameter: never 5xx, refusals small ----------------------------------

HUGE = st.integers(1, 4).map(lambda n: "ẞ" * (n * 20_000))
TEXT = st.one_of(
    st.text(max_size=10),
    HUGE,
    st.sampled_from(["\ud800", "", "4", "{{ labels.x }}", 'a"} or vector(0)', "\x00"]),
)
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=8,
)
ALERT = st.fixed_dictionaries(
    {
        "status": st.one_of(st.sampled_from(["firing", "resolved"]), TEXT),
        "labels": st.one_of(
            st.dictionaries(TEXT, TEXT, max_size=3).map(
                lambda d: {"alertname": "Poke", "target": "web-1", **d}
            ),
            JSON_VALUES,
        ),
        "annotations": st.dictionaries(TEXT, TEXT, max_size=2),
        "startsAt": st.one_of(st.just("2026-11-23T08:00:00Z"), TEXT),
        "fingerprint": st.one_of(st.just("00ff"), TEXT),
    }
)
WEBHOOK_BODIES = st.fixed_dictionaries(
    {
        "version": st.one_of(st.just("4"), JSON_VALUES),
        "status": st.just("firing"),
        "receiver": TEXT,
        "groupKey": TEXT,
        "alerts": st.lists(ALERT, max_size=2),
    }
)
ADMIN_BODIES = st.one_of(
    st.fixed_dictionaries(
        {
            "handler": st.one_of(st.just("test.noop"), TEXT),
            "params": st.dictionaries(TEXT, JSON_VALUES, max_size=3),
            "labels": st.dictionaries(TEXT, TEXT, max_size=2),
        },
        optional={
            "verify": st.fixed_dictionaries({"query": TEXT}),
            "reason": TEXT,
            "dry_run": st.just(True),
        },
    ),
    st.fixed_dictionaries(
        {
            "rule": st.one_of(st.just("poke"), TEXT),
            "labels": st.dictionaries(TEXT, JSON_VALUES, max_size=2),
        }
    ),
    st.fixed_dictionaries({"for": JSON_VALUES, "reason": TEXT}),
)
ENCODINGS = st.sampled_from(
    ["escaped", "escaped", "utf-8", "utf-8", "utf-8-sig", "utf-16", "utf-32-be"]
)


def encode(value: Any, encoding: str) -> bytes:
    """``escaped``: ASCII JSON, where a lone surrogate is a ``\\ud800`` escape (valid JSON,
    invalid Unicode); otherwise raw text in ``encoding`` (surrogates as their bytes)."""
    if encoding == "escaped":
        return json.dumps(value).encode()
    return json.dumps(value, ensure_ascii=False).encode(encoding, "surrogatepass")


def assert_answered(resp: Any) -> None:
    assert resp.status_code < 500, resp.text[:500]
    if resp.status_code >= 400:
        assert len(resp.content) <= SMALL_ANSWER, resp.text[:500]


@FUZZ
@given(st.one_of(WEBHOOK_BODIES, JSON_VALUES), ENCODINGS)
def test_no_webhook_body_is_a_5xx(edge: Edge, value: Any, encoding: str) -> None:
    """Near-valid payloads with huge, hostile or wrongly typed values in every field, any
    JSON document, in UTF-8 or not: a 2xx or 4xx answer, and a refusal stays small."""
    client = edge
    assert_answered(client.post("/api/v1/alerts", content=encode(value, encoding), headers=WEBHOOK))


@FUZZ
@given(ADMIN_BODIES, st.sampled_from(["/api/v1/heals", "/api/v1/pause"]), ENCODINGS)
def test_no_admin_body_is_a_5xx(edge: Edge, value: Any, path: str, encoding: str) -> None:
    """Manual triggers and pauses with huge or hostile names, params, labels, durations:
    a 2xx or 4xx answer, and a refusal stays small."""
    client = edge
    assert_answered(client.post(path, content=encode(value, encoding), headers=ADMIN))
    client.delete("/api/v1/pause", headers=ADMIN)


@FUZZ
@given(
    TEXT.filter(lambda t: "\ud800" not in t and "\x00" not in t),
    st.sampled_from(["outcome", "limit", "before", "rule", "target", "heal", "circuit"]),
)
def test_no_parameter_is_a_5xx(edge: Edge, value: str, where: str) -> None:
    """Huge or hostile query and path parameters on the read and close endpoints: 2xx or
    4xx, and a refusal (FastAPI's own 422 included) never quotes the value whole."""
    client = edge
    segment = quote(value[:1500] or "x", safe="")
    if where == "heal":
        resp = client.get(f"/api/v1/heals/{segment}", headers=ADMIN)
    elif where == "circuit":
        resp = client.delete(
            f"/api/v1/circuits/{segment}", headers=ADMIN, params={"target": value[:1500]}
        )
    else:
        resp = client.get("/api/v1/heals", params={where: value[:1500]}, headers=ADMIN)
    assert_answered(resp)


# --- a client that leaves mid-body ---------------------------------------------------------


async def test_a_client_leaving_mid_body_is_a_499_and_one_line(
    tmp_path: Path, handlers: HandlerRegistry
) -> None:
    """The ASGI server reports the client gone (``http.disconnect``) after part of the
    body: each endpoint that reads a body returns without raising, the webhook counts it
    as code="499" (not 500), and one warning line says so, without a traceback."""
    async with running_healer(
        noop_config(tmp_path / "j.db"), handlers=handlers, secrets=Secrets(admin_token=ADMIN_TOKEN)
    ) as h:
        for path in ("/api/v1/alerts", "/api/v1/heals", "/api/v1/pause"):
            messages = [
                {"type": "http.request", "body": b'{"version": "4", "al', "more_body": True},
                {"type": "http.disconnect"},
            ]
            sent: list[dict[str, Any]] = []

            async def receive(queue: list[dict[str, Any]] = messages) -> dict[str, Any]:
                return queue.pop(0) if queue else {"type": "http.disconnect"}

            async def send(message: dict[str, Any], out: list[dict[str, Any]] = sent) -> None:
                out.append(message)

            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "POST",
                "scheme": "http",
                "path": path,
                "raw_path": path.encode(),
                "query_string": b"",
                "root_path": "",
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", b"500"),
                    (b"authorization", f"Bearer {ADMIN_TOKEN}".encode()),
                ],
                "client": ("127.0.0.1", 5000),
                "server": ("127.0.0.1", 9095),
                "state": {},
                "app": h.app,
            }
            with capture_logs() as logs:
                await h.app(scope, receive, send)
            assert sent[0]["status"] == 499, (path, sent)
            assert not any("exception" in line or "exc_info" in line for line in logs), logs
            if path == "/api/v1/alerts":
                assert [line["event"] for line in logs] == ["webhook rejected"]
                assert logs[0]["status"] == 499
        assert h.sample("healer_webhook_requests_total", {"code": "499"}) == 1
        assert h.sample("healer_webhook_requests_total", {"code": "500"}) is None
        assert await h.services.journal.alert_counts() == {}


HEAL_ID = st.one_of(TEXT, st.just("0123456789abcdef"))
SLACK_PAYLOADS = st.fixed_dictionaries(
    {
        "type": st.one_of(st.just("block_actions"), JSON_VALUES),
        "user": st.one_of(
            st.fixed_dictionaries(
                {"id": TEXT}, optional={"username": JSON_VALUES, "team_id": TEXT}
            ),
            JSON_VALUES,
        ),
        "actions": st.one_of(
            st.lists(
                st.fixed_dictionaries(
                    {
                        "action_id": st.one_of(
                            st.sampled_from(["healer_approve", "healer_reject"]), TEXT
                        ),
                        "value": st.one_of(
                            TEXT,
                            JSON_VALUES.map(json.dumps),
                            HEAL_ID.map(
                                lambda h: json.dumps({"heal_id": h, "decision": "approve"})
                            ),
                        ),
                    }
                ),
                max_size=2,
            ),
            JSON_VALUES,
        ),
        "response_url": st.one_of(TEXT, st.just("https://hooks.slack.com/actions/T/1/x")),
    }
)
MATTERMOST_BODIES = st.fixed_dictionaries(
    {
        "user_id": st.one_of(TEXT, JSON_VALUES),
        "user_name": TEXT,
        "context": st.one_of(
            st.fixed_dictionaries(
                {
                    "heal_id": HEAL_ID,
                    "token": TEXT,
                    "decision": st.one_of(st.sampled_from(["approve", "reject"]), TEXT),
                }
            ),
            JSON_VALUES,
        ),
    }
)


@FUZZ
@given(st.one_of(SLACK_PAYLOADS, JSON_VALUES), ENCODINGS)
def test_no_signed_slack_body_is_a_5xx(edge: Edge, value: Any, encoding: str) -> None:
    """Slack callbacks correctly signed around near-valid or arbitrary payloads, in UTF-8
    or not: a 2xx or 4xx answer, a refusal stays small, and nothing acts."""
    body = urlencode({"payload": encode(value, encoding)}).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": sign(SLACK_SECRET, timestamp, body),
    }
    assert_answered(edge.post(SLACK_PATH, content=body, headers=headers))
    assert edge.healer.noop.acts == []


@FUZZ
@given(st.one_of(MATTERMOST_BODIES, JSON_VALUES), ENCODINGS)
def test_no_mattermost_body_is_a_5xx(edge: Edge, value: Any, encoding: str) -> None:
    """Mattermost button callbacks with hostile users, contexts, tokens and decisions, in
    UTF-8 or not: a 2xx or 4xx answer, a refusal stays small, and nothing acts."""
    assert_answered(edge.post(MATTERMOST_PATH, content=encode(value, encoding), headers=JSON))
    assert edge.healer.noop.acts == []
