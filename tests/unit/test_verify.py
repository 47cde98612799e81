"""Verification through Prometheus (healer.verify), against a fake Prometheus HTTP API
served by ``httpx.MockTransport``."""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from healer.outcomes import Outcome
from healer.verify import (
    AFTER_EVALUATION,
    Condition,
    EvalSchedule,
    Verifier,
    alerts_query,
    next_poll,
    promql_string,
)

PROM = "http://prometheus:9090"
LABELS = {"alertname": "WebDown", "instance": "web-1", "job": "web"}


def vector(*values: float) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [
                {"metric": {"i": str(i)}, "value": [time.time(), str(v)]}
                for i, v in enumerate(values)
            ],
        },
    }


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
            rules = [
                {"type": "alerting", "name": n, "duration": d} for n, d in self.rule_for.items()
            ]
            return httpx.Response(
                200, json={"status": "success", "data": {"groups": [{"rules": rules}]}}
            )
        if request.url.path == "/api/v1/status/config":
            self.config_reads += 1
            return httpx.Response(
                200, json={"status": "success", "data": {"yaml": self.config_yaml}}
            )
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

    def make(fake: Callable[[httpx.Request], httpx.Response], **kw: Any) -> Verifier:
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
        'ALERTS{alertname="WebDown", alertstate="firing", instance="web-1", job="web"}'
    )


def test_alerts_query_escapes_label_values() -> None:
    """Quotes, backslashes and newlines in a label value are escaped: the value stays a
    PromQL string literal and cannot close the selector."""
    query = alerts_query({"alertname": "X", "path": 'C:\\dir"} or vector(1) #\nx'})
    assert query == (
        'ALERTS{alertname="X", alertstate="firing", path="C:\\\\dir\\"} or vector(1) #\\nx"}'
    )


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
    make_verifier: Callable[..., Verifier],
) -> None:
    """query_for asks Prometheus for its config and drops its external label names."""
    fake = FakePrometheus(
        lambda n: HEALTHY,
        config_yaml=(
            "global:\n  evaluation_interval: 15s\n  external_labels:\n    cluster: prod\n"
            "    replica: a\n"
        ),
    )
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
    verdict = await verifier.verify(
        condition, stable_for=0, timeout=1, interval=0.05, record=Recorder()
    )
    assert verdict.outcome is Outcome.RECOVERED
    assert fake.queries[0][1] == 'up{job="web"} == 0'


# --- one sample --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "healthy"),
    [
        (vector(), True),
        (vector(0, 0), True),
        (vector(0, 2), False),
        (vector(1), False),
        ({"status": "success", "data": {"resultType": "scalar", "result": [1, "0"]}}, True),
        ({"status": "success", "data": {"resultType": "scalar", "result": [1, "3"]}}, False),
    ],
)
async def test_healthy_means_empty_or_all_zero(
    make_verifier: Callable[..., Verifier], reply: Any, healthy: bool
) -> None:
    """A result is healthy when it is empty or every value is 0 (vector or scalar)."""
    sample = await make_verifier(FakePrometheus(lambda n: reply)).sample("q")
    assert sample.healthy is healthy


@pytest.mark.parametrize(
    "reply",
    [
        ERROR,
        httpx.Response(503, text="<html>bad gateway</html>"),
        httpx.Response(400, json={"status": "error", "error": "parse error"}),
        {"status": "success", "data": {"resultType": "matrix", "result": []}},
        {"status": "success", "data": {}},
        {"status": "success", "data": {"resultType": "vector", "result": [{"value": [1, "x"]}]}},
    ],
)
async def test_a_failed_query_is_an_error_sample(
    make_verifier: Callable[..., Verifier], reply: Any
) -> None:
    """Connection errors, HTTP errors, non-JSON and malformed answers give healthy=None with
    the error recorded; they are never read as healthy."""
    sample = await make_verifier(FakePrometheus(lambda n: reply)).sample("q")
    assert sample.healthy is None
    assert sample.error
    assert "error" in sample.as_event()


# --- the verify loop ---------------------------------------------------------------------


