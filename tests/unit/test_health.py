"""/health, /health/ready and /metrics (healer/http/health.py), driven in-process with
the no-op test handler doing the "healing".

Prometheus is an unused loopback port, so readiness reports it down; nothing here needs
dockerd or Prometheus.
"""

from __future__ import annotations

from tests.support.inprocess.inproc import InProcessHealer
from tests.support.inprocess.inproc import web_alert as alert


async def test_health_answers_ok(healer: InProcessHealer) -> None:
    """GET /health is liveness: always {"status": "ok"}."""
    resp = await healer.client.get("/health")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok"}


async def test_ready_names_the_dependency_that_is_down(healer: InProcessHealer) -> None:
    """/health/ready is 503 while Prometheus is unreachable and says which check failed;
    docker is not probed since no rule's handler needs it."""
    resp = await healer.client.get("/health/ready")
    assert resp.status_code == 503
    checks = resp.json()["checks"]
    assert checks["journal"] == {"status": "up"}
    assert checks["prometheus"]["status"] == "down"
    assert "docker" not in checks


async def test_metrics_expose_the_fixed_names(healer: InProcessHealer) -> None:
    """/metrics serves every metric of the spec, from the app's own registry."""
    await healer.fire(alert())
    await healer.idle()
    resp = await healer.client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    for name in (
        "healer_alerts_received_total",
        "healer_heals_total",
        "healer_heal_duration_seconds",
        "healer_time_to_recovery_seconds",
        "healer_heals_in_progress",
        "healer_circuit_open",
        "healer_webhook_requests_total",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in resp.text, name
    assert (
        'healer_heals_total{handler="test.noop",outcome="unverified",rule="poke-web"} 1.0'
        in resp.text
    )


async def test_configured_rules_series_start_at_zero(healer: InProcessHealer) -> None:
    """Before any alert, every configured rule already exports its heal counters (each
    outcome), its time-to-recovery histogram and its circuit gauge at 0, and the alert
    counters both statuses: rate() and increase() then see the first heal too."""
    text = (await healer.client.get("/metrics")).text
    for outcome in ("recovered", "not_recovered", "failed", "suppressed", "expired"):
        line = f'healer_heals_total{{handler="test.noop",outcome="{outcome}",rule="poke-web"}} 0.0'
        assert line in text, outcome
    assert 'healer_time_to_recovery_seconds_count{rule="poke-web"} 0.0' in text
    assert 'healer_circuit_open{rule="poke-web"} 0.0' in text
    for status in ("firing", "resolved"):
        assert f'healer_alerts_received_total{{status="{status}"}} 0.0' in text
    assert 'rule="(manual)"' not in text
