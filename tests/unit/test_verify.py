"""Verification through Prometheus (healer.verify), against a fake Prometheus HTTP API
served by ``httpx.MockTransport``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from healer.outcomes import Outcome
from healer.verify import Condition, Verifier, alerts_query, promql_string

PROM = "http://prometheus:9090"
LABELS = {"alertname": "WebDown", "instance": "web-1", "job": "web"}


def vector(*values: float) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"i": str(i)}, "value": [time.time(), str(v)]} for i, v in enumerate(values)]}}


HEALTHY = vector()  # ALERTS series absent
FIRING = vector(1)
ERROR = "error"  # the fake raises a connection error for this answer


@dataclass
class FakePrometheus:
    """Answers /api/v1/status/config from ``config_yaml`` and /api/v1/query from
    ``answer(n)`` (n = 0-based query count); records every query with its time."""

    answer: Callable[[int], Any]
    config_yaml: str = "global:\n  evaluation_interval: 1s\n"
    queries: list[tuple[float, str]] = field(default_factory=list)
    config_reads: int = 0
    # alertname -> the rule's `for:` in seconds, served at /api/v1/rules
    rule_for: dict[str, float] = field(default_factory=dict)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/rules":
            rules = [{"type": "alerting", "name": n, "duration": d}
                     for n, d in self.rule_for.items()]
            return httpx.Response(200, json={"status": "success",
                                             "data": {"groups": [{"rules": rules}]}})
        if request.url.path == "/api/v1/status/config":
            self.config_reads += 1
            return httpx.Response(200, json={"status": "success",
                                             "data": {"yaml": self.config_yaml}})
        assert request.url.path == "/api/v1/query"
        n = len(self.queries)
        self.queries.append((time.monotonic(), request.url.params["query"]))
        reply = self.answer(n)
        if reply == ERROR:
            raise httpx.ConnectError("connection refused", request=request)
        if isinstance(reply, httpx.Response):
            return reply
        return httpx.Response(200, json=reply)


@dataclass
class Recorder:
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def __call__(self, kind: str, data: dict[str, Any]) -> None:
        self.events.append((kind, data))

    def kinds(self) -> list[str]:
        return [k for k, _ in self.events]


@pytest.fixture
async def make_verifier() -> AsyncIterator[Callable[..., Verifier]]:
    clients: list[httpx.AsyncClient] = []

    def make(fake: FakePrometheus, **kw: Any) -> Verifier:
        client = httpx.AsyncClient(transport=httpx.MockTransport(fake))
        clients.append(client)
        return Verifier(client, PROM, timeout=1.0, **kw)

    yield make
    for client in clients:
        await client.aclose()


# --- the default query ---------------------------------------------------------------


def test_alerts_query_selects_the_alerts_own_series() -> None:
    """The default condition is ALERTS{alertname=..., alertstate="firing", <labels>} with
    the other labels sorted."""
    assert alerts_query(LABELS) == (
        'ALERTS{alertname="WebDown", alertstate="firing", instance="web-1", job="web"}')


def test_alerts_query_escapes_label_values() -> None:
    """Quotes, backslashes and newlines in a label value are escaped: the value stays a
    PromQL string literal and cannot close the selector."""
    query = alerts_query({"alertname": "X", "path": 'C:\\dir"} or vector(1) #\nx'})
    assert query == ('ALERTS{alertname="X", alertstate="firing", '
                     'path="C:\\\\dir\\"} or vector(1) #\\nx"}')


def test_promql_string_round_trips_through_python_unescaping() -> None:
    """The escaping is the inverse of PromQL's (Go) string unescaping for these characters."""
    value = 'a"b\\c\nd'
    quoted = promql_string(value)
    assert quoted.startswith('"') and quoted.endswith('"')
    inner = quoted[1:-1]
    assert '"' not in inner.replace('\\"', "")
    assert inner.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\") == value