async def test_recovered_after_stable_for_of_healthy_samples(
    make_verifier: Callable[..., Verifier],
) -> None:
    """Recovery is declared only once healthy samples have spanned ``stable_for``."""
    fake = FakePrometheus(lambda n: HEALTHY)
    record = Recorder()
    verdict = await make_verifier(fake).verify(
        Condition(labels=LABELS), stable_for=0.2, timeout=5, interval=0.05, record=record
    )
    assert verdict.outcome is Outcome.RECOVERED
    assert verdict.recovered_at is not None
    first, last = fake.queries[0][0], fake.queries[-1][0]
    assert last - first >= 0.2
    assert verdict.samples == len(fake.queries) >= 3
    assert record.kinds() == ["verify_start"] + ["verify_sample"] * verdict.samples
    assert record.events[0][1]["query"] == alerts_query(LABELS)


async def test_still_firing_is_not_recovered_at_the_deadline(
    make_verifier: Callable[..., Verifier],
) -> None:
    """A condition that stays unhealthy ends not_recovered once the timeout passes."""
    fake = FakePrometheus(lambda n: FIRING)
    started = time.monotonic()
    verdict = await make_verifier(fake).verify(
        Condition(labels=LABELS), stable_for=0, timeout=0.3, interval=0.05, record=Recorder()
    )
    assert verdict.outcome is Outcome.NOT_RECOVERED
    assert "still unhealthy after 0.3s" in verdict.reason
    assert time.monotonic() - started >= 0.3
    assert verdict.recovered_at is None


async def test_healthy_but_not_long_enough_is_not_recovered(
    make_verifier: Callable[..., Verifier],
) -> None:
    """Healthy samples that do not yet span stable_for at the deadline are not a recovery."""
    fake = FakePrometheus(lambda n: HEALTHY)
    verdict = await make_verifier(fake).verify(
        Condition(labels=LABELS), stable_for=10, timeout=0.2, interval=0.05, record=Recorder()
    )
    assert verdict.outcome is Outcome.NOT_RECOVERED
    assert "not yet for 10s" in verdict.reason


async def test_prometheus_unreachable_is_unverified(make_verifier: Callable[..., Verifier]) -> None:
    """When every query fails the verdict is unverified, with the error as the reason."""
    fake = FakePrometheus(lambda n: ERROR)
    record = Recorder()
    verdict = await make_verifier(fake).verify(
        Condition(labels=LABELS), stable_for=0, timeout=0.2, interval=0.05, record=record
    )
    assert verdict.outcome is Outcome.UNVERIFIED
    assert "unreachable" in verdict.reason and "connection refused" in verdict.reason
    assert all(d["healthy"] is None for k, d in record.events if k == "verify_sample")


async def test_an_outage_at_the_deadline_is_never_recovered(
    make_verifier: Callable[..., Verifier],
) -> None:
    """Healthy samples followed by an outage that lasts to the deadline give unverified:
    a healthy streak Prometheus could not confirm is not a recovery."""
    fake = FakePrometheus(lambda n: HEALTHY if n < 2 else ERROR)
    verdict = await make_verifier(fake).verify(
        Condition(labels=LABELS), stable_for=5, timeout=0.3, interval=0.05, record=Recorder()
    )
    assert verdict.outcome is Outcome.UNVERIFIED


async def test_an_error_breaks_the_healthy_streak(make_verifier: Callable[..., Verifier]) -> None:
    """An error sample in the middle of a healthy streak restarts the stable_for window:
    recovery comes at least stable_for after the error, not after the first healthy sample."""
    fake = FakePrometheus(lambda n: ERROR if n == 2 else HEALTHY)
    verdict = await make_verifier(fake).verify(
        Condition(labels=LABELS), stable_for=0.2, timeout=5, interval=0.05, record=Recorder()
    )
    assert verdict.outcome is Outcome.RECOVERED
    error_at, recovered_at = fake.queries[2][0], fake.queries[-1][0]
    assert recovered_at - error_at >= 0.2


