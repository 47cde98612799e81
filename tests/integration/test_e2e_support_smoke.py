"""Smoke tests for the Odoo end-to-end support: real postgres_exporter with custom
queries, the cAdvisor stand-in over real containers, the real blackbox exporter
probing the Odoo stand-in, and the stand-ins' faults that only a restart clears."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import (
    ContainerFactory,
    PrometheusFactory,
    PromInstance,
    scratch_database,
    wait_until,
)
from tests.support.servers.exporters import (
    BlackboxExporterFactory,
    CadvisorFactory,
    ExporterProc,
    PostgresExporterFactory,
)
from tests.support.servers.odoo_standins import start_leaky_workers, start_odoo_web, started_at


def scrape(exporter: ExporterProc, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of metric ``name`` the exporter serves right now."""
    with httpx.Client(timeout=10.0) as client:
        text = client.get(f"{exporter.url}/metrics").text
    return [
        (dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


def _value(prom: PromInstance, expr: str) -> float | None:
    result = prom.query(expr)
    return float(result[0]["value"][1]) if result else None


@pytest.mark.postgres
async def test_postgres_exporter_serves_custom_queries_and_stops(
    postgres_exporter: PostgresExporterFactory, tmp_path: Path
) -> None:
    """The Debian postgres_exporter, pointed at a scratch database, runs a custom query
    file (--extend.query-path) there and serves its columns as labelled gauges; stopping
    the factory ends the process."""
    queries = tmp_path / "queries.yml"
    queries.write_text(
        "healer_smoke:\n"
        '  query: "SELECT current_database() AS datname, 42 AS answer"\n'
        "  metrics:\n"
        "    - datname: {usage: LABEL, description: database}\n"
        "    - answer: {usage: GAUGE, description: always 42}\n"
    )
    async with scratch_database() as dsn:
        exporter = postgres_exporter.start(dsn, queries=queries)
        datname = dsn.rsplit("/", 1)[1]
        samples = wait_until(
            lambda: scrape(exporter, "healer_smoke_answer"),
            timeout=10,
            interval=0.5,
            what="the custom query's metric",
        )
        # The exporter adds the server it read from as a label of its own.
        assert samples == [({"datname": datname, "server": "127.0.0.1:5432"}, 42.0)]
        assert [v for _, v in scrape(exporter, "pg_up")] == [1.0]
        postgres_exporter.stop_all()
        assert not exporter.running


@pytest.mark.docker
def test_cadvisor_standin_sees_a_leak_that_a_restart_frees(
    containers: ContainerFactory, cadvisor: CadvisorFactory
) -> None:
    """The stand-in serves cAdvisor's working set and limit, with cAdvisor's label names, for
    labelled containers only; a leaking worker's working set grows past what it leaked, and
    a restart brings it back down."""
    project = f"healer-smoke-{uuid.uuid4().hex[:6]}"
    worker, bystander = start_leaky_workers(
        containers, project=project, services=["odoo", "odoo"], mem_limit_mib=64, leak_mib=24
    )
    containers.run(["sleep", "60"])  # not in the project: must not be reported
    exporter = cadvisor.start({"com.docker.compose.project": project})

    def working_sets() -> dict[str, float]:
        return {
            labels["name"]: value / 2**20
            for labels, value in scrape(exporter, "container_memory_working_set_bytes")
        }

    sets = working_sets()
    assert set(sets) == {worker.name, bystander.name}
    limits = scrape(exporter, "container_spec_memory_limit_bytes")
    assert {labels["name"]: value for labels, value in limits} == {
        worker.name: 64 * 2**20,
        bystander.name: 64 * 2**20,
    }
    labels = limits[0][0]
    assert labels["container_label_com_docker_compose_project"] == project
    assert labels["container_label_com_docker_compose_service"] == "odoo"
    assert labels["id"].startswith("/docker/")

    worker.start_leak()
    wait_until(
        lambda: working_sets()[worker.name] >= 24,
        timeout=30,
        interval=0.5,
        what="the leak in the working set",
    )
    assert worker.leaked_mib() == 24
    assert working_sets()[bystander.name] < 8

    before = started_at(worker.container)
    worker.container.restart(timeout=10)
    assert started_at(worker.container) != before
    wait_until(
        lambda: working_sets()[worker.name] < 8,
        timeout=15,
        interval=0.5,
        what="memory freed by the restart",
    )
    assert worker.leaked_mib() == 0


@pytest.mark.docker
@pytest.mark.prometheus
def test_blackbox_probe_sees_longpoll_stall_until_restart(
    containers: ContainerFactory,
    blackbox_exporter: BlackboxExporterFactory,
    prometheus: PrometheusFactory,
) -> None:
    """Prometheus probes the Odoo stand-in's longpoll endpoint through the real blackbox
    exporter (instance = the URL, target labels kept); a stall makes probe_success 0 and
    only a restart makes it 1 again."""
    web = start_odoo_web(containers, project="healer-smoke", service="odoo-longpoll")
    blackbox = blackbox_exporter.start()
    prom = prometheus.start(
        [],
        scrape_configs=[
            blackbox.probe_config(
                "odoo-longpoll", [web.longpoll_url], labels={"compose_service": "odoo-longpoll"}
            )
        ],
    )
    success = (
        'probe_success{job="odoo-longpoll", compose_service="odoo-longpoll", '
        f'instance="{web.longpoll_url}"}}'
    )
    wait_until(
        lambda: _value(prom, success) == 1,
        timeout=20,
        interval=0.25,
        what="a successful probe",
        ignore=(httpx.HTTPError,),
    )

    web.stall()
    assert web.poll(timeout=1.0) is None
    wait_until(
        lambda: _value(prom, success) == 0,
        timeout=10,
        interval=0.25,
        what="the stall seen by the probe",
    )
    duration = _value(prom, 'probe_duration_seconds{job="odoo-longpoll"}')
    assert duration is not None and duration >= 0.3

    web.container.restart(timeout=10)
    wait_until(lambda: web.poll() is not None, timeout=10, what="longpoll back after restart")
    wait_until(
        lambda: _value(prom, success) == 1,
        timeout=10,
        interval=0.25,
        what="the probe succeeding after the restart",
    )