def test_alerts_query_drops_external_and_alert_only_labels() -> None:
    """External labels (added on the way to Alertmanager, absent from Prometheus' own
    ALERTS series) and a stray alertstate are left out of the selector."""
    labels = {**LABELS, "cluster": "prod", "replica": "a", "alertstate": "firing"}
    query = alerts_query(labels, frozenset({"cluster", "replica"}))
    assert query == 'ALERTS{alertname="WebDown", alertstate="firing", instance="web-1", job="web"}'


async def test_external_labels_are_read_from_prometheus(
        make_verifier: Callable[..., Verifier]) -> None:
    """query_for asks Prometheus for its config and drops its external label names."""
    fake = FakePrometheus(lambda n: HEALTHY, config_yaml=(
        "global:\n  evaluation_interval: 15s\n  external_labels:\n    cluster: prod\n"
        "    replica: a\n"))
    verifier = make_verifier(fake)
    query = await verifier.query_for(Condition(labels={**LABELS, "cluster": "prod"}))
    assert "cluster" not in query
    assert query == alerts_query(LABELS)
    assert await verifier.interval() == 15.0
    assert fake.config_reads == 1  # cached between calls


async def test_a_custom_query_is_used_as_given(make_verifier: Callable[..., Verifier]) -> None:
    """A rule's verify.query replaces the ALERTS selector verbatim."""
    fake = FakePrometheus(lambda n: vector(0))
    verifier = make_verifier(fake)
    condition = Condition(labels=LABELS, query='up{job="web"} == 0')
    verdict = await verifier.verify(condition, stable_for=0, timeout=1, interval=0.05,
                                    record=Recorder())
    assert verdict.outcome is Outcome.RECOVERED
    assert fake.queries[0][1] == 'up{job="web"} == 0'


# --- one sample --------------------------------------------------------------------------


@pytest.mark.parametrize(("reply", "healthy"), [
    (vector(), True), (vector(0, 0), True), (vector(0, 2), False), (vector(1), False),
    ({"status": "success", "data": {"resultType": "scalar", "result": [1, "0"]}}, True),
    ({"status": "success", "data": {"resultType": "scalar", "result": [1, "3"]}}, False),
])
async def test_healthy_means_empty_or_all_zero(make_verifier: Callable[..., Verifier],
                                               reply: Any, healthy: bool) -> None:
    """A result is healthy when it is empty or every value is 0 (vector or scalar)."""
    sample = await make_verifier(FakePrometheus(lambda n: reply)).sample("q")
    assert sample.healthy is healthy


@pytest.mark.parametrize("reply", [
    ERROR,
    httpx.Response(503, text="<html>bad gateway</html>"),
    httpx.Response(400, json={"status": "error", "error": "parse error"}),
    {"status": "success", "data": {"resultType": "matrix", "result": []}},
    {"status": "success", "data": {}},
    {"status": "success", "data": {"resultType": "vector", "result": [{"value": [1, "x"]}]}},
])
async def test_a_failed_query_is_an_error_sample(make_verifier: Callable[..., Verifier],
                                                 reply: Any) -> None:
    """Connection errors, HTTP errors, non-JSON and malformed answers give healthy=None with
    the error recorded; they are never read as healthy."""
    sample = await make_verifier(FakePrometheus(lambda n: reply)).sample("q")
    assert sample.healthy is None
    assert sample.error
    assert "error" in sample.as_event()


# --- the verify loop ---------------------------------------------------------------------


async def test_recovered_after_stable_for_of_healthy_samples(
        make_verifier: Callable[..., Verifier]) -> None:
    """Recovery is declared only once healthy samples have spanned ``stable_for``."""
    fake = FakePrometheus(lambda n: HEALTHY)
    record = Recorder()
    verdict = await make_verifier(fake).verify(Condition(labels=LABELS), stable_for=0.2,
                                               timeout=5, interval=0.05, record=record)
    assert verdict.outcome is Outcome.RECOVERED
    assert verdict.recovered_at is not None
    first, last = fake.queries[0][0], fake.queries[-1][0]
    assert last - first >= 0.2
    assert verdict.samples == len(fake.queries) >= 3
    assert record.kinds() == ["verify_start"] + ["verify_sample"] * verdict.samples
    assert record.events[0][1]["query"] == alerts_query(LABELS)


