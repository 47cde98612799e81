"""The whole closed loop on real components, assembled once for the e2e tests and the demo.

    busybox service --scrape--> Prometheus (alerts/demo.rules.yml) --> Alertmanager
        --POST /api/v1/alerts (bearer)--> healer (examples/demo/healer.yml) --docker restart-->

Ports are all on 127.0.0.1. healer's port is chosen first because Alertmanager
must know where to post before healer starts.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
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
from tests.support.servers.service import DemoService

REPO = Path(__file__).resolve().parents[3]
DEMO_CONFIG = REPO / "examples" / "demo" / "healer.yml"
DEMO_RULES = REPO / "alerts" / "demo.rules.yml"


def demo_config(
    workdir: Path,
    *,
    prometheus_url: str,
    name_glob: str,
    dry_run: bool = False,
    stable_for: str = "4s",
    timeout: str = "40s",
    overrides: dict[str, Any] | None = None,
    mode: str = "auto",
) -> Path:
    """The shipped demo config, pointed at this run's Prometheus, journal and containers;
    ``overrides`` replace top-level keys (e.g. ``shutdown_grace``, ``journal``, ``docker``);
    ``mode``: every rule's (auto, suggest, approve)."""
    config: dict[str, Any] = yaml.safe_load(DEMO_CONFIG.read_text())
    config["journal"] = str(workdir / "journal.db")
    config["prometheus"] = {"url": prometheus_url}
    config["verify"] = {"stable_for": stable_for, "timeout": timeout}
    config["allow"] = [{"kind": "docker", "name": name_glob}]
    for rule in config["rules"]:
        rule["dry_run"] = dry_run
        rule["mode"] = mode
    config.update(overrides or {})
    return write_config(workdir, config)


@dataclass(kw_only=True)
class Loop(HealerApi):
    service: DemoService
    prometheus: PromInstance
    alertmanager: AMInstance

    def wait_for_finished_heal(self, timeout: float = 90.0) -> dict[str, Any]:
        """The first heal to reach an outcome, with its timeline."""

        def finished() -> dict[str, Any] | None:
            done = [h for h in self.heals() if h["outcome"] is not None]
            return self.heal(done[-1]["id"]) if done else None

        return wait_until(
            finished,
            timeout=timeout,
            interval=0.5,
            what="a finished heal",
            ignore=(httpx.HTTPError,),
        )

    def metric(self, name: str, labels: dict[str, str]) -> float | None:
        with httpx.Client(timeout=5.0) as client:
            text = client.get(f"{self.healer.url}/metrics").text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return float(sample.value)
        return None

    def firing(self) -> list[dict[str, Any]]:
        return self.prometheus.query(
            'ALERTS{alertname="DemoServiceUnhealthy", alertstate="firing"}'
        )


def start_loop(
    *,
    workdir: Path,
    service: DemoService,
    prometheus: PrometheusFactory,
    alertmanager: AlertmanagerFactory,
    healer: HealerFactory,
    dry_run: bool = False,
    stable_for: str = "4s",
    timeout: str = "40s",
    overrides: dict[str, Any] | None = None,
    mode: str = "auto",
) -> Loop:
    webhook_token, admin_token = secrets.token_hex(16), secrets.token_hex(16)
    healer_port = free_port()
    am = alertmanager.start(
        f"http://127.0.0.1:{healer_port}/api/v1/alerts", bearer_token=webhook_token
    )
    # The container's name rides on the scrape target, so `up` carries it too.
    prom = prometheus.start(
        [service.target],
        rule_files=[DEMO_RULES],
        alertmanager_url=am.url,
        target_labels={"container": service.name},
    )
    config = demo_config(
        workdir,
        prometheus_url=prom.url,
        name_glob=service.name,
        dry_run=dry_run,
        stable_for=stable_for,
        timeout=timeout,
        overrides=overrides,
        mode=mode,
    )
    proc = healer.start(
        config,
        port=healer_port,
        env={"HEALER_WEBHOOK_TOKEN": webhook_token, "HEALER_ADMIN_TOKEN": admin_token},
    )
    prom.wait_for_targets_up()
    return Loop(
        service=service, prometheus=prom, alertmanager=am, healer=proc, admin_token=admin_token
    )
