"""Helpers for tests that use real components (Docker, Prometheus, Alertmanager, healer),
grouped by what they are:

    servers/     real processes and servers a test starts and stops (Prometheus,
                 Alertmanager, exporters, `healer serve`, containers, private PostgreSQL
                 clusters, stand-ins, the webhook recorder)
    scenarios/   loops and scenarios built from them (the closed loop, the Odoo runbook,
                 faults, floods, load, replicas)
    inprocess/   in-process helpers (the app behind an ASGI client, a HealContext, the
                 payload builder, the Noop handler, config and data helpers)
    env.py       free ports per xdist worker, require_service, wait_until

Fixtures live in tests/conftest.py and only wire these helpers together; bench/ and
scripts/demo.py import them too.
"""

from tests.support.env import free_port, in_ci, require_service, wait_until
from tests.support.servers.containers import (
    BUSYBOX_IMAGE_TAG,
    TEST_LABEL,
    ContainerFactory,
    build_busybox_image,
    connect_docker,
    remove_labelled_containers,
)
from tests.support.servers.postgres import (
    Sessions,
    scratch_database,
    scratch_role,
    server_dsn,
    wait_blocked,
    with_user,
)
from tests.support.servers.processes import (
    AlertmanagerFactory,
    AMInstance,
    HealerFactory,
    HealerProc,
    ManagedProcess,
    ProcessStartError,
    PrometheusFactory,
    PromInstance,
)
from tests.support.servers.service import (
    METRIC,
    DemoService,
    break_service,
    mute_service,
    read_metric,
    repair_service,
    service_command,
    start_service,
    wait_for_metric,
)
from tests.support.servers.webhook import Received, WebhookRecorder

__all__ = [
    "BUSYBOX_IMAGE_TAG",
    "METRIC",
    "TEST_LABEL",
    "AMInstance",
    "AlertmanagerFactory",
    "ContainerFactory",
    "DemoService",
    "HealerFactory",
    "HealerProc",
    "ManagedProcess",
    "ProcessStartError",
    "PromInstance",
    "PrometheusFactory",
    "Received",
    "Sessions",
    "WebhookRecorder",
    "break_service",
    "build_busybox_image",
    "connect_docker",
    "free_port",
    "in_ci",
    "mute_service",
    "read_metric",
    "remove_labelled_containers",
    "repair_service",
    "require_service",
    "scratch_database",
    "scratch_role",
    "server_dsn",
    "service_command",
    "start_service",
    "wait_blocked",
    "wait_for_metric",
    "wait_until",
    "with_user",
]
