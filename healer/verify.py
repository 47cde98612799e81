"""Verification: after acting, re-query Prometheus until the problem is gone.

Usage::

    verifier = Verifier(http_client, "http://127.0.0.1:9090", timeout=5)
    result = await verifier.verify(condition, stable_for=30, timeout=300, record=record)

A condition is healthy when its PromQL result is empty or every value is 0. The
default condition is the alert's own ``ALERTS{alertname=..., alertstate="firing",
<labels>}`` series. It must stay healthy for ``stable_for``; polls happen at
Prometheus' evaluation interval. A poll that fails is an *error* sample: it
breaks the healthy streak, and a deadline reached after errors ends
``unverified`` - never ``recovered``.

The ALERTS series only changes when Prometheus evaluates the alert's rule group, so
for the default condition polls are *aligned* to those evaluations: the group's
``interval``, ``lastEvaluation`` and ``evaluationTime`` (``/api/v1/rules``) give the
moments its results land, and each poll goes just after one of them
(:func:`next_poll`). An unaligned poller sees a cleared series up to one whole
interval late; an aligned one within ``evaluationTime`` + :data:`AFTER_EVALUATION`.
Without that information (a custom ``verify.query``, a Prometheus that does not
report it, a rule found in several groups, a clock far off Prometheus') polls fall
back to every ``interval`` from the first.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import yaml

from healer.bounded import clip
from healer.outcomes import Outcome, RecordStep
from healer.units import parse_duration

# Labels Prometheus attaches on the way to Alertmanager, absent from its own ALERTS series.
_ALERT_ONLY_LABELS = frozenset({"alertstate"})
_CONFIG_TTL = 60.0
_DEFAULT_EVAL = 60.0  # Prometheus' default global.evaluation_interval
AFTER_EVALUATION = 0.05
"""Seconds an aligned poll waits past the end of the evaluation it expects to see
(at most a tenth of the interval): Prometheus' ticker and commit run a little late
on a busy host. A poll that still comes too early sees the next evaluation instead:
one interval later, never worse than unaligned polling."""
_SCHEDULE_TTL = 60.0  # re-read the rule group's schedule this often during a verify


_LEGACY_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_SHORT_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    if char in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[char]
    code = ord(char)
    if 0x20 <= code < 0x7F:
        return char
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


_PLAIN = re.compile(r"[\x20-\x7e]*")


def promql_string(value: str) -> str:
    """``value`` as a PromQL string literal that reads back as exactly ``value``: a label
    value stays data. Only printable ASCII goes through as itself; backslash, quote and
    every other character become Go escapes (``\\n``, ``\\u00e9``, ``\\U0001f600``), so no
    character (newline, NUL, U+FFFD, which PromQL's lexer takes for invalid UTF-8) can end
    the literal or break the query. A lone surrogate has no escape Prometheus accepts: the
    query is refused (the verify sample is an error, never healthy)."""
    if _PLAIN.fullmatch(value) and "\\" not in value and '"' not in value:
        return f'"{value}"'
    return '"' + "".join(map(_escape, value)) + '"'


def promql_label_name(name: str) -> str:
    """``name`` as it goes before ``=`` in a selector: bare when it fits the classic
    ``[a-zA-Z_][a-zA-Z0-9_]*``, else quoted (``{"service.name"="x"}``), the form Prometheus
    3 reads for UTF-8 names; older versions refuse it (the sample is an error, so the heal
    ends ``unverified``, never ``recovered`` on a selector that lost a label)."""
    return name if _LEGACY_NAME.fullmatch(name) else promql_string(name)


def alerts_query(labels: Mapping[str, str], drop: frozenset[str] = frozenset()) -> str:
    """``ALERTS{alertname="X", alertstate="firing", ...}`` for one alert's labels: every
    name and value quoted as data, so no label set can change the selector's shape."""
    parts = [f"alertname={promql_string(labels.get('alertname', ''))}", 'alertstate="firing"']
    for name in sorted(labels):
        if name == "alertname" or name in drop or name in _ALERT_ONLY_LABELS:
            continue
        parts.append(f"{promql_label_name(name)}={promql_string(labels[name])}")
    return "ALERTS{" + ", ".join(parts) + "}"


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    healthy: bool | None  # None: Prometheus could not answer
    series: int = 0
    values: list[float] = field(default_factory=list)
    error: str = ""

    def as_event(self) -> dict[str, Any]:
        out: dict[str, Any] = {"healthy": self.healthy, "series": self.series}
        if self.values:
            out["values"] = self.values[:10]
        if self.error:
            out["error"] = self.error
        return out


@dataclass(frozen=True, slots=True)
class Condition:
    """What to poll. ``query=None`` means the alert's own ALERTS series."""

    labels: Mapping[str, str]
    query: str | None = None


@dataclass(frozen=True, slots=True)
class EvalSchedule:
    """When Prometheus evaluates one rule group: an evaluation started at ``last``
    (Unix seconds, Prometheus' clock), they repeat every ``interval`` s and take about
    ``duration`` s (the group's ``evaluationTime``)."""

    group: str
    interval: float
    last: float
    duration: float

    @property
    def margin(self) -> float:
        return min(AFTER_EVALUATION, self.interval / 10)

    def as_event(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "interval": self.interval,
            "after_evaluation": round(self.duration + self.margin, 6),
        }


def next_poll(prev: float, step: float, schedule: EvalSchedule | None) -> float:
    """The wall-clock time of the poll after one made at ``prev``.

    Unaligned (no schedule, or ``step`` shorter than the group's interval): ``prev +
    step``. Aligned: the latest moment ``last + k * interval + duration + margin`` (an
    evaluation's results just landed) no later than ``prev + step``; when that is
    ``prev`` itself or within ``margin`` of it (the evaluation ``prev`` already saw),
    the one after. So with ``step == interval`` every evaluation is polled once, right
    after it lands, and polls are never more than ``step`` (+ ``margin``) apart.
    """
    if schedule is None or step < schedule.interval:
        return prev + step
    period, margin = schedule.interval, schedule.margin
    base = schedule.last + schedule.duration + margin
    at = base + math.floor((prev + step - base) / period) * period
    if at <= prev + margin:
        at += period
    return at


def _unix(stamp: Any) -> float | None:
    """Prometheus' RFC 3339 timestamp as Unix seconds; None for Go's zero time or junk."""
    try:
        value = dt.datetime.fromisoformat(str(stamp)).timestamp()
    except (TypeError, ValueError, OverflowError):
        return None
    return value if value > 0 else None


@dataclass(frozen=True, slots=True)
class RuleInfo:
    """What ``/api/v1/rules`` says about an alerting rule: its ``for:`` (the longest,
    if several rules share the name) and its group's evaluation schedule (only when
    exactly one group has it and reports one)."""

    hold: float | None
    schedule: EvalSchedule | None


class Clock:
    """Wall time, monotonic time and sleeping: the real ones (tests pass a fake)."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    reason: str
    samples: int
    recovered_at: float | None = None


class Verifier:
    def __init__(
        self,
        client: httpx.AsyncClient,
        url: str,
        *,
        timeout: float,
        evaluation_interval: float | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._client = client
        self._url = url.rstrip("/")
        self._timeout = timeout
        self._fixed_interval = evaluation_interval
        self._clock = clock or Clock()
        self._cached: tuple[float, float, frozenset[str]] | None = None  # at, interval, ext

    async def _prom_config(self) -> tuple[float, frozenset[str]]:
        """Evaluation interval and external label names, read from Prometheus (cached)."""
        now = self._clock.monotonic()
        if self._cached and now - self._cached[0] < _CONFIG_TTL:
            return self._cached[1], self._cached[2]
        resp = await self._client.get(f"{self._url}/api/v1/status/config", timeout=self._timeout)
        resp.raise_for_status()
        cfg = yaml.safe_load(resp.json()["data"]["yaml"]) or {}
        if not isinstance(cfg, dict) or not isinstance(cfg.get("global") or {}, dict):
            raise ValueError("Prometheus returned a config that is not a mapping")
        glob = cfg.get("global") or {}
        interval = parse_duration(glob.get("evaluation_interval", "1m"))
        external = frozenset((glob.get("external_labels") or {}).keys())
        self._cached = (now, interval, external)
        return interval, external

    async def interval(self) -> float:
        if self._fixed_interval is not None:
            return self._fixed_interval
        try:
            return (await self._prom_config())[0]
        except (httpx.HTTPError, KeyError, TypeError, ValueError, yaml.YAMLError):
            return self._cached[1] if self._cached else _DEFAULT_EVAL

    async def query_for(self, condition: Condition) -> str:
        if condition.query is not None:
            return condition.query
        try:
            external = (await self._prom_config())[1]
        except (httpx.HTTPError, KeyError, TypeError, ValueError, yaml.YAMLError):
            external = self._cached[2] if self._cached else frozenset()
        return alerts_query(condition.labels, external)

    async def rule_info(self, alertname: str) -> RuleInfo:
        """The rule's ``for:`` (seconds) and its group's evaluation schedule, from one read
        of ``/api/v1/rules`` (each None when unknown).

        While a re-broken service sits in ``pending`` its ALERTS{alertstate="firing"}
        series is absent, so a ``stable_for`` shorter than ``for`` could call a heal
        recovered while the problem is back: :meth:`verify` raises it.
        """
        try:
            resp = await self._client.get(
                f"{self._url}/api/v1/rules", params={"type": "alert"}, timeout=self._timeout
            )
            resp.raise_for_status()
            groups = [
                group
                for group in resp.json()["data"]["groups"]
                if any(rule.get("name") == alertname for rule in group["rules"])
            ]
            holds = [
                float(rule.get("duration", 0))
                for group in groups
                for rule in group["rules"]
                if rule.get("name") == alertname
            ]
        except (httpx.HTTPError, KeyError, TypeError, ValueError):
            return RuleInfo(None, None)
        schedule = self._schedule(groups[0]) if len(groups) == 1 else None
        return RuleInfo(max(holds) if holds else None, schedule)

    def _schedule(self, group: Mapping[str, Any]) -> EvalSchedule | None:
        """The group's schedule if Prometheus reports a usable one (2.x has since 2.12)."""
        try:
            interval = float(group["interval"])
            duration = float(group.get("evaluationTime") or 0.0)
        except (KeyError, TypeError, ValueError):
            return None
        last = _unix(group.get("lastEvaluation"))
        if last is None or not 0 < interval < 86400 or not 0 <= duration < interval:
            return None
        # A last evaluation in the future, or older than a few intervals, says the two
        # clocks disagree (or the group is stuck): aligning would only mislead.
        age = self._clock.time() - last
        if not -interval / 10 <= age <= 3 * interval + 1:
            return None
        return EvalSchedule(str(group.get("name", "")), interval, last, duration)

    async def sample(self, query: str) -> Sample:
        at = self._clock.time()
        try:
            resp = await self._client.get(
                f"{self._url}/api/v1/query", params={"query": query}, timeout=self._timeout
            )
            body = resp.json()
            if resp.status_code != 200 or body.get("status") != "success":
                return Sample(
                    at, None, error=f"HTTP {resp.status_code}: {body.get('error', '')}"[:300]
                )
            data = body["data"]
            result = data["result"]
            if data["resultType"] == "vector":
                values = [float(r["value"][1]) for r in result]
            elif data["resultType"] == "scalar":
                values = [float(result[1])]
            else:
                return Sample(at, None, error=f"unsupported result type {data['resultType']}")
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            return Sample(at, None, error=f"{type(exc).__name__}: {exc}"[:300])
        return Sample(at, all(v == 0 for v in values), len(values), values)

    async def verify(
        self,
        condition: Condition,
        *,
        stable_for: float,
        timeout: float,
        interval: float | None,
        record: RecordStep,
    ) -> Verdict:
        clock = self._clock
        query = await self.query_for(condition)
        explicit = interval if interval is not None else self._fixed_interval
        alertname = condition.labels.get("alertname", "")
        info = RuleInfo(None, None)
        if condition.query is None:  # a custom query's data need not follow any rule group
            info = await self.rule_info(alertname)
        read_at = clock.monotonic()
        fallback = await self.interval()

        def plan(schedule: EvalSchedule | None) -> tuple[float, EvalSchedule | None]:
            """The step (an explicit interval, else the group's own - it may differ from
            the global evaluation_interval - else the global one), and the schedule to
            align to (None when polls are to be more frequent than evaluations)."""
            if explicit is not None:
                step = explicit
            else:
                step = schedule.interval if schedule is not None else fallback
            step = max(step, 0.05)
            return step, schedule if schedule is not None and step >= schedule.interval else None

        step, aligned = plan(info.schedule)
        start: dict[str, Any] = {
            "query": query,
            "stable_for": stable_for,
            "timeout": timeout,
            "interval": step,
        }
        if aligned is not None:
            start["aligned"] = aligned.as_event()
        quoted = [name for name in sorted(condition.labels) if promql_label_name(name) != name]
        if condition.query is None and quoted:
            # Prometheus 3 reads {"name"="v"}; 2.x refuses it: say why samples then fail.
            start["quoted_label_names"] = [clip(name) for name in quoted[:10]]
        # No `for:` (hold 0): a re-broken service fires again at the next evaluation, no
        # pending gap to cover.
        hold = info.hold
        if hold and stable_for < hold + step:
            start["stable_for_raised"] = {"from": stable_for, "rule_for": hold}
            stable_for = hold + step
            start["stable_for"] = stable_for
        await record("verify_start", start)
        deadline = clock.monotonic() + timeout
        healthy_since: float | None = None
        last: Sample | None = None
        count = 0
        while True:
            # The healthy span runs from the start of the first healthy sample to the
            # start of this one; aligned polls are whole intervals apart give or take
            # the scheduling jitter that ``margin`` forgives.
            began = clock.monotonic()
            last = await self.sample(query)
            count += 1
            await record("verify_sample", last.as_event())
            if last.healthy:
                healthy_since = healthy_since if healthy_since is not None else began
                slack = aligned.margin if aligned is not None else 0.0
                if began - healthy_since >= stable_for - slack:
                    return Verdict(
                        Outcome.RECOVERED,
                        f"healthy for {stable_for:g}s ({count} samples)",
                        count,
                        recovered_at=last.at,
                    )
            else:
                healthy_since = None
            remaining = deadline - clock.monotonic()
            if remaining <= 0:
                break
            if aligned is not None and clock.monotonic() - read_at >= _SCHEDULE_TTL:
                # Evaluations keep their phase across restarts and reloads; a re-read
                # follows a changed interval or a group grown slower.
                fresh = (await self.rule_info(alertname)).schedule
                read_at = clock.monotonic()
                if fresh is not None:
                    step, aligned = plan(fresh)
            if aligned is None or last.healthy is None:
                # Unaligned, or Prometheus failing (no hurry: an error never recovers):
                # a whole step after the answer, as ever.
                wait = step
            else:
                wait = next_poll(last.at, step, aligned) - clock.time()
            await clock.sleep(min(max(wait, 0.0), remaining))
        if last is not None and last.healthy is None:
            return Verdict(
                Outcome.UNVERIFIED, f"Prometheus unreachable at the deadline: {last.error}", count
            )
        if last is not None and last.healthy:
            return Verdict(
                Outcome.NOT_RECOVERED,
                f"healthy but not yet for {stable_for:g}s at the {timeout:g}s deadline",
                count,
            )
        return Verdict(Outcome.NOT_RECOVERED, f"still unhealthy after {timeout:g}s", count)
