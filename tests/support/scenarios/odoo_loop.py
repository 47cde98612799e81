"""The Odoo runbook's closed loop on real components, at test speed.

    exporters --scrape--> Prometheus (a sped-up copy of alerts/*.rules.yml) --> Alertmanager
        --POST--> healer serve (a copy of examples/odoo/healer.yml) --> PostgreSQL / dockerd

The shipped alert rules and healer config are the ones under test: this
module copies them and changes only what a test must, each change spelled out:

* alert rules (:data:`TEST_SPEED`): every ``for:`` shortened, and in some
  expressions one literal (a threshold, a range) replaced; each literal must
  occur exactly once, so a rule that changes shape fails here loudly instead
  of being silently left at runbook speed;
* healer config (:func:`odoo_config`): journal, Prometheus URL, Docker from the
  environment, ``databases:`` pointed at the test's database, the allowlist
  narrowed to the test's own containers and databases, per rule a few params
  (shorter thresholds, the test's compose project) and extra matchers that keep
  the rule to the test's own alerts (the PostgreSQL server and dockerd are
  shared with other tests).

``OdooLoop`` is what a test talks to: the heal journal over HTTP, and when each
phase ended (fault -> pending -> firing -> webhook -> check -> act -> gone -> seen
-> outcome), from Prometheus' own samples and the heal's timeline. The scenarios
themselves are in odoo_scenarios.py.
"""

from __future__ import annotations

import copy
import json
import math
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.env import free_port, wait_until
from tests.support.inprocess.healer_api import HealerApi, write_config
from tests.support.servers.processes import (
    AlertmanagerFactory,
    AMInstance,
    HealerFactory,
    PrometheusFactory,
    PromInstance,
)

REPO = Path(__file__).resolve().parents[3]
ODOO_CONFIG = REPO / "examples" / "odoo" / "healer.yml"
ALERT_RULES = (REPO / "alerts" / "odoo.rules.yml", REPO / "alerts" / "platform.rules.yml")
EXPORTER_QUERIES = REPO / "alerts" / "postgres_exporter" / "queries.yml"


@dataclass(frozen=True)
class Speedup:
    """How one shipped alert rule runs in a test: its ``for:``, and literal rewrites of
    its expression (each ``(old, new)``; ``old`` must occur exactly once)."""

    for_: str
    expr: tuple[tuple[str, str], ...] = ()
    why: str = ""


TEST_SPEED: dict[str, Speedup] = {
    "OdooCronStuck": Speedup("1s", (("> 1800", "> 3"),), "30 min overdue -> 3 s; for 5m -> 1s"),
    "OdooDbDeadlock": Speedup(
        "1s",
        (("_max_wait_seconds > 30", "_max_wait_seconds > 2"),),
        "a 30 s lock wait -> 2 s; for 30s -> 1s",
    ),
    "OdooMemoryLeak": Speedup(
        "2s", (), "80% of the limit kept (a ratio, not a time); for 10m -> 2s"
    ),
    "OdooLongpollLatencyHigh": Speedup(
        "2s",
        (("[5m]", "[10s]"),),
        "p95 over 5m -> over 10s (threshold 1 s kept: the "
        "probe times out after 0.5 s at 1 s scrapes, so a "
        "stall shows as probe_success 0); for 2m -> 2s",
    ),
    "PostgresTooManyConnections": Speedup(
        "1s", (), "80% kept (a private server with max_connections=20); for 2m -> 1s"
    ),
}


def speed_up_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """A copy of one alerting rule with its :data:`TEST_SPEED` changes applied."""
    name = rule["alert"]
    speed = TEST_SPEED[name]
    out = copy.deepcopy(rule)
    out["for"] = speed.for_
    expr = str(out["expr"])
    for old, new in speed.expr:
        count = expr.count(old)
        if count != 1:
            raise AssertionError(
                f"{name}: expected {old!r} once in its expr, found it "
                f"{count} times; update TEST_SPEED:\n{expr}"
            )
        expr = expr.replace(old, new)
    out["expr"] = expr
    return out


