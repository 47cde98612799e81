"""Alertmanager's webhook payload, parsed at the edge (healer.payload)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from healer.errors import PayloadError
from healer.payload import parse_webhook

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "alertmanager-0.25"


def fixture(name: str) -> bytes:
    path = FIXTURES / name
    if not path.is_file():
        pytest.fail(f"missing Alertmanager fixture {path} (tests/fixtures/ ships them)")
    return path.read_bytes()


def payload(**over: Any) -> dict[str, Any]:
    alert = {
        "status": "firing",
        "labels": {"alertname": "WebDown", "instance": "web-1"},
        "annotations": {},
        "startsAt": "2024-05-01T10:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": "0123abcd",
    }
    alert.update(over.pop("alert", {}))
    body = {
        "version": "4",
        "status": "firing",
        "receiver": "healer",
        "groupKey": "{}",
        "alerts": [alert],
    }
    body.update(over)
    return body


def reject(body: Any) -> PayloadError:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(PayloadError) as info:
        parse_webhook(raw)
    return info.value


# --- real Alertmanager 0.25 payloads ------------------------------------------------------


def test_firing_single_alert_fixture_parses() -> None:
    """A real firing notification gives one Alert with labels, annotations and times."""
    message = parse_webhook(fixture("firing-odoo-memory-leak.json"))
    assert (message.version, message.status, message.receiver) == ("4", "firing", "healer")
    [alert] = [a.to_alert() for a in message.alerts]
    assert alert.fingerprint == "d452607de083d9dd"
    assert alert.status == "firing"
    assert alert.name == "OdooMemoryLeak"
    assert alert.labels["container"] == "odoo-accounting"
    assert alert.annotations["summary"] == "Memory above 90% of limit"
    assert alert.starts_at == datetime(2026, 11, 22, 8, 36, 41, 327228, tzinfo=UTC)
    assert alert.generator_url.startswith("http://prometheus:9090/graph?")


def test_go_zero_time_ends_at_means_not_ended() -> None:
    """Alertmanager sends ``0001-01-01T00:00:00Z`` for a firing alert's endsAt: that is
    "no end time", not the year 1."""
    message = parse_webhook(fixture("firing-odoo-memory-leak.json"))
    assert message.alerts[0].to_alert().ends_at is None


def test_firing_group_fixture_gives_every_alert() -> None:
    """A grouped notification carries several alerts, each with its own labels."""
    message = parse_webhook(fixture("firing-group-odoo-cron-stuck.json"))
    alerts = [a.to_alert() for a in message.alerts]
    assert [a.fingerprint for a in alerts] == ["068ded78c6e06e51", "4119dc3f97f0b3ed"]
    assert {a.labels["cron"] for a in alerts} == {
        "Base: Auto-vacuum internal data",
        "Mail: Email Queue Manager",
    }
    assert all(a.ends_at is None for a in alerts)


def test_resolved_fixture_keeps_its_end_time() -> None:
    """A resolved alert keeps its real endsAt."""
    message = parse_webhook(fixture("resolved-odoo-memory-leak.json"))
    [alert] = [a.to_alert() for a in message.alerts]
    assert alert.status == "resolved"
    assert alert.ends_at == datetime(2026, 11, 22, 8, 36, 41, tzinfo=UTC)


def test_extra_fields_are_ignored() -> None:
    """Fields healer does not use (and future ones) do not make a payload invalid."""
    body = payload(
        externalURL="http://am", commonLabels={}, futureField=[1], alert={"newThing": {"a": 1}}
    )
    assert parse_webhook(json.dumps(body).encode()).alerts[0].fingerprint == "0123abcd"


# --- malformed bodies --------------------------------------------------------------------


def test_invalid_json_is_400() -> None:
    """A body that is not JSON is a 400 whose message says where parsing stopped."""
    error = reject(b'{"version": "4",')
    assert error.status == 400
    assert error.message.startswith("invalid JSON:") and "line 1" in error.message


def test_non_utf8_is_400() -> None:
    """Bytes that are not UTF-8 are a 400, not a crash."""
    assert reject(b'{"version": "\xff\xfe"}').status == 400


@pytest.mark.parametrize("body", [[], "4", 4, None])
def test_body_must_be_an_object(body: Any) -> None:
    """A JSON array, string, number or null is refused (422) as not a webhook payload."""
    error = reject(body)
    assert error.status == 422
    assert "JSON object" in error.message


@pytest.mark.parametrize("version", ["3", 4, None])
def test_only_version_4_is_spoken(version: Any) -> None:
    """A payload of another version is a 422 naming the version field and what was sent."""
    error = reject(payload(version=version))
    assert error.status == 422
    assert error.message.startswith("version:")
    assert json.dumps(version) in error.message


def test_alerts_must_be_a_list() -> None:
    """``alerts`` as an object is a 422 naming the field."""
    error = reject(payload(alerts={"0": {}}))
    assert error.status == 422
    assert error.message.startswith("alerts:")


def test_non_string_label_values_name_the_label() -> None:
    """A label value that is not a string is refused with its full path."""
    error = reject(payload(alert={"labels": {"alertname": "WebDown", "x": 5}}))
    assert error.status == 422
    assert "alerts[0].labels.x" in error.message


def test_missing_fingerprint_is_refused() -> None:
    """Without a fingerprint an alert cannot be deduplicated, so the payload is refused."""
    body = payload()
    del body["alerts"][0]["fingerprint"]
    error = reject(body)
    assert error.status == 422
    assert "alerts[0].fingerprint" in error.message


@pytest.mark.parametrize("fingerprint", ["", "../x", "a b", "x" * 65])
def test_malformed_fingerprints_are_refused(fingerprint: str) -> None:
    """A fingerprint must be short and alphanumeric: it becomes a journal key."""
    assert "alerts[0].fingerprint" in reject(payload(alert={"fingerprint": fingerprint})).message


def test_bad_status_and_time_name_their_field() -> None:
    """Each bad field is named; several at once are all listed."""
    error = reject(payload(alert={"status": "pending", "startsAt": "yesterday"}))
    assert "alerts[0].status" in error.message and "alerts[0].startsAt" in error.message


def test_many_errors_are_capped() -> None:
    """A payload with many bad alerts gives a bounded message that says how many more."""
    bad = [{"status": "firing"}] * 10
    error = reject(payload(alerts=bad))
    assert "more)" in error.message
    assert len(error.message) < 2000


def test_absurdly_deep_json_is_a_400_not_a_crash() -> None:
    """Nesting deep enough to exhaust the parser's recursion is refused as bad JSON."""
    depth = 200_000
    error = reject(b"[" * depth + b"]" * depth)
    assert error.status == 400
    assert "nested too deeply" in error.message