async def test_an_unhealthy_sample_breaks_the_healthy_streak(
    make_verifier: Callable[..., Verifier],
) -> None:
    """Flapping (healthy, firing, healthy) restarts the window the same way."""
    fake = FakePrometheus(lambda n: FIRING if n == 2 else HEALTHY)
    verdict = await make_verifier(fake).verify(
        Condition(labels=LABELS), stable_for=0.2, timeout=5, interval=0.05, record=Recorder()
    )
    assert verdict.outcome is Outcome.RECOVERED
    assert fake.queries[-1][0] - fake.queries[2][0] >= 0.2


async def test_the_interval_is_read_from_prometheus(make_verifier: Callable[..., Verifier]) -> None:
    """With no interval given, polls happen at Prometheus' evaluation_interval: a 100ms
    interval over a 0.5s timeout gives about six samples, not one per second."""
    fake = FakePrometheus(lambda n: FIRING, config_yaml="global:\n  evaluation_interval: 100ms\n")
    record = Recorder()
    verdict = await make_verifier(fake).verify(
        Condition(labels=LABELS), stable_for=0, timeout=0.5, interval=None, record=record
    )
    assert record.events[0][1]["interval"] == pytest.approx(0.1)
    assert 3 <= verdict.samples <= 7


async def test_a_slower_prometheus_interval_gives_fewer_samples(
    make_verifier: Callable[..., Verifier],
) -> None:
    """The same timeout with a 250ms evaluation interval samples about three times."""
    fake = FakePrometheus(lambda n: FIRING, config_yaml="global:\n  evaluation_interval: 250ms\n")
    verdict = await make_verifier(fake).verify(
        Condition(labels=LABELS), stable_for=0, timeout=0.5, interval=None, record=Recorder()
    )
    assert 2 <= verdict.samples <= 4


async def test_a_configured_interval_overrides_prometheus(
    make_verifier: Callable[..., Verifier],
) -> None:
    """prometheus.evaluation_interval in healer's config wins over Prometheus' own."""
    fake = FakePrometheus(lambda n: FIRING)
    verifier = make_verifier(fake, evaluation_interval=0.05)
    assert await verifier.interval() == 0.05
    assert fake.config_reads == 0


async def test_interval_falls_back_when_prometheus_is_down(
    make_verifier: Callable[..., Verifier],
) -> None:
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
    fake = FakePrometheus(
        answer=lambda n: HEALTHY if n < 2 else FIRING, rule_for={"ServiceDown": 3.0}
    )
    verifier = make_verifier(fake, evaluation_interval=0.05)
    record = Recorder()
    verdict = await verifier.verify(
        Condition(labels={"alertname": "ServiceDown"}),
        stable_for=0.0,
        timeout=1.0,
        interval=None,
        record=record,
    )
    assert verdict.outcome is Outcome.NOT_RECOVERED
    start = dict(record.events)["verify_start"]
    assert start["stable_for_raised"] == {"from": 0.0, "rule_for": 3.0}
    assert start["stable_for"] == 3.05


async def test_rule_without_for_keeps_stable_for(make_verifier) -> None:
    """An alert rule with no `for:` leaves the configured stable_for alone."""
    fake = FakePrometheus(answer=lambda n: HEALTHY, rule_for={"ServiceDown": 0.0})
    verifier = make_verifier(fake, evaluation_interval=0.05)
    record = Recorder()
    verdict = await verifier.verify(
        Condition(labels={"alertname": "ServiceDown"}),
        stable_for=0.1,
        timeout=2.0,
        interval=None,
        record=record,
    )
    assert verdict.outcome is Outcome.RECOVERED
    assert "stable_for_raised" not in dict(record.events)["verify_start"]


# --- polls aligned to Prometheus' rule evaluations ----------------------------------------
#
# Everything below runs on a fake clock: the fake Prometheus evaluates its one rule group
# at phase + k * interval, each evaluation taking eval_time; a query sees the ALERTS series
# cleared once the evaluation at ``clear_at`` has committed. Sleeping advances the clock,
# so the tests check the schedule the verifier computes, never the wall clock.

T0 = 1_800_000_000.0  # a round Unix time for the fake clock


@dataclass
class FakeClock:
    now: float = T0
    sleeps: list[float] = field(default_factory=list)

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now - T0 + 1000.0  # another origin, as the real one has

    async def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


