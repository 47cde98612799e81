"""healer's PromQL quoting against a real Prometheus (2.42 here): what ``promql_string``
writes, Prometheus reads back as exactly the value, and a selector carrying hostile
label names or values is either the alert's own selector or refused, never a query of
another shape (tests/unit/test_promql_selector.py proves the shape for any label set).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from healer.outcomes import Outcome
from healer.verify import Condition, Verifier, alerts_query, promql_string
from tests.support import PrometheusFactory

pytestmark = pytest.mark.prometheus

# Bounded: one Prometheus, one query per example.
ROUND_TRIP = settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
HAND_PICKED = [
    'zz="x"} or vector(0) or ALERTS{q',
    "a\nb\r\tc",
    "\\",
    '\\"',
    "\x00\x01\x7f",
    "\ufffd",
    "\u2028",
    "é",
    "😀",
    "'`",
    "\\u0022",
]


def _query(url: str, expr: str) -> httpx.Response:
    with httpx.Client(timeout=5.0) as client:
        return client.get(f"{url}/api/v1/query", params={"query": expr})


@pytest.fixture
def prom_url(prometheus: PrometheusFactory) -> str:
    return prometheus.start([]).url


def _read_back(url: str, value: str) -> Any:
    resp = _query(url, f'label_replace(vector(1), "v", {promql_string(value)}, "", "")')
    assert resp.status_code == 200, resp.text
    [series] = resp.json()["data"]["result"]
    return series["metric"]["v"]


def test_hand_picked_values_read_back_exactly(prom_url: str) -> None:
    """Injections, NUL and control characters, U+FFFD (which PromQL's lexer takes for
    invalid UTF-8 when raw), line separators and astral characters round-trip through
    Prometheus' own string parsing unchanged."""
    for value in HAND_PICKED:
        assert _read_back(prom_url, value) == value


def test_any_value_reads_back_exactly(prom_url: str) -> None:
    """Hypothesis-generated values (any Unicode but surrogates, which the edge refuses)
    round-trip through Prometheus unchanged."""

    @ROUND_TRIP
    @given(st.text(min_size=1, max_size=30))
    def check(value: str) -> None:
        assert _read_back(prom_url, value) == value

    check()


async def test_a_hostile_label_set_is_never_a_healthy_reading(prom_url: str) -> None:
    """The verifier's sample of a selector with injected names and values: with classic
    names Prometheus runs the alert's own selector (no such alert: an empty vector); a
    name outside the classic grammar is written quoted, which Prometheus 2 refuses, so
    the sample is an error (``healthy is None``), never a forged healthy one."""
    hostile_value = {"alertname": 'Disk"} or vector(0) or ALERTS{q="', "path": "a\\\n\ufffd"}
    hostile_name = {"alertname": "Disk", 'zz="x"} or vector(0) or ALERTS{q': "1"}
    async with httpx.AsyncClient() as client:
        verifier = Verifier(client, prom_url, timeout=5.0, evaluation_interval=1.0)
        sample = await verifier.sample(alerts_query(hostile_value))
        assert (sample.healthy, sample.series, sample.error) == (True, 0, "")
        sample = await verifier.sample(alerts_query(hostile_name))
        assert sample.healthy is None and "HTTP 400" in sample.error


async def test_a_utf8_label_name_ends_unverified_on_prometheus_2(prom_url: str) -> None:
    """A whole verification of an alert with a UTF-8 label name (``service.name``)
    against Prometheus 2: the quoted selector is refused at every poll, so the heal ends
    ``unverified`` (never ``recovered``), and verify_start names the quoted label."""
    events: list[tuple[str, dict[str, Any]]] = []

    async def record(kind: str, data: dict[str, Any]) -> None:
        events.append((kind, data))

    async with httpx.AsyncClient() as client:
        verifier = Verifier(client, prom_url, timeout=5.0, evaluation_interval=0.1)
        verdict = await verifier.verify(
            Condition(labels={"alertname": "Disk", "service.name": "api"}),
            stable_for=0,
            timeout=0.5,
            interval=0.1,
            record=record,
        )
    assert verdict.outcome is Outcome.UNVERIFIED
    assert events[0] == ("verify_start", {**events[0][1], "quoted_label_names": ["service.name"]})
    assert all(data["healthy"] is None for kind, data in events if kind == "verify_sample")
