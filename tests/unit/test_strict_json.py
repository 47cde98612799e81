"""Bodies are strict UTF-8 JSON (healer.strictjson), for every endpoint that reads one.

* an encoding other than UTF-8 (UTF-16/32, with or without a byte order mark), a UTF-8
  BOM, bytes that are not UTF-8: 400 "UTF-8";
* the same key twice in any object, at any depth (labels too): 422 naming the key;
* nesting deeper than MAX_DEPTH: 422 naming where; deeper than the parser goes: 400;
* whatever is accepted is JSON that SQLite's JSON functions read exactly as healer did,
  so the journal's ``alert_log`` view works for every accepted webhook body.

Each class is tried with hypothesis-generated inputs, not only the hand-picked ones.
"""

from __future__ import annotations

import codecs
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from healer.config import Secrets
from healer.errors import PayloadError
from healer.plugins import HandlerRegistry
from healer.strictjson import MAX_DEPTH, decode_json
from tests.support.inprocess.inproc import noop_config, running_healer
from tests.support.inprocess.payloads import alert_payload

FUZZ = settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
ADMIN = "adm-strict-json"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}
JSON = {"Content-Type": "application/json"}

KEYS = st.text(max_size=6)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=8),
    st.floats(allow_nan=False, allow_infinity=False),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=3)),
    max_leaves=12,
)


def refused(body: bytes) -> PayloadError:
    with pytest.raises(PayloadError) as caught:
        decode_json(body)
    return caught.value


# --- encodings ---------------------------------------------------------------------------

NOT_UTF8 = {
    "utf-16": "utf-16",
    "utf-16-le": "utf-16-le",
    "utf-16-be": "utf-16-be",
    "utf-32": "utf-32",
    "utf-32-le": "utf-32-le",
    "utf-32-be": "utf-32-be",
}


@pytest.mark.parametrize("encoding", [*NOT_UTF8, "utf-8-sig"])
def test_only_utf8_without_bom_is_read(encoding: str) -> None:
    """A valid payload in UTF-16/32 (with a BOM: utf-16, utf-32; without: -le, -be) or
    UTF-8 behind a BOM is 400 saying the body must be UTF-8."""
    error = refused(json.dumps(alert_payload({"alertname": "Poke"})).encode(encoding))
    assert error.status == 400 and "UTF-8" in error.message


@FUZZ
@given(VALUES, st.sampled_from(sorted(NOT_UTF8)), st.booleans())
def test_any_document_in_another_encoding_is_400(value: Any, encoding: str, bom: bool) -> None:
    """Any JSON document encoded as UTF-16/32 (BOM or not) is refused with 400: never
    accepted (the journal would store text SQLite cannot read), never a 500."""
    body = json.dumps(value).encode(encoding)
    if bom and not body.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        body = codecs.BOM_UTF16_LE + body
    assert refused(body).status == 400


@FUZZ
@given(st.binary(max_size=64))
def test_any_bytes_are_read_as_strict_json_or_refused(body: bytes) -> None:
    """Random bytes: a 4xx PayloadError, or a document SQLite reads the same way (valid
    JSON text, same value back)."""
    try:
        data = decode_json(body)
    except PayloadError as exc:
        assert 400 <= exc.status < 500
        return
    assert_sqlite_reads_the_same(body, data)


def assert_sqlite_reads_the_same(body: bytes, data: Any) -> None:
    with sqlite3.connect(":memory:") as db:
        [(valid, canonical)] = db.execute(
            "SELECT json_valid(?), json(?)", (body.decode(), body.decode())
        ).fetchall()
    assert valid == 1
    assert json.loads(canonical) == data


