"""examples/grafana/healer.json is a dashboard Grafana loads: unique panel ids, a
Prometheus datasource and a query on every panel, a layout without overlaps, variables
that are defined, and no query reading a metric healer does not export. (Every query
run against a real Prometheus scraping a real healer: tests/integration/
test_grafana_dashboard.py.)"""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from healer.metrics import Metrics
from tests.support.inprocess.grafana import (
    exported_names,
    load_dashboard,
    metric_names,
    panels,
    render,
    targets,
    variables,
)

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return load_dashboard()


def test_dashboard_is_a_grafana_dashboard(dashboard: dict[str, Any]) -> None:
    """The file is one dashboard object with a fixed uid (links survive re-imports), a
    title, a schemaVersion of Grafana 10/11 and panels; no `id` that would clash with
    another dashboard on import."""
    assert dashboard["uid"] == "healer"
    assert dashboard["title"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard.get("id") is None
    assert list(panels(dashboard))


def test_panel_ids_are_unique_and_every_panel_has_a_place(dashboard: dict[str, Any]) -> None:
    """Panel ids are distinct integers; every panel has a gridPos inside the 24-column
    grid, and no two panels overlap."""
    ids = [panel["id"] for panel in panels(dashboard)]
    assert all(isinstance(i, int) for i in ids)
    assert len(ids) == len(set(ids)), ids
    cells: dict[tuple[int, int], str] = {}
    for panel in panels(dashboard):
        pos = panel["gridPos"]
        assert {"x", "y", "w", "h"} <= set(pos), panel["title"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["h"] > 0, panel["title"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_every_panel_queries_prometheus_through_the_datasource_variable(
    dashboard: dict[str, Any],
) -> None:
    """Each panel and each of its targets names the ${datasource} Prometheus variable
    (so an import picks any Prometheus, and provisioning the default one), has at least
    one target, distinct refIds and a PromQL expression."""
    for panel in panels(dashboard):
        title = panel["title"]
        assert panel["datasource"] == DATASOURCE, title
        assert panel.get("targets"), f"{title}: no target"
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), title
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, title
            assert target["expr"].strip(), title
    source = variables(dashboard)["datasource"]
    assert (source["type"], source["query"]) == ("datasource", "prometheus")


def test_every_variable_a_query_uses_is_defined(dashboard: dict[str, Any]) -> None:
    """Every $variable in a panel query is a template variable of the dashboard or one of
    Grafana's interval built-ins; the query variables read healer's own series."""
    defined = variables(dashboard)
    values = {name: "x" for name in defined}
    for panel, target in targets(dashboard):
        rendered = render(target["expr"], values)  # KeyError on an unknown variable
        assert "$" not in rendered, (panel["title"], rendered)
    for name in ("rule", "instance"):
        var = defined[name]
        assert var["type"] == "query" and var["datasource"] == DATASOURCE
        assert var["includeAll"] and var["allValue"] == ".*"
        assert var["query"]["query"] == var["definition"]
        assert var["definition"].startswith("label_values(healer_")


def test_no_panel_reads_a_metric_healer_does_not_export(dashboard: dict[str, Any]) -> None:
    """Every healer_* series a query or variable names is one healer's Metrics registry
    exposes (counters as *_total, histograms as *_bucket/_sum/_count), and every
    target reads at least one of them."""
    exported = exported_names(Metrics(CollectorRegistry()).registry)
    for panel, target in targets(dashboard):
        names = metric_names(target["expr"])
        assert names, f"{panel['title']}: reads no healer metric"
        assert names <= exported, (panel["title"], names - exported)
    for var in variables(dashboard).values():
        assert metric_names(var.get("definition", "")) <= exported, var["name"]


def test_the_operator_s_metrics_are_all_on_the_dashboard(dashboard: dict[str, Any]) -> None:
    """Outcomes, time to recovery, heals in progress and awaiting approval, open
    circuits, webhook answers and alerts received each have a panel."""
    read = set().union(*(metric_names(t["expr"]) for _, t in targets(dashboard)))
    assert {
        "healer_heals_total",
        "healer_time_to_recovery_seconds_bucket",
        "healer_heals_in_progress",
        "healer_heals_awaiting_approval",
        "healer_circuit_open",
        "healer_webhook_requests_total",
        "healer_alerts_received_total",
    } <= read


def test_metric_names_ignores_functions_labels_and_strings() -> None:
    """The name parser the checks above rely on: series names only, not function
    names, label names or label values that look like metric names."""
    expr = (
        "histogram_quantile(0.9, sum by (le, rule) (rate("
        'healer_time_to_recovery_seconds_bucket{rule=~"healer_fake_total"}[5m]))) '
        "/ on (rule) healer_circuit_open"
    )
    assert metric_names(expr) == {"healer_time_to_recovery_seconds_bucket", "healer_circuit_open"}