def since_t0(times: Any) -> Any:
    """Fake times as offsets from T0, compared with ``approx(abs=...)``: at 1.8e9 a
    float's relative tolerance would be half an hour."""
    if isinstance(times, list):
        return [t - T0 for t in times]
    return times - T0


def near(values: Any) -> Any:
    return pytest.approx(values, abs=1e-5)


def rfc3339(unix: float) -> str:
    return dt.datetime.fromtimestamp(unix, dt.UTC).isoformat().replace("+00:00", "Z")


@dataclass
class EvaluatingPrometheus:
    """A fake Prometheus on a fake clock whose rule group ``bench`` (alert ``WebDown``)
    evaluates at ``T0 + phase + k * interval``; ``clear_at`` is the evaluation from which
    the ALERTS series is gone (None: firing throughout); ``failing`` are query numbers
    answered with a connection error. Each query takes ``latency`` of fake time."""

    clock: FakeClock
    interval: float = 1.0
    phase: float = 0.3
    eval_time: float = 0.004
    clear_at: float | None = None
    latency: float = 0.002
    global_interval: str = "1s"
    groups: int = 1  # groups holding the alert rule
    rules_status: int = 200
    schedule_fields: bool = True  # False: an old Prometheus without interval/lastEvaluation
    skew: float = 0.0  # Prometheus' clock minus healer's
    failing: set[int] = field(default_factory=set)
    interval_from: tuple[float, float] | None = None  # (fake time, the group's new interval)
    queries: list[float] = field(default_factory=list)  # fake wall time of each query
    rules_reads: int = 0

    def last_evaluation(self) -> float:
        now = self.clock.now + self.skew
        k = math.floor((now - T0 - self.phase - self.eval_time) / self.interval)
        return T0 + self.phase + k * self.interval

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.interval_from is not None and self.clock.now >= self.interval_from[0]:
            self.interval = self.interval_from[1]
        if request.url.path == "/api/v1/status/config":
            return httpx.Response(
                200,
                json={
                    "status": "success",
                    "data": {"yaml": f"global:\n  evaluation_interval: {self.global_interval}\n"},
                },
            )
        if request.url.path == "/api/v1/rules":
            self.rules_reads += 1
            if self.rules_status != 200:
                return httpx.Response(self.rules_status, text="unavailable")
            group: dict[str, Any] = {
                "name": "bench",
                "file": "/etc/prometheus/bench.yml",
                "rules": [{"type": "alerting", "name": "WebDown", "duration": 0}],
            }
            if self.schedule_fields:
                group |= {
                    "interval": self.interval,
                    "evaluationTime": self.eval_time,
                    "lastEvaluation": rfc3339(self.last_evaluation()),
                }
            groups = [dict(group, name=f"bench-{i}") for i in range(self.groups)]
            return httpx.Response(200, json={"status": "success", "data": {"groups": groups}})
        assert request.url.path == "/api/v1/query"
        n = len(self.queries)
        self.queries.append(self.clock.now)
        self.clock.now += self.latency
        if n in self.failing:
            raise httpx.ConnectError("connection refused", request=request)
        now = self.clock.now + self.skew
        cleared = self.clear_at is not None and now >= self.clear_at + self.eval_time
        return httpx.Response(200, json=HEALTHY if cleared else FIRING)

    def evaluation(self, k: int) -> float:
        """The start of the k-th evaluation after T0."""
        return T0 + self.phase + k * self.interval

    def landed(self, k: int, interval: float | None = None) -> float:
        """When an aligned poll for the k-th evaluation is due, as an offset from T0."""
        return self.phase + k * (interval or self.interval) + self.eval_time + AFTER_EVALUATION


@pytest.fixture
def fake_prometheus(
    make_verifier: Callable[..., Verifier],
) -> Callable[..., tuple[EvaluatingPrometheus, Verifier]]:
    def make(
        verifier_kw: dict[str, Any] | None = None, **kw: Any
    ) -> tuple[EvaluatingPrometheus, Verifier]:
        clock = FakeClock()
        fake = EvaluatingPrometheus(clock, **kw)
        return fake, make_verifier(fake, clock=clock, **(verifier_kw or {}))

    return make