async def test_still_firing_is_not_recovered_at_the_deadline(
        make_verifier: Callable[..., Verifier]) -> None:
    """A condition that stays unhealthy ends not_recovered once the timeout passes."""
    fake = FakePrometheus(lambda n: FIRING)
    started = time.monotonic()
    verdict = await make_verifier(fake).verify(Condition(labels=LABELS), stable_for=0,
                                               timeout=0.3, interval=0.05, record=Recorder())
    assert verdict.outcome is Outcome.NOT_RECOVERED
    assert "still unhealthy after 0.3s" in verdict.reason
    assert time.monotonic() - started >= 0.3
    assert verdict.recovered_at is None


async def test_healthy_but_not_long_enough_is_not_recovered(
        make_verifier: Callable[..., Verifier]) -> None:
    """Healthy samples that do not yet span stable_for at the deadline are not a recovery."""
    fake = FakePrometheus(lambda n: HEALTHY)
    verdict = await make_verifier(fake).verify(Condition(labels=LABELS), stable_for=10,
                                               timeout=0.2, interval=0.05, record=Recorder())
    assert verdict.outcome is Outcome.NOT_RECOVERED
    assert "not yet for 10s" in verdict.reason


async def test_prometheus_unreachable_is_unverified(
        make_verifier: Callable[..., Verifier]) -> None:
    """When every query fails the verdict is unverified, with the error as the reason."""
    fake = FakePrometheus(lambda n: ERROR)
    record = Recorder()
    verdict = await make_verifier(fake).verify(Condition(labels=LABELS), stable_for=0,
                                               timeout=0.2, interval=0.05, record=record)
    assert verdict.outcome is Outcome.UNVERIFIED
    assert "unreachable" in verdict.reason and "connection refused" in verdict.reason
    assert all(d["healthy"] is None for k, d in record.events if k == "verify_sample")


async def test_an_outage_at_the_deadline_is_never_recovered(
        make_verifier: Callable[..., Verifier]) -> None:
    """Healthy samples followed by an outage that lasts to the deadline give unverified:
    a healthy streak Prometheus could not confirm is not a recovery."""
    fake = FakePrometheus(lambda n: HEALTHY if n < 2 else ERROR)
    verdict = await make_verifier(fake).verify(Condition(labels=LABELS), stable_for=5,
                                               timeout=0.3, interval=0.05, record=Recorder())
    assert verdict.outcome is Outcome.UNVERIFIED


async def test_an_error_breaks_the_healthy_streak(
        make_verifier: Callable[..., Verifier]) -> None:
    """An error sample in the middle of a healthy streak restarts the stable_for window:
    recovery comes at least stable_for after the error, not after the first healthy sample."""
    fake = FakePrometheus(lambda n: ERROR if n == 2 else HEALTHY)
    verdict = await make_verifier(fake).verify(Condition(labels=LABELS), stable_for=0.2,
                                               timeout=5, interval=0.05, record=Recorder())
    assert verdict.outcome is Outcome.RECOVERED
    error_at, recovered_at = fake.queries[2][0], fake.queries[-1][0]
    assert recovered_at - error_at >= 0.2


async def test_an_unhealthy_sample_breaks_the_healthy_streak(
        make_verifier: Callable[..., Verifier]) -> None:
    """Flapping (healthy, firing, healthy) restarts the window the same way."""
    fake = FakePrometheus(lambda n: FIRING if n == 2 else HEALTHY)
    verdict = await make_verifier(fake).verify(Condition(labels=LABELS), stable_for=0.2,
                                               timeout=5, interval=0.05, record=Recorder())
    assert verdict.outcome is Outcome.RECOVERED
    assert fake.queries[-1][0] - fake.queries[2][0] >= 0.2