@FUZZ
@given(VALUES)
def test_any_accepted_document_is_json_sqlite_reads_the_same(value: Any) -> None:
    """Every document healer accepts is one SQLite reads as the same value (the journal
    stores bodies as received and reads them back with json_extract)."""
    body = json.dumps(value, ensure_ascii=False).encode()
    assert_sqlite_reads_the_same(body, decode_json(body))


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(literal: str) -> None:
    """Python's json reads NaN/Infinity, JSON (and SQLite) does not: 400."""
    error = refused(f'{{"version": "4", "x": [{literal}]}}'.encode())
    assert (error.status, error.message) == (400, f"invalid JSON: {literal} is not a JSON value")


# --- duplicate keys ------------------------------------------------------------------------


def dumps_with_duplicate(value: Any, victim: int) -> tuple[str, str | None]:
    """``value`` as JSON text with the first key of its ``victim``-th non-empty object (in
    document order) written twice; also that key (None if there are fewer objects)."""
    counter = [0]
    duplicated: list[str] = []

    def dump(node: Any) -> str:
        if isinstance(node, dict):
            items = [f"{json.dumps(k)}: {dump(v)}" for k, v in node.items()]
            if node and counter[0] == victim and not duplicated:
                first = next(iter(node))
                duplicated.append(first)
                items.append(f"{json.dumps(first)}: {dump(node[first])}")
            if node:
                counter[0] += 1
            return "{" + ", ".join(items) + "}"
        if isinstance(node, list):
            return "[" + ", ".join(dump(v) for v in node) + "]"
        return json.dumps(node)

    text = dump(value)
    return text, duplicated[0] if duplicated else None


@FUZZ
@given(VALUES, st.integers(0, 5))
def test_a_duplicate_key_anywhere_is_422_naming_it(value: Any, victim: int) -> None:
    """In any document, one key repeated in any one object (top level or nested) is 422
    naming the key; the same document without the repeat is accepted."""
    text, key = dumps_with_duplicate(value, victim)
    if key is None:
        assert decode_json(text.encode()) == value
        return
    error = refused(text.encode())
    assert error.status == 422
    assert f"duplicate key {json.dumps(key)}" in error.message


def _duplicated(labels_text: str) -> str:
    body = json.dumps(alert_payload({"alertname": "Poke", "target": "web-1"}))
    return body.replace(
        '"labels": {"alertname": "Poke", "target": "web-1"}', f'"labels": {labels_text}', 1
    )


async def test_duplicate_keys_are_refused_by_every_endpoint(
    tmp_path: Path, handlers: HandlerRegistry, noop: Any
) -> None:
    """Two ``alerts`` arrays, two ``target`` labels, two ``params`` keys in a manual
    trigger, two ``for`` in a pause: 422 naming the key, and nothing journaled or run."""
    async with running_healer(
        noop_config(tmp_path / "j.db"), handlers=handlers, secrets=Secrets(admin_token=ADMIN)
    ) as h:
        alerts = json.dumps(alert_payload({"alertname": "Poke", "target": "web-1"}))
        posts = {
            "/api/v1/alerts": [
                alerts[:-1] + ', "alerts": []}',
                _duplicated('{"alertname": "Poke", "target": "web-1", "target": "web-2"}'),
            ],
            "/api/v1/heals": [
                '{"handler": "test.noop", "params": {"target": "web-1", "target": "web-2"}}'
            ],
            "/api/v1/pause": ['{"for": "1m", "for": "1h"}'],
        }
        for path, bodies in posts.items():
            for body in bodies:
                resp = await h.client.post(path, content=body.encode(), headers=ADMIN_AUTH)
                assert resp.status_code == 422, (path, resp.text)
                assert "duplicate key" in resp.json()["error"]
        assert await h.services.journal.alert_counts() == {}
        assert await h.services.journal.list_heals() == []
        assert (await h.client.get("/api/v1/pause", headers=ADMIN_AUTH)).json() == {"paused": False}
    assert noop.checks == []


# --- depth ---------------------------------------------------------------------------------


def nested(depth: int, leaf: Any = "x", *, kind: str = "list") -> Any:
    value = leaf
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


