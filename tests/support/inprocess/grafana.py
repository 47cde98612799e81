"""The shipped Grafana dashboard (examples/grafana/healer.json), read as data: its panels,
their PromQL with Grafana's variables filled in, and the metric names each one reads.
Shared by tests/unit/test_grafana_json.py and tests/integration/test_grafana_dashboard.py.

    dashboard = load_dashboard()
    for panel, target in targets(dashboard):
        expr = render(target["expr"], {"rule": "restart-web", "instance": ".*"})
        metric_names(expr)                     # {"healer_heals_total", ...}
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry

from tests.support.inprocess.stack import REPO

DASHBOARD = REPO / "examples" / "grafana" / "healer.json"
PROVISIONING = REPO / "examples" / "grafana" / "provisioning"

# Grafana's built-in interval variables, as a short scrape interval would set them: the
# window is wide enough for two samples at any scrape interval the tests use.
BUILTINS = {"__rate_interval": "5m", "__interval": "15s", "__range": "5m"}

# A series name in PromQL: an identifier not followed by "(" (a function), nor inside
# braces (a label name) or quotes (a value). Only healer_* names are healer's.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACES = re.compile(r"\{[^}]*\}")
_NAME = re.compile(r"\b(healer_[A-Za-z0-9_:]*)\b(?!\s*\()")
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def load_dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def targets(dashboard: Mapping[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """``(panel, target)`` for every query of every panel."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield panel, target


def variables(dashboard: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def render(expr: str, values: Mapping[str, str]) -> str:
    """``expr`` with every ``$var`` / ``${var}`` replaced as Grafana would: the template
    variables from ``values``, the interval built-ins from :data:`BUILTINS`. An unknown
    variable raises ``KeyError``."""
    known = {**BUILTINS, **values}

    def one(match: re.Match[str]) -> str:
        return known[match.group(1) or match.group(2)]

    return _VARIABLE.sub(one, expr)


def metric_names(expr: str) -> set[str]:
    """The healer_* series names ``expr`` reads."""
    bare = _BRACES.sub("{}", _STRING.sub('""', expr))
    return set(_NAME.findall(bare))


def exported_names(registry: CollectorRegistry) -> set[str]:
    """Every series name the metrics on ``registry`` can expose, as Prometheus stores
    them: counters with ``_total``, histograms as ``_bucket``/``_sum``/``_count``."""
    names: set[str] = set()
    for family in registry.collect():
        if family.type == "counter":
            names |= {family.name + "_total", family.name + "_created"}
        elif family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_sum", "_count", "_created")}
        else:
            names.add(family.name)
    return names
