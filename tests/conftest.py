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
                                  databases in it with odoo_database (from
                                  tests.support.servers.odoo_roles)
    docker_engines      session   TwoEngines: two private dockerds, ``unix`` (a socket)
                                  and ``tls`` (TCP on loopback with client certificates),
                                  each with the busybox image
                                  (tests/support/servers/engines.py)

Parallel runs. scripts/test runs pytest on pytest-xdist workers: HEALER_TEST_WORKERS of
them (default 4 on 2 cores: most tests wait on real services), ``--dist load`` (tests
handed out in collection order, so tests/e2e starts first), ``--durations=25`` (the
slowest tests listed at the end). ``HEALER_TEST_WORKERS=0``, ``-n 0`` or ``-p no:xdist``
run everything in one process, for a debugger or ``-x``. Each worker is its own process
with its own session fixtures (busybox_image, shipped_pg, docker_client), so a test may
land on any worker next to any other test. What keeps them apart:

- Ports: take them from ``tests.support.env.free_port()`` only, never a fixed one nor a
  bind to port 0 that a service re-binds later. Each worker hands out ports from a block
  of its own (20000 + 1500 * worker index, probed by bind), below the kernel's ephemeral
  range, where no outgoing connection or other worker takes one before the service
  binds it.
- Docker: every container gets ``healer-test=1`` and ``healer-test-session=<pid of its
  worker>``; a session removes its own at the end, and at the start only those whose
  process is gone. Container names, compose projects and any label a test or healer
  selects by are unique per test (``uuid``); never act on "all containers". The busybox
  image is built under a file lock (``/tmp/healer-test-busybox.lock``).
- PostgreSQL (the shared 127.0.0.1:5432): a database per test (``scratch_database``), a
  role per test (``scratch_role``); queries over pg_stat_activity and handlers that
  terminate or cancel sessions are narrowed to the test's own database (``datname``)
  or pids. Server-wide faults (max_connections, stop/kill) and fixed role names run on
  a private cluster (tests.support.servers.pgserver / private_services): own data directory
  under /tmp (``mkdtemp``) and own port.
- Files: under ``tmp_path`` (a directory per worker and test) or ``mkdtemp``; never a
  fixed path in /tmp.
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
from tests.support.servers.docker_events import EventRecorder
from tests.support.servers.engines import TwoEngines, two_engines
from tests.support.servers.exporters import (
    BlackboxExporterFactory,
    CadvisorFactory,
    PostgresExporterFactory,
)
from tests.support.servers.odoo_roles import ShippedCluster, shipped_cluster


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
    # dockerd's events, recorded live from here on (tests/support/servers/docker_events.py)
    recorder = EventRecorder(client)
    try:
        remove_labelled_containers(client)  # safety net: leftovers of a killed run
        yield client
    finally:
        try:
            remove_labelled_containers(client)
        finally:
            recorder.close()
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


@pytest.fixture(scope="session")
def docker_engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoEngines]:
    with two_engines(tmp_path_factory.mktemp("engines")) as engines:
        yield engines