@FUZZ
@given(st.integers(MAX_DEPTH, 3000), st.sampled_from(["list", "dict"]))
def test_deep_nesting_is_refused_not_crashing(depth: int, kind: str) -> None:
    """A document nested deeper than MAX_DEPTH, however deep (as far as the parser goes,
    and beyond), is a 4xx: 422 naming where once parsed, 400 when the parser gives up;
    at MAX_DEPTH it is accepted."""
    text = ("[" * depth + "]" * depth) if kind == "list" else ('{"k":' * depth + "1" + "}" * depth)
    if depth == MAX_DEPTH:
        decode_json(text.encode())
        return
    error = refused(text.encode())
    assert error.status in (400, 422)
    assert "nested" in error.message


async def test_deep_params_and_labels_are_422(
    tmp_path: Path, handlers: HandlerRegistry, noop: Any
) -> None:
    """A manual trigger whose params nest 33 to 900 deep (a RecursionError in templating
    once) and a webhook with deep structure in a label or an unknown field: 422 (or 400
    past the parser's own limit), never 500; nothing runs."""
    async with running_healer(
        noop_config(tmp_path / "j.db"), handlers=handlers, secrets=Secrets(admin_token=ADMIN)
    ) as h:
        for depth in (MAX_DEPTH + 1, 500, 900):
            for kind in ("list", "dict"):
                trigger = {
                    "handler": "test.noop",
                    "params": {"target": "web-1", "x": nested(depth, kind=kind)},
                }
                resp = await h.client.post("/api/v1/heals", json=trigger, headers=ADMIN_AUTH)
                assert resp.status_code in (400, 422), resp.text
                body = alert_payload({"alertname": "Poke", "target": nested(depth)})  # type: ignore[dict-item]
                body["groupLabels"] = nested(depth, kind=kind)
                resp = await h.client.post("/api/v1/alerts", json=body, headers=JSON)
                assert resp.status_code in (400, 422), resp.text
        resp = await h.client.post(
            "/api/v1/heals",
            headers=ADMIN_AUTH,
            json={
                "handler": "test.noop",
                "params": {"target": "web-1", "x": nested(MAX_DEPTH - 3)},
            },
        )
        assert resp.status_code == 422 and "params" in resp.json()["error"]  # the model's no
        assert await h.services.journal.list_heals() == []
    assert noop.checks == []


# --- what is stored --------------------------------------------------------------------------


async def test_alert_log_reads_every_accepted_body(
    tmp_path: Path, handlers: HandlerRegistry
) -> None:
    """Bodies that are valid but unusual (non-ASCII raw and escaped, astral characters,
    \\u2028, escaped slashes, huge exponents, odd whitespace, unknown fields of any JSON
    type) are accepted and ``SELECT * FROM alert_log`` reads each alert's labels back."""
    labels = {"alertname": "Quiet", "é": 'ü😀\u2028\\/"', "path": "/x"}
    extras: list[Any] = [1e308, -0.0, 12345678901234567890, None, [], {}, "\u0000"]
    bodies = [
        json.dumps(alert_payload(labels), ensure_ascii=ascii_, indent=indent)
        for ascii_ in (True, False)
        for indent in (None, "\t")
    ]
    bodies.append(
        json.dumps({**alert_payload(labels), "extra": extras})
        .replace('"/x"', '"\\/x"')
        .replace(": ", " :\r\n ")
    )
    async with running_healer(
        noop_config(tmp_path / "j.db"), handlers=handlers, secrets=Secrets()
    ) as h:
        for i, text in enumerate(bodies):
            body = text.replace("0123456789abcdef", f"{i:016x}")
            resp = await h.client.post("/api/v1/alerts", content=body.encode(), headers=JSON)
            assert resp.status_code == 200, resp.text
    with sqlite3.connect(tmp_path / "j.db") as db:
        rows = db.execute("SELECT * FROM alert_log").fetchall()
        stored = db.execute("SELECT labels FROM alert_log").fetchall()
    assert len(rows) == len(bodies)
    assert [json.loads(text) for (text,) in stored] == [labels] * len(bodies)
