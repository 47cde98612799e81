"""Smoke tests for the shared fixtures: they drive real Docker, Prometheus and Alertmanager."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support import (
    AlertmanagerFactory,
    ContainerFactory,
    DemoService,
    PrometheusFactory,
    PromInstance,
    WebhookRecorder,
    break_service,
    require_service,
    wait_until,
)
from tests.support.servers.docker_events import container_events


def _kill_signals(svc: DemoService, since: float) -> list[str]:
    """The signals dockerd sent the container since ``since`` (its ``kill`` events)."""
    events = container_events(
        svc.container.client,
        since=int(since) - 1,
        filters={"container": svc.container.id, "event": "kill"},
    )
    return [e["Actor"]["Attributes"]["signal"] for e in events]


def _prom_value(prom: PromInstance, expr: str) -> str | None:
    result = prom.query(expr)
    return result[0]["value"][1] if result else None


def test_require_service_fails_in_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """require_service() skips a test locally but fails it under CI=true."""
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="widget unavailable: gone"):
        require_service("widget", "gone")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="widget unavailable: gone"):
        require_service("widget", "gone")


@pytest.mark.docker
@pytest.mark.prometheus
def test_prometheus_scrapes_service_container(
    containers: ContainerFactory, prometheus: PrometheusFactory
) -> None:
    """A service container's metric is scraped by a real Prometheus over 127.0.0.1."""
    svc = containers.run_service()
    prom = prometheus.start([svc.target])

    value = wait_until(
        lambda: _prom_value(prom, 'demo_service_healthy{job="service"}') == "1",
        timeout=20,
        interval=0.25,
        what="demo_service_healthy 1 in Prometheus",
    )
    assert value
    up = prom.query('up{job="service"}')
    assert [sample["metric"]["instance"] for sample in up] == [svc.target]


@pytest.mark.docker
def test_break_then_restart_recovers_unless_sticky(containers: ContainerFactory) -> None:
    """Breaking sets the metric to 0; a restart heals it, unless the break is sticky.

    Also proves a restart is quick: the service stops on SIGTERM, so dockerd never has to
    send SIGKILL after the stop timeout (read from dockerd's own events, not a stopwatch).
    """
    svc: DemoService = containers.run_service()
    assert svc.metric() == 1

    break_service(svc.container)
    assert svc.metric() == 0

    since = time.time()
    svc.container.restart()
    assert _kill_signals(svc, since) == ["15"], "the stop timed out: dockerd sent SIGKILL"
    svc.wait_for_metric(1, timeout=10)

    break_service(svc.container, sticky=True)
    assert svc.metric() == 0
    svc.container.restart()
    # Wait until httpd answers again after the restart, then check it stayed broken.
    wait_until(lambda: svc.metric() is not None, timeout=10, what="service back after restart")
    assert svc.metric() == 0

    svc.container.reload()
    assert svc.container.status == "running"
    assert svc.container.labels["healer-test"] == "1"
    assert svc.name.startswith("healer-test-")


@pytest.mark.prometheus
def test_alertmanager_ready_and_delivers_webhook_with_bearer(
    alertmanager: AlertmanagerFactory, webhook_recorder: WebhookRecorder
) -> None:
    """Alertmanager starts, is ready, and posts an injected alert to the webhook with the token."""
    am = alertmanager.start(webhook_recorder.url + "/api/v1/alerts", bearer_token="s3cret")
    assert am.running
    status = am.alerts()
    assert status == []

    am.post_alerts([{"labels": {"alertname": "SmokeTest", "severity": "P3"}}])
    received = webhook_recorder.wait_for(
        lambda r: r.body is not None and r.body.get("status") == "firing",
        timeout=15,
        what="firing webhook from Alertmanager",
    )
    assert received.path == "/api/v1/alerts"
    assert received.headers["authorization"] == "Bearer s3cret"
    assert received.body["version"] == "4"
    assert received.body["alerts"][0]["labels"]["alertname"] == "SmokeTest"


@pytest.mark.docker
@pytest.mark.prometheus
def test_whole_chain_without_healer(
    tmp_path: Path,
    containers: ContainerFactory,
    prometheus: PrometheusFactory,
    alertmanager: AlertmanagerFactory,
    webhook_recorder: WebhookRecorder,
) -> None:
    """Broken container -> Prometheus rule -> Alertmanager -> webhook, then resolved on restart."""
    rules = tmp_path / "demo.rules.yml"
    rules.write_text(
        "groups:\n"
        "- name: demo\n"
        "  rules:\n"
        "  - alert: DemoServiceUnhealthy\n"
        "    expr: demo_service_healthy == 0\n"
        "    labels: {severity: P1}\n"
    )
    svc = containers.run_service()
    am = alertmanager.start(webhook_recorder.url + "/hook")
    prom = prometheus.start([svc.target], rule_files=[rules], alertmanager_url=am.url)
    prom.wait_for_targets_up(timeout=20)

    broken_at = time.monotonic()
    break_service(svc.container)
    firing = webhook_recorder.wait_for(
        lambda r: r.body is not None and r.body.get("status") == "firing",
        timeout=20,
        what="firing DemoServiceUnhealthy",
    )
    alert = firing.body["alerts"][0]
    assert alert["labels"]["alertname"] == "DemoServiceUnhealthy"
    assert alert["labels"]["instance"] == svc.target
    print(f"alert reached webhook {time.monotonic() - broken_at:.1f}s after the break")

    svc.container.restart()
    webhook_recorder.wait_for(
        lambda r: r.body is not None and r.body.get("status") == "resolved",
        timeout=20,
        what="resolved DemoServiceUnhealthy",
    )