def schedule(**kw: Any) -> EvalSchedule:
    return EvalSchedule(**{"group": "g", "interval": 1.0, "last": 100.0, "duration": 0.01, **kw})


def test_next_poll_lands_just_after_the_next_evaluation() -> None:
    """With step == interval the next poll comes when the next evaluation's results have
    landed (its start + evaluationTime + margin), wherever in the interval ``prev`` was."""
    s = schedule()
    assert s.margin == AFTER_EVALUATION
    assert next_poll(100.3, 1.0, s) == pytest.approx(101.06)
    assert next_poll(100.07, 1.0, s) == pytest.approx(101.06)
    assert next_poll(99.5, 1.0, s) == pytest.approx(100.06)


def test_next_poll_does_not_poll_one_evaluation_twice() -> None:
    """A poll made right at (or just after) a landing point saw that evaluation: the next
    one is a whole interval later, not the same landing point again."""
    s = schedule()
    assert next_poll(101.06, 1.0, s) == pytest.approx(102.06)
    assert next_poll(101.059, 1.0, s) == pytest.approx(102.06)
    assert next_poll(101.09, 1.0, s) == pytest.approx(102.06)


def test_next_poll_with_a_longer_step_takes_the_last_evaluation_within_it() -> None:
    """A step of several intervals still lands right after an evaluation: the last one
    before prev + step, so polls stay at most one step apart."""
    assert next_poll(100.3, 5.0, schedule()) == pytest.approx(105.06)
    assert next_poll(100.3, 2.5, schedule()) == pytest.approx(102.06)


def test_next_poll_unaligned_without_a_schedule_or_with_a_shorter_step() -> None:
    """No schedule, or a step shorter than the group's interval (polls wanted more often
    than Prometheus evaluates): plain prev + step."""
    assert next_poll(100.3, 1.0, None) == pytest.approx(101.3)
    assert next_poll(100.3, 0.5, schedule()) == pytest.approx(100.8)


def test_the_margin_is_at_most_a_tenth_of_the_interval() -> None:
    """A fast group gets a proportionally small margin (a 200 ms group: 20 ms)."""
    assert schedule(interval=0.2).margin == pytest.approx(0.02)
    assert schedule(interval=60.0).margin == AFTER_EVALUATION


async def test_polls_are_aligned_just_after_each_evaluation(fake_prometheus) -> None:
    """After the first (immediate) sample, every poll lands at an evaluation's start +
    evaluationTime + margin, one per evaluation, and verify_start says it is aligned."""
    fake, verifier = fake_prometheus()
    fake.clock.now = T0 + 10.71
    record = Recorder()
    verdict = await verifier.verify(
        Condition(labels=LABELS), stable_for=0, timeout=5.5, interval=None, record=record
    )
    assert verdict.outcome is Outcome.NOT_RECOVERED
    assert since_t0(fake.queries) == near(
        [10.71, *(fake.landed(k) for k in range(11, 16)), 10.71 + 5.5]
    )  # last: the deadline
    start = dict(record.events)["verify_start"]
    assert start["interval"] == 1.0
    assert start["aligned"] == {
        "group": "bench-0",
        "interval": 1.0,
        "after_evaluation": near(fake.eval_time + AFTER_EVALUATION),
    }


async def test_aligned_polls_see_a_cleared_series_within_the_margin(fake_prometheus) -> None:
    """The series clears at some evaluation: the aligned verifier reports recovered from
    a sample taken evaluationTime + margin later (+ the query's latency), wherever in
    the interval verification had started - an unaligned poller (the same Prometheus
    without schedule fields) is up to a whole interval late."""
    delays: dict[bool, list[float]] = {True: [], False: []}
    for started in (0.0, 0.31, 0.36, 0.5, 0.99):
        for aligned in (True, False):
            fake, verifier = fake_prometheus(schedule_fields=aligned)
            fake.clock.now = T0 + 10 + started
            fake.clear_at = fake.evaluation(14)
            verdict = await verifier.verify(
                Condition(labels=LABELS), stable_for=0, timeout=30, interval=None, record=Recorder()
            )
            assert verdict.outcome is Outcome.RECOVERED
            assert verdict.recovered_at is not None
            delays[aligned].append(verdict.recovered_at - fake.clear_at)
    landing = fake.eval_time + AFTER_EVALUATION
    assert delays[True] == near([landing] * 5)
    assert max(delays[False]) > 0.6  # started at .99: unaligned polls come at .99 (+ latency)


