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
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import yaml

from healer.config import parse_duration
from healer.outcomes import Outcome

Record = Callable[[str, dict[str, Any]], Awaitable[None]]

# Labels Prometheus attaches on the way to Alertmanager, absent from its own ALERTS series.
_ALERT_ONLY_LABELS = frozenset({"alertstate"})
_CONFIG_TTL = 60.0
_DEFAULT_EVAL = 60.0  # Prometheus' default global.evaluation_interval


def promql_string(value: str) -> str:
    """Quote ``value`` as a PromQL string literal: a label value stays data."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def alerts_query(labels: Mapping[str, str], drop: frozenset[str] = frozenset()) -> str:
    """``ALERTS{alertname="X", alertstate="firing", ...}`` for one alert's labels."""
    parts = [f"alertname={promql_string(labels.get('alertname', ''))}",
             'alertstate="firing"']
    for name in sorted(labels):
        if name == "alertname" or name in drop or name in _ALERT_ONLY_LABELS:
            continue
        parts.append(f"{name}={promql_string(labels[name])}")
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
class Verdict:
    outcome: Outcome
    reason: str
    samples: int
    recovered_at: float | None = None


class Verifier:
    def __init__(self, client: httpx.AsyncClient, url: str, *, timeout: float,
                 evaluation_interval: float | None = None) -> None:
        self._client = client
        self._url = url.rstrip("/")
        self._timeout = timeout
        self._fixed_interval = evaluation_interval
        self._cached: tuple[float, float, frozenset[str]] | None = None  # at, interval, ext

    async def _prom_config(self) -> tuple[float, frozenset[str]]:
        """Evaluation interval and external label names, read from Prometheus (cached)."""
        now = time.monotonic()
        if self._cached and now - self._cached[0] < _CONFIG_TTL:
            return self._cached[1], self._cached[2]
        resp = await self._client.get(f"{self._url}/api/v1/status/config",
                                      timeout=self._timeout)
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

    async def rule_hold(self, alertname: str) -> float | None:
        """The alerting rule's ``for:`` in seconds, from ``/api/v1/rules`` (None if unknown).

        While a re-broken service sits in ``pending`` its ALERTS{alertstate="firing"}
        series is absent, so a ``stable_for`` shorter than ``for`` could call a heal
        recovered while the problem is back.
        """
        try:
            resp = await self._client.get(f"{self._url}/api/v1/rules", params={"type": "alert"},
                                          timeout=self._timeout)
            resp.raise_for_status()
            holds = [float(rule.get("duration", 0))
                     for group in resp.json()["data"]["groups"]
                     for rule in group["rules"] if rule.get("name") == alertname]
        except (httpx.HTTPError, KeyError, TypeError, ValueError):
            return None
        return max(holds) if holds else None

    async def sample(self, query: str) -> Sample:
        at = time.time()
        try:
            resp = await self._client.get(f"{self._url}/api/v1/query", params={"query": query},
                                          timeout=self._timeout)
            body = resp.json()
            if resp.status_code != 200 or body.get("status") != "success":
                return Sample(at, None, error=f"HTTP {resp.status_code}: "
                              f"{body.get('error', '')}"[:300])
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

    async def verify(self, condition: Condition, *, stable_for: float, timeout: float,
                     interval: float | None, record: Record) -> Verdict:
        query = await self.query_for(condition)
        step = interval if interval is not None else await self.interval()
        step = max(step, 0.05)
        start: dict[str, Any] = {"query": query, "stable_for": stable_for, "timeout": timeout,
                                 "interval": step}
        if condition.query is None:
            hold = await self.rule_hold(condition.labels.get("alertname", ""))
            if hold is not None and stable_for < hold + step:
                start["stable_for_raised"] = {"from": stable_for, "rule_for": hold}
                stable_for = hold + step
                start["stable_for"] = stable_for
        await record("verify_start", start)
        deadline = time.monotonic() + timeout
        healthy_since: float | None = None
        last: Sample | None = None
        count = 0
        while True:
            last = await self.sample(query)
            count += 1
            await record("verify_sample", last.as_event())
            if last.healthy:
                healthy_since = healthy_since if healthy_since is not None else time.monotonic()
                if time.monotonic() - healthy_since >= stable_for:
                    return Verdict(Outcome.RECOVERED,
                                   f"healthy for {stable_for:g}s ({count} samples)", count,
                                   recovered_at=last.at)
            else:
                healthy_since = None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await asyncio.sleep(min(step, remaining))
        if last is not None and last.healthy is None:
            return Verdict(Outcome.UNVERIFIED,
                           f"Prometheus unreachable at the deadline: {last.error}", count)
        if last is not None and last.healthy:
            return Verdict(Outcome.NOT_RECOVERED,
                           f"healthy but not yet for {stable_for:g}s at the {timeout:g}s "
                           "deadline", count)
        return Verdict(Outcome.NOT_RECOVERED, f"still unhealthy after {timeout:g}s", count)
