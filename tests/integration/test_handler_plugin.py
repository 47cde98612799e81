"""The example handler plugin (examples/handler-plugin) as a user installs it: its
distribution on a real ``healer serve``'s path, found through its entry point, driven by
an alert through a real rule; and its own tests (healer.testing only) pass, so neither
rots."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.inprocess.healer_api import write_config
from tests.support.inprocess.payloads import alert_payload
from tests.support.inprocess.plugin_install import install_distribution
from tests.support.servers.containers import ContainerFactory
from tests.support.servers.processes import HealerFactory

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "handler-plugin"
WEBHOOK_TOKEN = "wh-example-plugin"
ADMIN_TOKEN = "adm-example-plugin"

pytestmark = pytest.mark.docker


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """The example distribution installed (packages + dist-info) in a fresh directory."""
    return install_distribution(EXAMPLE, tmp_path / "site")


def _unhealthy(containers: ContainerFactory) -> Any:
    """A running container whose Docker health check fails, once it reports so."""
    container = containers.run(
        ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.2; done"],
        name=f"healer-test-plugin-{uuid.uuid4().hex[:8]}",
        healthcheck={"test": ["CMD", "false"], "interval": 100_000_000, "retries": 1},
    )
    deadline = time.monotonic() + 30
    while True:
        container.reload()
        if (container.attrs["State"].get("Health") or {}).get("Status") == "unhealthy":
            return container
        assert time.monotonic() < deadline, "the container never became unhealthy"
        time.sleep(0.1)


def _wait_outcome(client: httpx.Client, heal_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        heal: dict[str, Any] = client.get(f"/api/v1/heals/{heal_id}").json()
        if heal.get("outcome"):
            return heal
        assert time.monotonic() < deadline, heal
        time.sleep(0.1)


def test_the_example_plugin_heals_through_a_real_rule(
    tmp_path: Path, site: Path, containers: ContainerFactory, healer_process: HealerFactory
) -> None:
    """With the example installed on its PYTHONPATH, ``healer serve`` loads
    ``example.restart_unhealthy`` from its entry point; a ContainerUnhealthy alert runs it
    through a rule whose params are templated from the alert's labels (with a duration
    string): the heal acts (the container restarts) and ends ``unverified`` (nothing to
    verify against here), its timeline holding the handler's own ``restarted`` entry."""
    box = _unhealthy(containers)
    box.reload()
    before = box.attrs["State"]["StartedAt"]
    config = {
        "journal": str(tmp_path / "journal.db"),
        "prometheus": {"url": "http://127.0.0.1:9", "timeout": "0.2s"},
        "verify": {"stable_for": "0s", "timeout": "0.3s"},
        "allow": [{"kind": "docker", "name": box.name}],
        "rules": [
            {
                "name": "restart-unhealthy",
                "match": ['alertname="ContainerUnhealthy"'],
                "handler": "example.restart_unhealthy",
                "params": {"container": "{{ labels.container }}", "stop_timeout": "1s"},
            }
        ],
    }
    healer = healer_process.start(
        write_config(tmp_path, config),
        env={
            "PYTHONPATH": os.pathsep.join([str(site), str(REPO)]),
            "HEALER_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
            "HEALER_ADMIN_TOKEN": ADMIN_TOKEN,
        },
    )
    body = alert_payload({"alertname": "ContainerUnhealthy", "container": box.name})
    with httpx.Client(base_url=healer.url, timeout=10.0) as client:
        resp = client.post(
            "/api/v1/alerts", json=body, headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
        )
        assert resp.status_code == 200, resp.text
        [started] = resp.json()["started"]
        assert started["rule"] == "restart-unhealthy"
        client.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
        heal = _wait_outcome(client, started["heal_id"])

    assert heal["handler"] == "example.restart_unhealthy"
    assert heal["outcome"] == "unverified", heal["reason"]
    kinds = [e["kind"] for e in heal["timeline"]]
    assert kinds.index("check") < kinds.index("restarted") < kinds.index("act")
    [act] = [e["data"] for e in heal["timeline"] if e["kind"] == "act"]
    assert act["summary"] == f"restarted {box.name}"
    box.reload()
    assert box.attrs["State"]["StartedAt"] != before


@pytest.mark.timeout(180)
def test_the_example_plugins_own_tests_pass(site: Path, busybox_image: str) -> None:
    """``pytest`` in examples/handler-plugin, with the installed example and healer on the
    path (no ``tests/`` of healer's own), passes every test and skips none."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "tests"],
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        timeout=170,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(site), str(REPO)]),
            "HEALER_EXAMPLE_IMAGE": busybox_image,
            "CI": "true",
        },
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout, proc.stdout[-2000:]