async def test_the_groups_interval_is_the_step_when_none_is_given(fake_prometheus) -> None:
    """Prometheus' global evaluation_interval is 1m but the alert's group evaluates every
    10s: polls follow the group, every 10s just after its evaluations."""
    fake, verifier = fake_prometheus(interval=10.0, phase=3.0, global_interval="1m")
    fake.clock.now = T0 + 100.5
    record = Recorder()
    await verifier.verify(
        Condition(labels=LABELS), stable_for=0, timeout=35, interval=None, record=record
    )
    assert dict(record.events)["verify_start"]["interval"] == 10.0
    assert since_t0(fake.queries[1:-1]) == near([fake.landed(k) for k in (10, 11, 12, 13)])


async def test_a_longer_rule_interval_polls_every_few_evaluations(fake_prometheus) -> None:
    """A rule's verify.interval of 3s over a 1s group: a poll every third evaluation, each
    still just after one."""
    fake, verifier = fake_prometheus()
    fake.clock.now = T0 + 10.71
    record = Recorder()
    await verifier.verify(
        Condition(labels=LABELS), stable_for=0, timeout=7, interval=3.0, record=record
    )
    assert since_t0(fake.queries[1:-1]) == near([fake.landed(13), fake.landed(16)])
    assert dict(record.events)["verify_start"]["aligned"]["interval"] == 1.0


async def test_a_shorter_interval_than_the_groups_is_polled_unaligned(fake_prometheus) -> None:
    """A configured interval shorter than the group's (prometheus.evaluation_interval or
    verify.interval) is honoured as given: plain steps from the answer, no alignment."""
    fake, verifier = fake_prometheus(verifier_kw={"evaluation_interval": 0.25})
    fake.clock.now = T0 + 10.71
    record = Recorder()
    await verifier.verify(
        Condition(labels=LABELS), stable_for=0, timeout=1, interval=None, record=record
    )
    assert "aligned" not in dict(record.events)["verify_start"]
    gaps = [b - a for a, b in zip(fake.queries[:-1], fake.queries[1:-1], strict=False)]
    assert gaps == near([0.25 + fake.latency] * len(gaps))
    assert len(gaps) == 3


@pytest.mark.parametrize(
    ("why", "kw"),
    [
        ("an old Prometheus without schedule fields", {"schedule_fields": False}),
        ("the rules API failing", {"rules_status": 503}),
        ("the rule in two groups", {"groups": 2}),
        ("Prometheus' clock 30s ahead", {"skew": 30.0}),
        ("Prometheus' clock 30s behind", {"skew": -30.0}),
    ],
)
async def test_without_a_usable_schedule_polls_fall_back_to_the_interval(
    fake_prometheus, why: str, kw: dict[str, Any]
) -> None:
    """When the group's schedule is unknown or not to be trusted, polls come every
    interval (Prometheus' global evaluation_interval) after each answer, as before."""
    fake, verifier = fake_prometheus(**kw)
    fake.clock.now = T0 + 10.71
    record = Recorder()
    await verifier.verify(
        Condition(labels=LABELS), stable_for=0, timeout=3, interval=None, record=record
    )
    start = dict(record.events)["verify_start"]
    assert "aligned" not in start, why
    assert start["interval"] == 1.0
    assert since_t0(fake.queries[:-1]) == near([10.71 + k * (1 + fake.latency) for k in range(3)])


async def test_a_custom_query_is_not_aligned(fake_prometheus) -> None:
    """verify.query may read raw scraped series, not the rule group's output: no rules
    lookup, plain interval polls."""
    fake, verifier = fake_prometheus()
    record = Recorder()
    await verifier.verify(
        Condition(labels=LABELS, query="up == 0"),
        stable_for=0,
        timeout=2,
        interval=None,
        record=record,
    )
    assert fake.rules_reads == 0
    assert "aligned" not in dict(record.events)["verify_start"]


