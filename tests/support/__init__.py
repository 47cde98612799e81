"""Helpers for tests that use real components (Docker, Prometheus, Alertmanager, healer).

Fixtures live in tests/conftest.py and only wire these helpers together.
"""

from .containers import (
    BUSYBOX_IMAGE_TAG,
    TEST_LABEL,
    ContainerFactory,
    build_busybox_image,
    connect_docker,
    remove_labelled_containers,
)
from .env import free_port, in_ci, require_service, wait_until
from .postgres import (
    Sessions,
    scratch_database,
    scratch_role,
    server_dsn,
    wait_blocked,
    with_user,
)
from .processes import (
    AlertmanagerFactory,
    AMInstance,
    HealerFactory,
    HealerProc,
    ManagedProcess,
    ProcessStartError,
    PrometheusFactory,
    PromInstance,
)
from .service import (
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
from .webhook import Received, WebhookRecorder

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
