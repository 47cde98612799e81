"""The webhook payload parser fuzzed with hypothesis: whatever bytes arrive,
``parse_webhook`` returns a message the engine can journal, or raises ``PayloadError``
with a 4xx status. Any other exception would be a 500 (and Alertmanager retrying a
poisoned notification for ever).

Derandomized with a bounded number of examples, so CI runs the same inputs every time.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from healer.errors import PayloadError
from healer.payload import parse_webhook
from healer.store import alert_key_time

FUZZ = settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Values a fuzzer would not think of by itself: lone surrogates (valid JSON escapes,
# invalid Unicode), NUL, escapes, injection attempts; times at the edges of the calendar.
NASTY_TEXT = st.sampled_from(
    [
        "\ud800",
        "a\udfffb",
        "\x00",
        "\x1b[2J",
        "'; DROP TABLE alerts; --",
        "../../etc/passwd",
        "$(id)",
        "{{ labels.alertname }}",
        "4",
        "",
    ]
)
NASTY_TIMES = st.sampled_from(
    [
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "0001-01-01T00:00:00Z",
        "2024-02-30T00:00:00Z",
        "2024-05-01T10:00:00",
        "2024-05-01",
        "yesterday",
    ]
)


def mostly(
    plain: st.SearchStrategy[Any], odd: st.SearchStrategy[Any], odds: int = 3
) -> st.SearchStrategy[Any]:
    """``odd`` one time in ``odds + 1``, else ``plain`` (one_of would pick each half the
    time, and a message needs most of its fields valid to reach the deep checks)."""
    return st.integers(0, odds).flatmap(lambda n: odd if n == 0 else plain)


TEXT = mostly(st.text(max_size=12), NASTY_TEXT, odds=2)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), TEXT)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(TEXT, children, max_size=4)
    ),
    max_leaves=16,
)


def maybe(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a valid value, sometimes any JSON value at all."""
    return mostly(valid, JSON_VALUES, odds=9)


TIMES = mostly(st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()), NASTY_TIMES)
ALERTS = st.fixed_dictionaries(
    {
        "status": maybe(st.sampled_from(["firing", "resolved"])),
        "labels": maybe(st.dictionaries(TEXT, TEXT, max_size=4)),
        "annotations": maybe(st.dictionaries(TEXT, TEXT, max_size=2)),
        "startsAt": maybe(TIMES),
        "endsAt": maybe(TIMES),
        "fingerprint": maybe(st.from_regex(r"[0-9a-f]{1,16}", fullmatch=True)),
    },
    optional={"generatorURL": maybe(TEXT), "extra": JSON_VALUES},
)
MESSAGES = st.fixed_dictionaries(
    {
        "version": maybe(st.just("4")),
        "status": maybe(st.sampled_from(["firing", "resolved"])),
        "alerts": maybe(st.lists(ALERTS, max_size=4)),
    },
    optional={
        "receiver": maybe(TEXT),
        "groupKey": maybe(TEXT),
        "truncatedAlerts": maybe(st.integers(min_value=0)),
        "groupLabels": JSON_VALUES,
    },
)


def assert_parses_or_refuses(body: bytes) -> None:
    """The property: a journal-ready message, or a 4xx PayloadError; nothing else."""
    try:
        message = parse_webhook(body)
    except PayloadError as exc:
        assert 400 <= exc.status < 500, exc.status
        assert exc.message
        return
    for model in message.alerts:
        alert = model.to_alert()
        alert_key_time(alert.starts_at)  # the journal key must be computable
        # Everything journaled as text must be storable as UTF-8.
        json.dumps({**alert.labels, **alert.annotations}, ensure_ascii=False).encode()
        assert alert.starts_at.tzinfo is not None


@FUZZ
@given(st.binary(max_size=512))
def test_arbitrary_bytes_parse_or_are_refused(body: bytes) -> None:
    """Random bytes never raise anything but a 4xx PayloadError."""
    assert_parses_or_refuses(body)


@FUZZ
@given(JSON_VALUES)
def test_arbitrary_json_parses_or_is_refused(value: Any) -> None:
    """Any JSON document (objects, arrays, scalars, nested) parses or gets a 4xx."""
    assert_parses_or_refuses(json.dumps(value).encode())


@FUZZ
@given(MESSAGES)
def test_near_valid_messages_parse_or_are_refused(message: dict[str, Any]) -> None:
    """Alertmanager-shaped messages with some fields swapped for anything (wrong types,
    lone surrogates, out-of-range times) parse into journal-ready alerts or get a 4xx."""
    assert_parses_or_refuses(json.dumps(message).encode())


@FUZZ
@given(MESSAGES, st.integers(min_value=0), st.binary(min_size=1, max_size=4))
def test_corrupted_messages_parse_or_are_refused(
    message: dict[str, Any], at: int, junk: bytes
) -> None:
    """A valid-looking body with bytes spliced in anywhere (a truncated or corrupted
    transfer) parses or gets a 4xx."""
    body = json.dumps(message).encode()
    at %= len(body) + 1
    assert_parses_or_refuses(body[:at] + junk + body[at + len(junk) :])


def test_the_regressions_fuzzing_found() -> None:
    """Inputs that once escaped as 500s: a 5000-digit number (ValueError from Python's
    int parser), a lone surrogate in a label (unstorable in the journal), and a startsAt
    whose UTC value is out of range (OverflowError)."""
    base = {
        "version": "4",
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "A"},
                "startsAt": "2024-05-01T10:00:00Z",
                "fingerprint": "ab",
            }
        ],
    }
    cases = {
        b'{"version": "4", "truncatedAlerts": ' + b"9" * 5000 + b"}": (
            400,
            "invalid JSON: a number is too long",
        ),
        json.dumps(
            {
                **base,
                "alerts": [
                    {
                        **base["alerts"][0],  # type: ignore[dict-item]
                        "labels": {"alertname": "\ud800"},
                    }
                ],
            }
        ).encode(): (422, "alerts[0].labels.alertname: Value error, not valid Unicode"),
        json.dumps(
            {
                **base,
                "alerts": [
                    {
                        **base["alerts"][0],  # type: ignore[dict-item]
                        "startsAt": "0001-01-01T00:00:00+01:00",
                    }
                ],
            }
        ).encode(): (422, "alerts[0].startsAt: Value error, time out of range"),
    }
    for body, (status, message) in cases.items():
        try:
            parse_webhook(body)
        except PayloadError as exc:
            assert (exc.status, exc.message[: len(message)]) == (status, message)
        else:
            raise AssertionError(f"accepted {body[:60]!r}")


def test_a_time_without_offset_is_utc() -> None:
    """A startsAt without an offset is read as UTC, so an alert's identity does not
    depend on the server's time zone."""
    body = {
        "version": "4",
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": {},
                "startsAt": "2024-05-01T10:00:00",
                "fingerprint": "ab",
            }
        ],
    }
    alert = parse_webhook(json.dumps(body).encode()).alerts[0].to_alert()
    assert alert_key_time(alert.starts_at) == "2024-05-01T10:00:00+00:00"
