"""Shared fixtures for real components (SPEC: "Real components in tests").

The logic lives in tests/support; this file only wires it into pytest.
A missing binary or daemon skips the test locally and fails it under CI=true.

    docker_client       session   docker.DockerClient (pinged); leftovers labelled
                                  healer-test=1 are removed at session start and end
    busybox_image       session   "healer-test-busybox:latest" (FROM scratch + busybox)
    containers          function  ContainerFactory: .run(command, *, name, labels,
                                  mem_limit, environment), .run_service(*, port, name, labels)
    prometheus          function  PrometheusFactory: .start(scrape_targets, rule_files=None,
                                  alertmanager_url=None, interval="1s") -> PromInstance
    alertmanager        function  AlertmanagerFactory: .start(webhook_url, bearer_token=None,
                                  extra_args=()) -> AMInstance
    healer_process      function  HealerFactory: .start(config_path, *, env=None) -> HealerProc
    webhook_recorder    function  WebhookRecorder: a real HTTP server recording POSTs
    postgres_exporter   function  PostgresExporterFactory: .start(dsn, *, queries=None)
    blackbox_exporter   function  BlackboxExporterFactory: .start(modules=None)
    cadvisor            function  CadvisorFactory: .start(labels) (the cAdvisor stand-in)
    shipped_pg          session   ShippedCluster: a private PostgreSQL after the shipped
                                  examples/odoo/postgres/initdb.d/10-roles.sh; make Odoo
                                  databases in it with tests.support.odoo_roles.odoo_database
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, TypeVar

import docker
import pytest

from tests.support import (
    AlertmanagerFactory,
    ContainerFactory,
    HealerFactory,
    PrometheusFactory,
    WebhookRecorder,
    build_busybox_image,
    connect_docker,
    remove_labelled_containers,
)
from tests.support.exporters import (
    BlackboxExporterFactory,
    CadvisorFactory,
    PostgresExporterFactory,
)
from tests.support.odoo_roles import ShippedCluster, shipped_cluster


class _Stoppable(Protocol):
    def stop_all(self) -> None: ...


F = TypeVar("F", bound=_Stoppable)


def _stopped_after(factory: F) -> Iterator[F]:
    """Yield a process factory; stop everything it started, even if the test failed."""
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    client = connect_docker()
    try:
        remove_labelled_containers(client)  # safety net: leftovers of a killed run
        yield client
    finally:
        try:
            remove_labelled_containers(client)
        finally:
            client.close()


@pytest.fixture(scope="session")
def busybox_image(
    docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> str:
    return build_busybox_image(docker_client, tmp_path_factory.mktemp("busybox-image"))


@pytest.fixture
def containers(
    docker_client: docker.DockerClient, busybox_image: str
) -> Iterator[ContainerFactory]:
    factory = ContainerFactory(docker_client, busybox_image)
    yield factory
    errors = factory.cleanup()
    if errors:
        pytest.fail("could not remove test containers: " + "; ".join(errors), pytrace=False)


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[PrometheusFactory]:
    yield from _stopped_after(PrometheusFactory(tmp_path))


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[AlertmanagerFactory]:
    yield from _stopped_after(AlertmanagerFactory(tmp_path))


@pytest.fixture
def healer_process(tmp_path: Path) -> Iterator[HealerFactory]:
    yield from _stopped_after(HealerFactory(tmp_path))


@pytest.fixture
def webhook_recorder() -> Iterator[WebhookRecorder]:
    recorder = WebhookRecorder()
    yield recorder
    recorder.close()


@pytest.fixture
def postgres_exporter(tmp_path: Path) -> Iterator[PostgresExporterFactory]:
    yield from _stopped_after(PostgresExporterFactory(tmp_path))


@pytest.fixture
def blackbox_exporter(tmp_path: Path) -> Iterator[BlackboxExporterFactory]:
    yield from _stopped_after(BlackboxExporterFactory(tmp_path))


@pytest.fixture
def cadvisor(tmp_path: Path) -> Iterator[CadvisorFactory]:
    yield from _stopped_after(CadvisorFactory(tmp_path))


@pytest.fixture(scope="session")
def shipped_pg() -> Iterator[ShippedCluster]:
    """The shipped roles on a cluster of their own (roles are cluster-wide); stopped and
    removed at the end of the session, even after a failure."""
    with shipped_cluster() as cluster:
        yield cluster