async def test_stable_for_counts_whole_intervals_of_aligned_polls(fake_prometheus) -> None:
    """stable_for 3s at 1s evaluations: recovered at the fourth healthy aligned sample (three
    intervals after the first), not a fifth one for scheduling jitter."""
    fake, verifier = fake_prometheus(clear_at=None)
    fake.clock.now = T0 + 10.71
    fake.clear_at = fake.evaluation(12)
    verdict = await verifier.verify(
        Condition(labels=LABELS), stable_for=3, timeout=30, interval=None, record=Recorder()
    )
    assert verdict.outcome is Outcome.RECOVERED
    assert since_t0(verdict.recovered_at) == near(fake.landed(15))
    assert verdict.samples == 1 + 1 + 4  # first and one more firing, four healthy


async def test_an_error_breaks_an_aligned_streak_and_is_retried_a_step_later(
    fake_prometheus,
) -> None:
    """Aligned or not, an error sample restarts the stable_for window; after an error the
    next poll waits a whole interval from the answer (Prometheus is not hurried), then
    polls realign to the evaluations."""
    fake, verifier = fake_prometheus(failing={3})
    fake.clock.now = T0 + 10.71
    fake.clear_at = fake.evaluation(11)
    verdict = await verifier.verify(
        Condition(labels=LABELS), stable_for=2, timeout=30, interval=None, record=Recorder()
    )
    assert verdict.outcome is Outcome.RECOVERED
    queries = since_t0(fake.queries)
    assert queries[3] == near(fake.landed(13))  # the error
    assert queries[4] == near(queries[3] + fake.latency + 1.0)  # a step after its answer
    assert queries[5] == near(fake.landed(15))  # realigned
    # Healthy from the retry (it saw evaluation 14) to the poll after evaluation 16: two
    # intervals of evaluations, though 2 ms less on the clock (the slack forgives that).
    assert since_t0(verdict.recovered_at) == near(fake.landed(16))


async def test_an_outage_with_aligned_polls_is_unverified(fake_prometheus) -> None:
    """Prometheus answering /api/v1/rules but failing every query to the deadline gives
    unverified, never recovered."""
    _, verifier = fake_prometheus(failing=set(range(100)))
    verdict = await verifier.verify(
        Condition(labels=LABELS), stable_for=0, timeout=5, interval=None, record=Recorder()
    )
    assert verdict.outcome is Outcome.UNVERIFIED


async def test_a_rule_without_for_leaves_stable_for_zero(fake_prometheus) -> None:
    """With no `for:` (duration 0) there is no pending gap, so stable_for 0 stays 0:
    the first healthy sample recovers (it used to be raised to one interval)."""
    fake, verifier = fake_prometheus()
    fake.clear_at = fake.evaluation(-5)
    record = Recorder()
    verdict = await verifier.verify(
        Condition(labels=LABELS), stable_for=0, timeout=10, interval=None, record=record
    )
    assert verdict.outcome is Outcome.RECOVERED and verdict.samples == 1
    assert "stable_for_raised" not in dict(record.events)["verify_start"]


async def test_the_schedule_is_reread_during_a_long_verification(fake_prometheus) -> None:
    """The group's schedule is read again after a minute: a group whose interval became 2s
    is then polled every 2s, just after its evaluations."""
    fake, verifier = fake_prometheus(interval_from=(T0 + 40, 2.0))
    fake.clock.now = T0 + 10.71
    await verifier.verify(
        Condition(labels=LABELS), stable_for=0, timeout=80, interval=None, record=Recorder()
    )
    assert fake.rules_reads == 2
    before = [q for q in since_t0(fake.queries) if 11 < q < 70]
    after = [q for q in since_t0(fake.queries[:-1]) if q > 72]
    assert before == near([fake.landed(k, 1.0) for k in range(11, 70)])
    assert fake.interval == 2.0
    assert after == near([fake.landed(k) for k in range(36, 36 + len(after))])
    assert len(after) >= 5
