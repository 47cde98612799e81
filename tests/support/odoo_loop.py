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

``OdooLoop`` is what a test talks to: the heal journal over HTTP, and the
timings of each phase (fault -> pending -> firing -> webhook -> check -> act
-> outcome) from Prometheus and the heal's timeline.
"""

from __future__ import annotations

import copy
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from .env import free_port, wait_until
from .healer_api import HealerApi, write_config
from .processes import (
    AlertmanagerFactory,
    AMInstance,
    HealerFactory,
    PrometheusFactory,
    PromInstance,
)

REPO = Path(__file__).resolve().parents[2]
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
    "OdooCronStuck": Speedup("1s", (("> 1800", "> 3"),),
                             "30 min overdue -> 3 s; for 5m -> 1s"),
    "OdooDbDeadlock": Speedup("1s", (("_max_wait_seconds > 30", "_max_wait_seconds > 2"),),
                              "a 30 s lock wait -> 2 s; for 30s -> 1s"),
    "OdooMemoryLeak": Speedup("2s", (), "80% of the limit kept (a ratio, not a time); "
                                        "for 10m -> 2s"),
    "OdooLongpollLatencyHigh": Speedup("2s", (("[5m]", "[10s]"),),
                                       "p95 over 5m -> over 10s (threshold 1 s kept: the "
                                       "probe times out after 0.5 s at 1 s scrapes, so a "
                                       "stall shows as probe_success 0); for 2m -> 2s"),
    "PostgresTooManyConnections": Speedup("1s", (), "80% kept (a private server with "
                                                    "max_connections=20); for 2m -> 1s"),
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
            raise AssertionError(f"{name}: expected {old!r} once in its expr, found it "
                                 f"{count} times; update TEST_SPEED:\n{expr}")
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
    groups = {"groups": [{"name": "odoo-test",
                          "rules": [speed_up_rule(shipped[a]) for a in alerts]}]}
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
    match: list[str] = field(default_factory=list)        # extra matchers (scope to the test)
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


def odoo_config(workdir: Path, *, prometheus_url: str, tweaks: Sequence[RuleTweak],
                databases: Mapping[str, Mapping[str, Any]], allow: Sequence[Mapping[str, str]],
                stable_for: str = "3s", timeout: str = "40s") -> Path:
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
        base = {k: v for k, v in (shipped.get("databases") or {}).get(name, {}).items()
                if k not in ("dsn", "dsn_file", "dsn_env")}
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
            return wait_until(finished, timeout=timeout, interval=0.5,
                              what=f"a finished heal of {rule}", ignore=(httpx.HTTPError,))
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\nheals: {self.heals()}\nalerts: "
                               f"{self.prometheus.query('ALERTS')}\nhealer log:\n"
                               f"{self.healer.log_tail(30)}") from None

    def metric(self, name: str, labels: Mapping[str, str]) -> float | None:
        with httpx.Client(timeout=5.0) as client:
            text = client.get(f"{self.healer.url}/metrics").text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v
                                               for k, v in labels.items()):
                    return float(sample.value)
        return None

    # -- Prometheus ---------------------------------------------------------------------
    def value(self, expr: str) -> float | None:
        """The first sample's value of an instant query, or None when it is empty."""
        result = self.prometheus.query(expr)
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, expr: str, *, timeout: float = 30.0, what: str = "") -> float:
        """Wait until the instant query ``expr`` returns something (bounded)."""
        return wait_until(lambda: self.value(expr), timeout=timeout, interval=0.25,
                          what=what or expr, ignore=(httpx.HTTPError,))

    def wait_for_jobs_up(self, jobs: Sequence[str], timeout: float = 20.0) -> None:
        """Every scrape job has a target scraped successfully (Prometheus 2.42 hands static
        targets to the scraper on its 5 s discovery tick)."""
        want = set(jobs)

        def up() -> bool:
            samples = self.prometheus.query("up == 1")
            return {s["metric"].get("job") for s in samples} >= want

        wait_until(up, timeout=timeout, interval=0.2, what=f"jobs {sorted(want)} up",
                   ignore=(httpx.HTTPError,))

    def firing(self, alertname: str) -> list[dict[str, Any]]:
        return self.prometheus.query(f'ALERTS{{alertname="{alertname}", alertstate="firing"}}')

    def first_seen(self, expr: str, since: float, until: float | None = None) -> float | None:
        """When ``expr`` first had a sample between ``since`` and ``until`` (0.25 s steps)."""
        until = until or time.time()
        with httpx.Client(timeout=10.0) as client:
            response = client.get(f"{self.prometheus.url}/api/v1/query_range", params={
                "query": expr, "start": since, "end": until, "step": 0.25})
        response.raise_for_status()
        stamps = [float(t) for series in response.json()["data"]["result"]
                  for t, _ in series["values"]]
        return min(stamps) if stamps else None

    def timings(self, heal: dict[str, Any], fault_at: float) -> dict[str, float | None]:
        """Seconds from the fault to each phase of the loop.

        pending / firing: Prometheus (the ALERTS series; firing is the alert's startsAt);
        webhook: when healer journaled the alert; check / act / outcome: the heal's
        timeline (act is recorded once the action is done)."""
        alertname = heal["labels"].get("alertname", "")
        events = {e["kind"]: e["at"] for e in heal["timeline"]}
        pending = self.first_seen(f'ALERTS{{alertname="{alertname}"}}', since=fault_at)
        starts = heal.get("alert_starts_at")
        firing = datetime.fromisoformat(starts).timestamp() if starts else None

        def since(at: float | None) -> float | None:
            return None if at is None else round(at - fault_at, 2)

        return {"pending": since(pending), "firing": since(firing),
                "webhook": since(heal["created_at"]), "check": since(events.get("check")),
                "act": since(events.get("act")), "outcome": since(events.get("outcome"))}


def start_odoo_loop(*, workdir: Path, prometheus: PrometheusFactory,
                    alertmanager: AlertmanagerFactory, healer: HealerFactory,
                    alerts: Sequence[str], scrape_configs: Sequence[Mapping[str, Any]],
                    tweaks: Sequence[RuleTweak], databases: Mapping[str, Mapping[str, Any]],
                    allow: Sequence[Mapping[str, str]], stable_for: str = "3s",
                    timeout: str = "40s") -> OdooLoop:
    """Prometheus (the sped-up ``alerts``, scraping ``scrape_configs``), Alertmanager and
    ``healer serve`` with the derived Odoo config; returns once every job is up."""
    webhook_token, admin_token = secrets.token_hex(16), secrets.token_hex(16)
    healer_port = free_port()
    am = alertmanager.start(f"http://127.0.0.1:{healer_port}/api/v1/alerts",
                            bearer_token=webhook_token)
    rules_path = derive_rules(workdir, alerts)
    prom = prometheus.start([], rule_files=[rules_path], alertmanager_url=am.url,
                            scrape_configs=scrape_configs)
    config = odoo_config(workdir, prometheus_url=prom.url, tweaks=tweaks, databases=databases,
                         allow=allow, stable_for=stable_for, timeout=timeout)
    proc = healer.start(config, port=healer_port, env={
        "HEALER_WEBHOOK_TOKEN": webhook_token, "HEALER_ADMIN_TOKEN": admin_token})
    loop = OdooLoop(prometheus=prom, alertmanager=am, healer=proc, admin_token=admin_token,
                    config_path=config, rules_path=rules_path)
    loop.wait_for_jobs_up([str(job["job_name"]) for job in scrape_configs])
    return loop