def shipped_rules() -> dict[str, dict[str, Any]]:
    """Every alerting rule of :data:`ALERT_RULES`, by alert name."""
    rules: dict[str, dict[str, Any]] = {}
    for path in ALERT_RULES:
        for group in (yaml.safe_load(path.read_text()) or {}).get("groups", []):
            for rule in group.get("rules", []):
                if "alert" in rule:
                    rules[rule["alert"]] = rule
    return rules


def derive_rules(workdir: Path, alerts: Sequence[str]) -> Path:
    """A rules file with only ``alerts``, sped up; the original expressions otherwise."""
    shipped = shipped_rules()
    missing = [a for a in alerts if a not in shipped]
    if missing:
        raise AssertionError(f"alerts {missing} not in {[str(p) for p in ALERT_RULES]}")
    path = workdir / "odoo-test.rules.yml"
    groups = {
        "groups": [{"name": "odoo-test", "rules": [speed_up_rule(shipped[a]) for a in alerts]}]
    }
    path.write_text(yaml.safe_dump(groups, sort_keys=False))
    return path


def merged(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``extra`` over ``base``: mappings merge, lists add up (``protect.users`` keeps the
    shipped users and gains the test's), anything else is replaced."""
    out = dict(base)
    for key, value in extra.items():
        old = out.get(key)
        if isinstance(old, Mapping) and isinstance(value, Mapping):
            out[key] = merged(old, value)
        elif isinstance(old, list) and isinstance(value, list):
            out[key] = old + [v for v in value if v not in old]
        else:
            out[key] = value
    return out


def shipped_rule(alert: str) -> dict[str, Any]:
    """The rule of examples/odoo/healer.yml that heals ``alert``, as shipped."""
    return rule_for_alert(yaml.safe_load(ODOO_CONFIG.read_text()), alert)


@dataclass
class RuleTweak:
    """What a test changes in the shipped rule that heals ``alert``."""

    alert: str
    params: dict[str, Any] = field(default_factory=dict)  # merged over the rule's params
    match: list[str] = field(default_factory=list)  # extra matchers (scope to the test)
    dry_run: bool = False


def rule_for_alert(config: Mapping[str, Any], alert: str) -> dict[str, Any]:
    """The first shipped rule whose matchers name ``alertname="<alert>"``."""
    wanted = f'alertname="{alert}"'
    for rule in config.get("rules", []):
        match = rule.get("match", [])
        matchers = [match] if isinstance(match, str) else list(match)
        if any(m.replace(" ", "") == wanted for m in matchers):
            return dict(rule)
    raise AssertionError(f"no rule for alert {alert} in {ODOO_CONFIG}")


def odoo_config(
    workdir: Path,
    *,
    prometheus_url: str,
    tweaks: Sequence[RuleTweak],
    databases: Mapping[str, Mapping[str, Any]],
    allow: Sequence[Mapping[str, str]],
    stable_for: str = "3s",
    timeout: str = "40s",
) -> Path:
    """The shipped Odoo config, pointed at this test's world (see the module docstring).

    ``databases`` maps a name used by the shipped rules to settings merged over the
    shipped entry (``dsn`` replaces the shipped DSN source)."""
    shipped: dict[str, Any] = yaml.safe_load(ODOO_CONFIG.read_text())
    config: dict[str, Any] = {
        "journal": str(workdir / "journal.db"),
        "prometheus": {"url": prometheus_url},
        "verify": {"stable_for": stable_for, "timeout": timeout},
        "allow": [dict(entry) for entry in allow],
    }
    dbs: dict[str, Any] = {}
    for name, settings in databases.items():
        base = {
            k: v
            for k, v in (shipped.get("databases") or {}).get(name, {}).items()
            if k not in ("dsn", "dsn_file", "dsn_env")
        }
        dbs[name] = merged(base, settings)
    if dbs:
        config["databases"] = dbs
    rules = []
    for tweak in tweaks:
        rule = rule_for_alert(shipped, tweak.alert)
        match = rule["match"]
        rule["match"] = [*([match] if isinstance(match, str) else match), *tweak.match]
        rule["params"] = {**rule.get("params", {}), **tweak.params}
        rule["dry_run"] = tweak.dry_run
        rules.append(rule)
    config["rules"] = rules
    return write_config(workdir, config)


@dataclass(kw_only=True)
class OdooLoop(HealerApi):
    prometheus: PromInstance
    alertmanager: AMInstance
    config_path: Path
    rules_path: Path

    # -- healer -------------------------------------------------------------------------
    def wait_for_heal(self, rule: str, timeout: float = 60.0) -> dict[str, Any]:
        """The first heal of ``rule`` to reach an outcome, with its timeline."""

        def finished() -> dict[str, Any] | None:
            done = [h for h in self.heals(rule=rule) if h["outcome"] is not None]
            return self.heal(done[-1]["id"]) if done else None

        try:
            return wait_until(
                finished,
                timeout=timeout,
                interval=0.5,
                what=f"a finished heal of {rule}",
                ignore=(httpx.HTTPError,),
            )
        except TimeoutError as exc:
            raise TimeoutError(
                f"{exc}\nheals: {self.heals()}\nalerts: "
                f"{self.prometheus.query('ALERTS')}\nhealer log:\n"
                f"{self.healer.log_tail(30)}"
            ) from None

    def metric(self, name: str, labels: Mapping[str, str]) -> float | None:
        with httpx.Client(timeout=5.0) as client:
            text = client.get(f"{self.healer.url}/metrics").text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return float(sample.value)
        return None

    # -- Prometheus ---------------------------------------------------------------------
    def value(self, expr: str) -> float | None:
        """The first sample's value of an instant query, or None when it is empty."""
        result = self.prometheus.query(expr)
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, expr: str, *, timeout: float = 30.0, what: str = "") -> float:
        """Wait until the instant query ``expr`` returns something (bounded)."""
        return wait_until(
            lambda: self.value(expr),
            timeout=timeout,
            interval=0.25,
            what=what or expr,
            ignore=(httpx.HTTPError,),
        )

    def wait_for_jobs_up(self, jobs: Sequence[str], timeout: float = 20.0) -> None:
        """Every scrape job has a target scraped successfully (Prometheus 2.42 hands static
        targets to the scraper on its 5 s discovery tick)."""
        want = set(jobs)

        def up() -> bool:
            samples = self.prometheus.query("up == 1")
            return {s["metric"].get("job") for s in samples} >= want

        wait_until(
            up,
            timeout=timeout,
            interval=0.2,
            what=f"jobs {sorted(want)} up",
            ignore=(httpx.HTTPError,),
        )

    def firing(self, alertname: str) -> list[dict[str, Any]]:
        return self.prometheus.query(f'ALERTS{{alertname="{alertname}", alertstate="firing"}}')

    def alert_samples(
        self, labels: Mapping[str, str], since: float, state: str | None = None
    ) -> list[float]:
        """The timestamps of the raw ``ALERTS`` samples (one per rule evaluation) of the
        alert with ``labels`` (``alertstate`` ``state``, else pending or firing) from
        ``since`` until now, oldest first."""
        matchers = [
            f"{name}={json.dumps(value, ensure_ascii=False)}"
            for name, value in sorted(labels.items())
            if name != "alertstate"
        ]
        if state is not None:
            matchers.append(f"alertstate={json.dumps(state)}")
        window = max(1, math.ceil(time.time() - since) + 2)
        result = self.prometheus.query(f"ALERTS{{{', '.join(matchers)}}}[{window}s]")
        return sorted(
            float(t) for series in result for t, _ in series["values"] if float(t) >= since
        )

    def milestones(self, heal: dict[str, Any], fault_at: float) -> dict[str, float | None]:
        """When (epoch seconds) the loop reached each point of one heal, from the source
        that knows: the fault (the caller's clock), Prometheus' own samples, the heal's
        journaled timeline.

        pending / firing: the first evaluation that found the alert pending / firing;
        webhook: healer journaled the alert (``matched``); check / act: each step done;
        gone: the first evaluation that no longer found the alert firing (the last
        firing sample before ``seen``, plus the verify interval); seen: the first sample
        of healer's final healthy streak; outcome: the outcome journaled."""
        labels = heal["labels"]
        events: dict[str, float] = {}
        for event in heal["timeline"]:
            events.setdefault(event["kind"], event["at"])
        active = self.alert_samples(labels, since=fault_at)
        firing = self.alert_samples(labels, since=fault_at, state="firing")
        samples = [
            (e["at"], e["data"].get("healthy"))
            for e in heal["timeline"]
            if e["kind"] == "verify_sample"
        ]
        seen = None
        for at, healthy in reversed(samples):
            if healthy is not True:
                break
            seen = at
        interval = next(
            (
                float(e["data"].get("interval", 1.0))
                for e in heal["timeline"]
                if e["kind"] == "verify_start"
            ),
            1.0,
        )
        before_seen = [t for t in firing if seen is not None and t < seen]
        gone = before_seen[-1] + interval if before_seen else None
        return {
            "fault": fault_at,
            "pending": active[0] if active else None,
            "firing": firing[0] if firing else None,
            "webhook": events.get("matched", heal["created_at"]),
            "check": events.get("check"),
            "act": events.get("act"),
            "gone": gone,
            "seen": seen,
            "outcome": events.get("outcome"),
        }

    def timings(self, heal: dict[str, Any], fault_at: float) -> dict[str, float | None]:
        """Seconds from the fault to each of :meth:`milestones`."""
        return {
            name: None if at is None else round(at - fault_at, 2)
            for name, at in self.milestones(heal, fault_at).items()
            if name != "fault"
        }


def start_odoo_loop(
    *,
    workdir: Path,
    prometheus: PrometheusFactory,
    alertmanager: AlertmanagerFactory,
    healer: HealerFactory,
    alerts: Sequence[str],
    scrape_configs: Sequence[Mapping[str, Any]],
    tweaks: Sequence[RuleTweak],
    databases: Mapping[str, Mapping[str, Any]],
    allow: Sequence[Mapping[str, str]],
    stable_for: str = "3s",
    timeout: str = "40s",
) -> OdooLoop:
    """Prometheus (the sped-up ``alerts``, scraping ``scrape_configs``), Alertmanager and
    ``healer serve`` with the derived Odoo config; returns once every job is up."""
    webhook_token, admin_token = secrets.token_hex(16), secrets.token_hex(16)
    healer_port = free_port()
    am = alertmanager.start(
        f"http://127.0.0.1:{healer_port}/api/v1/alerts", bearer_token=webhook_token
    )
    rules_path = derive_rules(workdir, alerts)
    prom = prometheus.start(
        [], rule_files=[rules_path], alertmanager_url=am.url, scrape_configs=scrape_configs
    )
    config = odoo_config(
        workdir,
        prometheus_url=prom.url,
        tweaks=tweaks,
        databases=databases,
        allow=allow,
        stable_for=stable_for,
        timeout=timeout,
    )
    proc = healer.start(
        config,
        port=healer_port,
        env={"HEALER_WEBHOOK_TOKEN": webhook_token, "HEALER_ADMIN_TOKEN": admin_token},
    )
    loop = OdooLoop(
        prometheus=prom,
        alertmanager=am,
        healer=proc,
        admin_token=admin_token,
        config_path=config,
        rules_path=rules_path,
    )
    loop.wait_for_jobs_up([str(job["job_name"]) for job in scrape_configs])
    return loop
