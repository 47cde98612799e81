"""The demo "service" container: a busybox httpd serving ``demo_service_healthy``.

See ``service.sh`` for the behaviour. Typical use::

    svc = start_service(containers)          # or containers.run_service()
    prom = prometheus.start([svc.target])
    break_service(svc.container)             # metric 0 until the next restart
    break_service(svc.container, sticky=True)  # metric 0 even after restarts
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from docker.models.containers import Container

from tests.support.env import free_port, wait_until

if TYPE_CHECKING:
    from tests.support.servers.containers import ContainerFactory

SERVICE_SCRIPT = Path(__file__).with_name("service.sh")
METRIC = "demo_service_healthy"
_METRIC_LINE = re.compile(rf"^{METRIC}(?:\{{[^}}]*\}})?\s+(\S+)\s*$", re.MULTILINE)


def service_command(port: int) -> list[str]:
    """``["sh", "-c", <service.sh with PORT set>]``: no volume mount needed."""
    return ["sh", "-c", f"PORT={int(port)}\n{SERVICE_SCRIPT.read_text()}"]


def _exec(container: Container, script: str) -> None:
    result = container.exec_run(["sh", "-c", script])
    if result.exit_code != 0:
        output = result.output.decode(errors="replace") if isinstance(result.output, bytes) else ""
        raise AssertionError(f"exec in {container.name} failed ({result.exit_code}): {output}")


def break_service(container: Container, sticky: bool = False) -> None:
    """Make the service report ``demo_service_healthy 0``.

    Non-sticky: a restart heals it. Sticky: it stays broken across restarts.
    """
    script = "sed -i 's/ 1$/ 0/' /www/metrics.txt"
    if sticky:
        script += " && touch /www/sticky-broken"
    _exec(container, script)


def mute_service(container: Container) -> None:
    """Report 0 now, and after the next restart serve nothing at all (scrapes fail)."""
    _exec(container, "sed -i 's/ 1$/ 0/' /www/metrics.txt && touch /www/sticky-silent")


def repair_service(container: Container) -> None:
    """Undo :func:`break_service` (sticky or not) without restarting."""
    _exec(container, "rm -f /www/sticky-broken && sed -i 's/ 0$/ 1/' /www/metrics.txt")


def read_metric(port: int, *, timeout: float = 2.0) -> float | None:
    """The service's current ``demo_service_healthy`` value, or None if it does not answer."""
    try:
        with httpx.Client(timeout=timeout) as client:
            response = client.get(f"http://127.0.0.1:{port}/metrics")
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    match = _METRIC_LINE.search(response.text)
    return float(match.group(1)) if match else None


def wait_for_metric(port: int, value: float, *, timeout: float = 10.0) -> float:
    """Poll the service directly until its metric equals ``value`` (bounded)."""
    wait_until(
        lambda: read_metric(port) == value,
        timeout=timeout,
        interval=0.1,
        what=f"{METRIC} == {value} on 127.0.0.1:{port}",
    )
    return value


@dataclass
class DemoService:
    container: Container
    port: int

    @property
    def target(self) -> str:
        """Prometheus scrape target, ``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def name(self) -> str:
        return self.container.name or ""

    def metric(self) -> float | None:
        return read_metric(self.port)

    def wait_for_metric(self, value: float, *, timeout: float = 10.0) -> float:
        return wait_for_metric(self.port, value, timeout=timeout)

    def break_(self, sticky: bool = False) -> None:
        break_service(self.container, sticky=sticky)

    def mute(self) -> None:
        mute_service(self.container)

    def repair(self) -> None:
        repair_service(self.container)


def http_healthcheck(port: int) -> dict[str, object]:
    """A Docker healthcheck fetching the service's /metrics every 250 ms (durations in ns)."""
    return {
        "test": ["CMD", "wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{port}/metrics"],
        "interval": 250_000_000,
        "timeout": 1_000_000_000,
        "retries": 3,
        "start_period": 0,
    }


def start_service(
    containers: ContainerFactory,
    *,
    port: int | None = None,
    name: str | None = None,
    labels: Mapping[str, str] | None = None,
    ready_timeout: float = 10.0,
    mem_limit: str | None = None,
    healthcheck: bool = False,
) -> DemoService:
    """Run a service container on ``port`` (free one by default) and wait until it serves 1."""
    port = port or free_port()
    container = containers.run(
        service_command(port),
        name=name,
        labels=labels,
        mem_limit=mem_limit,
        healthcheck=http_healthcheck(port) if healthcheck else None,
    )
    service = DemoService(container=container, port=port)
    try:
        service.wait_for_metric(1, timeout=ready_timeout)
    except TimeoutError as exc:
        container.reload()
        logs = container.logs(tail=30).decode(errors="replace")
        raise TimeoutError(f"{exc}\ncontainer status={container.status}, logs:\n{logs}") from exc
    return service