async def test_the_interval_is_read_from_prometheus(
        make_verifier: Callable[..., Verifier]) -> None:
    """With no interval given, polls happen at Prometheus' evaluation_interval: a 100ms
    interval over a 0.5s timeout gives about six samples, not one per second."""
    fake = FakePrometheus(lambda n: FIRING,
                          config_yaml="global:\n  evaluation_interval: 100ms\n")
    record = Recorder()
    verdict = await make_verifier(fake).verify(Condition(labels=LABELS), stable_for=0,
                                               timeout=0.5, interval=None, record=record)
    assert record.events[0][1]["interval"] == pytest.approx(0.1)
    assert 3 <= verdict.samples <= 7


async def test_a_slower_prometheus_interval_gives_fewer_samples(
        make_verifier: Callable[..., Verifier]) -> None:
    """The same timeout with a 250ms evaluation interval samples about three times."""
    fake = FakePrometheus(lambda n: FIRING,
                          config_yaml="global:\n  evaluation_interval: 250ms\n")
    verdict = await make_verifier(fake).verify(Condition(labels=LABELS), stable_for=0,
                                               timeout=0.5, interval=None, record=Recorder())
    assert 2 <= verdict.samples <= 4


async def test_a_configured_interval_overrides_prometheus(
        make_verifier: Callable[..., Verifier]) -> None:
    """prometheus.evaluation_interval in healer's config wins over Prometheus' own."""
    fake = FakePrometheus(lambda n: FIRING)
    verifier = make_verifier(fake, evaluation_interval=0.05)
    assert await verifier.interval() == 0.05
    assert fake.config_reads == 0


async def test_interval_falls_back_when_prometheus_is_down(
        make_verifier: Callable[..., Verifier]) -> None:
    """Without Prometheus' config the interval is Prometheus' default (1m), and the
    default query still builds (no external labels dropped)."""

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client = httpx.AsyncClient(transport=httpx.MockTransport(down))
    try:
        verifier = Verifier(client, PROM, timeout=1.0)
        assert await verifier.interval() == 60.0
        assert await verifier.query_for(Condition(labels=LABELS)) == alerts_query(LABELS)
    finally:
        await client.aclose()


async def test_stable_for_is_raised_to_cover_the_rules_for(make_verifier) -> None:
    """With `for: 3s` on the alert rule, a re-broken service sits in pending (no firing
    series) for 3 s; stable_for 0 would call it recovered, so it is raised past the hold."""
    fake = FakePrometheus(answer=lambda n: HEALTHY if n < 2 else FIRING,
                          rule_for={"ServiceDown": 3.0})
    verifier = make_verifier(fake, evaluation_interval=0.05)
    record = Recorder()
    verdict = await verifier.verify(Condition(labels={"alertname": "ServiceDown"}),
                                    stable_for=0.0, timeout=1.0, interval=None, record=record)
    assert verdict.outcome is Outcome.NOT_RECOVERED
    start = dict(record.events)["verify_start"]
    assert start["stable_for_raised"] == {"from": 0.0, "rule_for": 3.0}
    assert start["stable_for"] == 3.05


async def test_rule_without_for_keeps_stable_for(make_verifier) -> None:
    """An alert rule with no `for:` leaves the configured stable_for alone."""
    fake = FakePrometheus(answer=lambda n: HEALTHY, rule_for={"ServiceDown": 0.0})
    verifier = make_verifier(fake, evaluation_interval=0.05)
    record = Recorder()
    verdict = await verifier.verify(Condition(labels={"alertname": "ServiceDown"}),
                                    stable_for=0.1, timeout=2.0, interval=None, record=record)
    assert verdict.outcome is Outcome.RECOVERED
    assert "stable_for_raised" not in dict(record.events)["verify_start"]