def test_deep_json_inside_a_label_is_a_422() -> None:
    """Deep (but parseable) nesting where a string belongs is an ordinary field error."""
    deep: Any = "x"
    for _ in range(500):
        deep = [deep]
    error = reject(payload(alert={"labels": {"alertname": "A", "x": deep}}))
    assert error.status == 422
    assert "alerts[0].labels.x" in error.message


def test_control_characters_in_label_values_are_kept_as_data() -> None:
    """NUL, escape sequences and newlines in a label value are accepted verbatim: they are
    data, and later layers (params models, allowlist) decide what they may reach."""
    nasty = "web\x00-1\x1b[31m\n\r\t;$(id)"
    body = payload(
        alert={
            "labels": {"alertname": "WebDown", "instance": nasty},
            "annotations": {"summary": "\x07bell"},
        }
    )
    alert = parse_webhook(json.dumps(body).encode()).alerts[0].to_alert()
    assert alert.labels["instance"] == nasty
    assert alert.annotations["summary"] == "\x07bell"


def test_an_empty_alert_list_is_valid() -> None:
    """A notification with no alerts parses (nothing to do), it is not an error."""
    assert parse_webhook(json.dumps(payload(alerts=[])).encode()).alerts == []


def _with_label_value(json_value: str, encoding: str = "utf-8") -> bytes:
    """The test payload with the alertname's JSON text replaced by ``json_value``."""
    text = json.dumps(payload()).replace('"WebDown"', json_value)
    return text.encode(encoding, "surrogatepass")


@pytest.mark.parametrize(
    "body",
    [
        _with_label_value('"\\ud800"'),
        _with_label_value('"\\uDBFF"'),
        _with_label_value('"a\\u0026\\udc00"'),  # among Go's \u0026-style escapes
        _with_label_value('"\ud800"'),  # raw bytes: json.loads decodes with surrogatepass
        _with_label_value('"\ud800"', "utf-16-le"),  # a UTF-16 body
    ],
    ids=["escape", "upper-case escape", "after a Go escape", "raw bytes", "utf-16 body"],
)
def test_a_lone_surrogate_is_refused_however_it_is_spelled(body: bytes) -> None:
    """The per-string Unicode check is skipped for bodies that cannot hold a surrogate;
    every way a body can carry one still gets a 4xx, never a stored alert."""
    with pytest.raises(PayloadError) as err:
        parse_webhook(body)
    assert err.value.status in (400, 422)
    assert "surrogate" in err.value.message or "JSON" in err.value.message
