"""Helpers for the crash and fault tests: the closed loop assembled with variations
(an HA pair of Alertmanagers, a proxy in front of healer), waits on a heal's phase,
the journal read straight from its file, and real restarts counted by dockerd.

    loop = start_variant_loop(..., alertmanagers=2, am_args=cluster_args(2))
    heal = wait_for_phase(loop, "verifying")
    loop.healer.kill(); loop.healer.restart()
    heal = wait_for_done(loop, heal["id"])
    assert docker_restarts(client, loop.service.name, since) == 1
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import httpx

from tests.support.env import free_port, wait_until
from tests.support.scenarios.loop import DEMO_RULES, Loop, demo_config
from tests.support.servers.docker_events import container_events
from tests.support.servers.processes import (
    AlertmanagerFactory,
    AMInstance,
    HealerFactory,
    PrometheusFactory,
)
from tests.support.servers.service import DemoService


@dataclass
class VariantLoop(Loop):
    webhook_token: str = ""
    config_path: Path = Path()
    alertmanagers: list[AMInstance] = field(default_factory=list)

    def ready(self) -> httpx.Response:
        with httpx.Client(timeout=10.0) as client:
            return client.get(f"{self.healer.url}/health/ready")


def cluster_args(count: int) -> list[list[str]]:
    """Alertmanager flags for an HA cluster of ``count`` peers gossiping over loopback.

    ``--cluster.peer-timeout=0s``: a peer does not wait for the others' notification log
    before sending, so every peer delivers the group (what a slow or partitioned
    cluster does), and healer must deduplicate."""
    ports = [free_port() for _ in range(count)]
    out = []
    for i, port in enumerate(ports):
        args = [
            f"--cluster.listen-address=127.0.0.1:{port}",
            f"--cluster.advertise-address=127.0.0.1:{port}",
            "--cluster.peer-timeout=0s",
            "--log.level=debug",
        ]
        args += [f"--cluster.peer=127.0.0.1:{p}" for j, p in enumerate(ports) if j != i]
        out.append(args)
    return out


def start_variant_loop(
    *,
    workdir: Path,
    service: DemoService,
    prometheus: PrometheusFactory,
    alertmanager: AlertmanagerFactory,
    healer: HealerFactory,
    alertmanagers: int = 1,
    am_args: Sequence[Sequence[str]] = (),
    webhook_base: Callable[[str], str] | None = None,
    stable_for: str = "4s",
    timeout: str = "40s",
    overrides: dict[str, Any] | None = None,
) -> VariantLoop:
    """The loop of tests/support/scenarios/loop.py, with ``alertmanagers`` peers (``am_args[i]`` are
    peer i's extra flags; Prometheus alerts every peer) and Alertmanager posting to
    ``webhook_base(healer_url)`` instead of healer itself (e.g. a proxy's URL)."""
    webhook_token, admin_token = secrets.token_hex(16), secrets.token_hex(16)
    healer_port = free_port()
    healer_url = f"http://127.0.0.1:{healer_port}"
    base = webhook_base(healer_url) if webhook_base is not None else healer_url
    ams = [
        alertmanager.start(
            f"{base}/api/v1/alerts",
            bearer_token=webhook_token,
            extra_args=am_args[i] if i < len(am_args) else (),
        )
        for i in range(alertmanagers)
    ]
    prom = prometheus.start(
        [service.target],
        rule_files=[DEMO_RULES],
        alertmanager_url=[am.url for am in ams],
        target_labels={"container": service.name},
    )
    config = demo_config(
        workdir,
        prometheus_url=prom.url,
        name_glob=service.name,
        stable_for=stable_for,
        timeout=timeout,
        overrides=overrides,
    )
    proc = healer.start(
        config,
        port=healer_port,
        env={"HEALER_WEBHOOK_TOKEN": webhook_token, "HEALER_ADMIN_TOKEN": admin_token},
    )
    prom.wait_for_targets_up()
    return VariantLoop(
        service=service,
        prometheus=prom,
        alertmanager=ams[0],
        healer=proc,
        admin_token=admin_token,
        webhook_token=webhook_token,
        config_path=config,
        alertmanagers=ams,
    )


def wait_for_phase(loop: Loop, phase: str, *, timeout: float = 60.0) -> dict[str, Any]:
    """The first heal (oldest) once it has reached ``phase`` (or any later one)."""
    order = ["pending", "checking", "acting", "verifying", "done"]

    def reached() -> dict[str, Any] | None:
        heals = loop.heals()
        if not heals:
            return None
        heal = heals[-1]
        return heal if order.index(heal["phase"]) >= order.index(phase) else None

    return wait_until(
        reached, timeout=timeout, interval=0.1, what=f"a heal {phase}", ignore=(httpx.HTTPError,)
    )


def wait_for_done(loop: Loop, heal_id: str, *, timeout: float = 90.0) -> dict[str, Any]:
    """The heal with its timeline once its phase is ``done`` (an ``interrupted`` outcome
    that is still to be re-verified is not the end)."""

    def done() -> dict[str, Any] | None:
        heal = loop.heal(heal_id)
        return heal if heal["phase"] == "done" else None

    return wait_until(
        done, timeout=timeout, interval=0.25, what=f"heal {heal_id} done", ignore=(httpx.HTTPError,)
    )


def journal_heal(path: Path, heal_id: str) -> dict[str, Any]:
    """One heal and its timeline, read from the journal file (healer may be stopped)."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM heals WHERE id=?", (heal_id,)).fetchone()
        assert row is not None, f"heal {heal_id} not in {path}"
        heal = dict(row)
        heal["timeline"] = [
            {"phase": e["phase"], "kind": e["kind"], "data": json.loads(e["data"])}
            for e in db.execute("SELECT * FROM events WHERE heal_id=? ORDER BY seq", (heal_id,))
        ]
    return heal


def journal_rows(path: Path, sql: str, *args: Any) -> list[dict[str, Any]]:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute(sql, args)]


def docker_restarts(client: docker.DockerClient, container: str, since: float) -> int:
    """How many times dockerd restarted ``container`` since ``since`` (epoch seconds):
    dockerd's own ``restart`` events, not healer's word for it."""
    return len(
        container_events(
            client, since=int(since) - 1, filters={"container": container, "event": "restart"}
        )
    )


def kinds(heal: dict[str, Any]) -> list[str]:
    return [event["kind"] for event in heal["timeline"]]
