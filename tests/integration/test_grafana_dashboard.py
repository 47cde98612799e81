"""Every query of the shipped Grafana dashboard (examples/grafana/healer.json) runs on a
real Prometheus scraping a real `healer serve` that has healed for real: the demo loop
(busybox service, Prometheus, Alertmanager, healer restarting the container through
dockerd) heals the broken service twice, while a second Prometheus scrapes healer's
/metrics every second, as the stack's Prometheus does (job healer)."""

from __future__ import annotations

import math
import re
from typing import Any

import httpx
import pytest

from tests.support.env import wait_until
from tests.support.inprocess.grafana import load_dashboard, render, targets, variables
from tests.support.scenarios.loop import Loop, start_loop
from tests.support.servers.processes import PromInstance

pytestmark = [pytest.mark.docker, pytest.mark.prometheus]

RULE = "restart-unhealthy-service"  # examples/demo/healer.yml
_LABEL_VALUES = re.compile(r"^label_values\((\w+),\s*(\w+)\)$")


def _recovered(loop: Loop, count: int) -> list[dict[str, Any]] | None:
    done = [h for h in loop.heals() if h["outcome"] == "recovered"]
    return done if len(done) >= count else None


def _scraped_recoveries(scraper: PromInstance) -> float:
    result = scraper.query("sum(healer_time_to_recovery_seconds_count)")
    return float(result[0]["value"][1]) if result else 0.0


def _label_values(scraper: PromInstance, definition: str) -> list[str]:
    """A Grafana ``label_values(metric, label)`` variable, as Grafana asks Prometheus."""
    match = _LABEL_VALUES.match(definition)
    assert match, definition
    metric, label = match.groups()
    with httpx.Client(timeout=5.0) as client:
        body = client.get(
            f"{scraper.url}/api/v1/label/{label}/values", params={"match[]": metric}
        ).json()
    assert body["status"] == "success", body
    values: list[str] = body["data"]
    return values


def _query(scraper: PromInstance, expr: str) -> list[dict[str, Any]]:
    with httpx.Client(timeout=5.0) as client:
        body = client.get(f"{scraper.url}/api/v1/query", params={"query": expr}).json()
    assert body["status"] == "success", (expr, body)
    assert body["data"]["resultType"] == "vector", expr
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


@pytest.fixture
def healed(tmp_path, containers, prometheus, alertmanager, healer_process) -> PromInstance:
    """A Prometheus that scraped healer before and after it healed the demo service once
    (its rule's series are exported at 0 from the start, so rate() sees the first heal)."""
    loop = start_loop(
        workdir=tmp_path,
        service=containers.run_service(),
        prometheus=prometheus,
        alertmanager=alertmanager,
        healer=healer_process,
    )
    scraper = prometheus.start([loop.healer.address])
    scraper.wait_for_targets_up()
    wait_until(
        lambda: bool(scraper.query("healer_time_to_recovery_seconds_count")),
        timeout=20,
        interval=0.5,
        what="Prometheus to scrape the rule's series at 0",
    )
    loop.service.break_()
    wait_until(
        lambda: _recovered(loop, 1),
        timeout=90,
        interval=0.5,
        what="a recovered heal",
        ignore=(httpx.HTTPError,),
    )
    wait_until(
        lambda: _scraped_recoveries(scraper) >= 1,
        timeout=20,
        interval=0.5,
        what="Prometheus to scrape the recovery",
    )
    return scraper


def test_every_panel_query_is_valid_and_the_heal_panels_show_the_heals(
    healed: PromInstance,
) -> None:
    """With the variables set as Grafana sets them (the values their label_values
    queries return, and All), every panel target is valid PromQL that Prometheus
    answers with success; heals by outcome show `recovered`, heals by rule the demo
    rule, and time to recovery a finite p50, p90 and p99 for it."""
    dashboard = load_dashboard()
    defined = variables(dashboard)
    found = {
        name: _label_values(healed, defined[name]["definition"]) for name in ("rule", "instance")
    }
    assert RULE in found["rule"], found
    assert len(found["instance"]) == 1, found
    chosen = {"rule": RULE, "instance": found["instance"][0]}
    everything = {name: defined[name]["allValue"] for name in found}

    results: dict[str, list[list[dict[str, Any]]]] = {}
    for panel, target in targets(dashboard):
        _query(healed, render(target["expr"], everything))
        results.setdefault(panel["title"], []).append(
            _query(healed, render(target["expr"], chosen))
        )

    (by_outcome,) = results["Heals by outcome"]
    recovered = [s for s in by_outcome if s["metric"].get("outcome") == "recovered"]
    assert recovered and float(recovered[0]["value"][1]) > 0, by_outcome
    (by_rule,) = results["Heals by rule"]
    assert any(s["metric"].get("rule") == RULE and float(s["value"][1]) > 0 for s in by_rule)
    quantiles = results["Time to recovery"]
    assert len(quantiles) == 3
    for result in quantiles:
        (series,) = result
        assert series["metric"] == {"rule": RULE}
        value = float(series["value"][1])
        assert math.isfinite(value) and value > 0, result
