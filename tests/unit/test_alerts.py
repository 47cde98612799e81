"""alerts/: every rule is documented and tested, and every alert Alertmanager
routes to healer meets a healer rule that can act on it.

The synthetic alerts are the label sets the promtool tests (alerts/tests/*.yml)
expect to fire: real label sets produced by the real expressions.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from healer.config import HealerConfig, load_config
from healer.matching import MatchType
from healer.plugins import HandlerRegistry
from healer.rules import RuleSet
from healer.templating import render_params
from tests.support.env import require_service
from tests.support.inprocess.markdown import anchors
from tests.support.inprocess.stack import (
    ALERTS,
    REPO,
    RUNBOOKS,
    alert_expectations,
    alerting_rules,
    expected_firing_alerts,
    load_yaml,
    rule_files,
    rule_tests,
)

ALERTMANAGER_YML = ALERTS / "alertmanager.yml"
HEALER_YML = REPO / "examples" / "odoo" / "healer.yml"
# Where our own runbook_urls point: the repository's README and docs pages.
OWN_PAGES = "https://github.com/healer/healer/blob/main/"
QUERIES_YML = ALERTS / "postgres_exporter" / "queries.yml"
HEALER_OWN = {
    "HealerHealFailed",
    "HealerCircuitOpen",
    "HealerApprovalWaiting",
    "HealerApprovalExpired",
    "HealerChatCallbacksRefused",
    "HealerDown",
}
ROUTED_TO_HEALER = {
    "OdooLongpollLatencyHigh",
    "OdooCronStuck",
    "OdooDbDeadlock",
    "OdooMemoryLeak",
    "ServiceUnhealthy",
    "PostgresTooManyConnections",
    "DiskAlmostFull",
}


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        require_service(name, "not on PATH (Debian package prometheus / prometheus-alertmanager)")
    return path


def healer_rules_config() -> HealerConfig:
    """examples/odoo/healer.yml, validated without the handler registry (handlers that
    are not installed yet must not hide the routing checks)."""
    return load_config(HEALER_YML)


def rule_alertnames(config: HealerConfig) -> dict[str, str]:
    """healer rule name -> the alertname its matchers require."""
    out = {}
    for rule in config.rules:
        names = [
            m.value for m in rule.match.matchers if m.name == "alertname" and m.type is MatchType.EQ
        ]
        assert len(names) == 1, f"rule {rule.name} should match exactly one alertname with ="
        out[rule.name] = names[0]
    return out


# --- every rule is documented --------------------------------------------------------


@pytest.mark.parametrize("rule", alerting_rules(), ids=lambda r: r["alert"])
def test_every_alert_has_severity_summary_description_and_runbook(rule: dict[str, Any]) -> None:
    """Each alerting rule carries a severity label (the runbooks' P0..P3) and the
    summary, description and runbook_url annotations on-call and healer rely on."""
    assert rule.get("labels", {}).get("severity") in {"P0", "P1", "P2", "P3"}, rule["alert"]
    annotations = rule.get("annotations", {})
    for key in ("summary", "description", "runbook_url"):
        assert str(annotations.get(key, "")).strip(), f"{rule['alert']}: no {key}"
    assert annotations["runbook_url"].startswith("https://"), rule["alert"]
    assert "#" in annotations["runbook_url"], f"{rule['alert']}: runbook_url needs an anchor"


def test_alert_names_are_unique() -> None:
    """One definition per alert name across alerts/*.rules.yml."""
    names = [r["alert"] for r in alerting_rules()]
    assert len(names) == len(set(names)), names


def test_runbook_urls_point_at_existing_sections() -> None:
    """runbook_url anchors exist: runbooks.example.com/<file>#<anchor> in the runbooks
    copied into docs/runbooks, .../blob/main/<page>.md#<anchor> in our own README and
    docs pages."""
    checked = 0
    for rule in alerting_rules():
        url = rule["annotations"]["runbook_url"]
        page, _, anchor = url.partition("#")
        if page.startswith(OWN_PAGES):
            doc = REPO / page.removeprefix(OWN_PAGES)
            assert doc.is_file(), f"{rule['alert']}: no page {doc.relative_to(REPO)}"
            assert anchor in anchors(doc), f"{rule['alert']}: {doc.name} has no #{anchor}"
            checked += 1
        elif page.startswith("https://runbooks.example.com/"):
            runbook = RUNBOOKS / page.rsplit("/", 1)[1]
            assert runbook.is_file(), f"{rule['alert']}: no runbook {runbook.name}"
            assert anchor in anchors(runbook), f"{rule['alert']}: {runbook.name} has no #{anchor}"
            checked += 1
        else:
            raise AssertionError(f"{rule['alert']}: runbook_url {url} points nowhere we check")
    assert checked


# --- every rule is tested ----------------------------------------------------------------


def test_every_rule_file_has_a_promtool_test() -> None:
    """Each alerts/*.rules.yml is loaded by some alerts/tests/*.yml."""
    tested = set()
    for path in rule_tests():
        tested.update(Path(f).name for f in load_yaml(path).get("rule_files", []))
    assert {p.name for p in rule_files()} <= tested


@pytest.mark.parametrize("rule", alerting_rules(), ids=lambda r: r["alert"])
def test_every_alert_is_tested_firing_and_quiet(rule: dict[str, Any]) -> None:
    """Each alert has promtool cases where it fires and where it must not; an alert
    with a `for:` also has a quiet case, which the files use for "not before for:"."""
    cases = [exp for _, name, exp in alert_expectations() if name == rule["alert"]]
    assert any(cases), f"{rule['alert']}: no promtool case expects it to fire"
    assert any(not exp for exp in cases), f"{rule['alert']}: no promtool case expects silence"


@pytest.mark.prometheus
def test_promtool_checks_and_tests_the_rules() -> None:
    """`promtool check rules` and `promtool test rules` pass (as in scripts/test)."""
    promtool = binary("promtool")
    for argv in (
        [promtool, "check", "rules", *map(str, rule_files())],
        [promtool, "test", "rules", *map(str, rule_tests())],
    ):
        done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr


def test_rules_use_the_metrics_the_exporter_queries_define() -> None:
    """The postgres_exporter metrics the rules read (<query>_<column>) are defined by
    alerts/postgres_exporter/queries.yml, with the labels the rules use."""
    defined: dict[str, set[str]] = {}
    for query, spec in load_yaml(QUERIES_YML).items():
        columns = [next(iter(c.items())) for c in spec["metrics"]]
        labels = {name for name, meta in columns if meta["usage"] == "LABEL"}
        for name, meta in columns:
            if meta["usage"] in {"GAUGE", "COUNTER"}:
                defined[f"{query}_{name}"] = labels
        assert spec.get("master") is True, f"{query} must run once, on the DSN's database"
    assert defined["odoo_cron_delay_seconds"] == {"datname", "cron_id", "cron_name"}
    assert defined["pg_blocked_sessions_max_wait_seconds"] == {"datname"}
    assert defined["pg_blocked_sessions_count"] == {"datname"}
    exprs = {r["alert"]: r["expr"] for r in alerting_rules()}
    assert "odoo_cron_delay_seconds" in exprs["OdooCronStuck"]
    assert "pg_blocked_sessions_max_wait_seconds" in exprs["OdooDbDeadlock"]


# --- Alertmanager -> healer ----------------------------------------------------------


@pytest.mark.prometheus
def test_alertmanager_config_is_valid() -> None:
    """amtool accepts alerts/alertmanager.yml."""
    done = subprocess.run(
        [binary("amtool"), "check-config", str(ALERTMANAGER_YML)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_healer_receiver_posts_with_bearer_auth_and_resolved() -> None:
    """The healer receiver is healer's webhook path with a bearer token from a file and
    send_resolved (resolved alerts end healer's pending work)."""
    config = load_yaml(ALERTMANAGER_YML)
    (healer,) = [r for r in config["receivers"] if r["name"] == "healer"]
    (hook,) = healer["webhook_configs"]
    assert hook["url"].endswith(":9095/api/v1/alerts")
    assert hook["send_resolved"] is True
    auth = hook["http_config"]["authorization"]
    assert auth.get("type", "Bearer") == "Bearer" and auth["credentials_file"]
    assert "credentials" not in auth


def receivers(labels: dict[str, str]) -> set[str]:
    """Where Alertmanager routes an alert with these labels (amtool config routes test)."""
    matchers = [
        '{}="{}"'.format(k, v.replace("\\", "\\\\").replace('"', '\\"'))
        for k, v in sorted(labels.items())
    ]
    done = subprocess.run(
        [
            binary("amtool"),
            "config",
            "routes",
            "test",
            f"--config.file={ALERTMANAGER_YML}",
            *matchers,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return set(done.stdout.strip().split(","))


@pytest.mark.prometheus
def test_every_alert_routed_to_healer_meets_a_healer_rule_that_can_act() -> None:
    """For each alert the promtool tests expect to fire: if Alertmanager routes it to
    healer, a rule of examples/odoo/healer.yml matches its labels and the rule's params
    render from them (every templated label is there); and with the handler
    installed, the rendered params validate. healer's own alerts never go to healer."""
    config = healer_rules_config()
    ruleset = RuleSet(config)
    registry = HandlerRegistry.from_entry_points()
    routed: set[str] = set()
    for labels in expected_firing_alerts():
        to = receivers(labels)
        assert "oncall" in to, f"{labels['alertname']} must reach people too"
        if "healer" not in to:
            continue
        assert labels["alertname"] not in HEALER_OWN
        routed.add(labels["alertname"])
        rule = ruleset.match(labels)
        assert rule is not None, f"no healer rule matches {labels}"
        params = render_params(rule.params, labels, {})
        handler = registry.get(rule.handler)
        if handler is not None:
            handler.Params.model_validate(params)
    assert routed == ROUTED_TO_HEALER


@pytest.mark.prometheus
def test_other_services_unhealthy_go_to_people_only() -> None:
    """ServiceUnhealthy for a service healer may not restart (an exporter) is not sent to
    healer, where it could only end `refused`."""
    labels = {
        "alertname": "ServiceUnhealthy",
        "severity": "P1",
        "job": "cadvisor",
        "instance": "cadvisor:8080",
        "compose_project": "odoo",
        "compose_service": "cadvisor",
    }
    assert receivers(labels) == {"oncall"}


def test_every_healer_rule_names_an_existing_alert() -> None:
    """Each healer rule matches an alertname defined in alerts/*.rules.yml, and each
    alert routed to healer has a rule."""
    defined = {r["alert"] for r in alerting_rules()}
    names = rule_alertnames(healer_rules_config())
    assert set(names.values()) <= defined, set(names.values()) - defined
    assert set(names.values()) == ROUTED_TO_HEALER


def test_alertmanager_routes_name_existing_alerts() -> None:
    """Every alertname in alerts/alertmanager.yml's route matchers is a defined alert."""
    defined = {r["alert"] for r in alerting_rules()}
    text = ALERTMANAGER_YML.read_text(encoding="utf-8")
    named: set[str] = set()
    for m in re.finditer(r'alertname=~?"([^"]+)"', text):
        named.update(m.group(1).split("|"))
    assert named and named <= defined, named - defined
