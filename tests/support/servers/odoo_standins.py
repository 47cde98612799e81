"""Busybox stand-ins for Odoo containers, labelled as Docker Compose labels them.

    web = start_odoo_web(containers, project="shop", service="odoo-longpoll")
    web.stall()                     # /cgi-bin/longpoll hangs until the next restart
    workers = start_leaky_workers(containers, project="shop", services=["odoo", "odoo"],
                                  mem_limit_mib=64, leak_mib=40)
    workers[0].start_leak()         # grows 1 MiB per step, up to leak_mib, until restarted

Both behave like the real thing where the runbooks look: a restart (and only a
restart) clears the fault, and both stop on SIGTERM at once (see the scripts,
``odoo_web.sh`` and ``leaky_worker.sh``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from docker.models.containers import Container

from tests.support.env import free_port, wait_until

if TYPE_CHECKING:
    from tests.support.servers.containers import ContainerFactory

ODOO_WEB_SCRIPT = Path(__file__).with_name("odoo_web.sh")
LEAKY_WORKER_SCRIPT = Path(__file__).with_name("leaky_worker.sh")
COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
LONGPOLL_PATH = "/cgi-bin/longpoll"


def compose_labels(project: str, service: str, number: int = 1) -> dict[str, str]:
    """The labels ``docker compose`` puts on a service's containers."""
    return {
        COMPOSE_PROJECT: project,
        COMPOSE_SERVICE: service,
        "com.docker.compose.container-number": str(number),
    }


def _exec(container: Container, script: str) -> str:
    result = container.exec_run(["sh", "-c", script])
    output = result.output.decode(errors="replace") if isinstance(result.output, bytes) else ""
    if result.exit_code != 0:
        raise AssertionError(f"exec in {container.name} failed ({result.exit_code}): {output}")
    return output


def started_at(container: Container) -> str:
    container.reload()
    return str(container.attrs["State"]["StartedAt"])


@dataclass
class OdooWeb:
    """An Odoo HTTP/longpoll stand-in on 127.0.0.1:<port>."""

    container: Container
    port: int

    @property
    def name(self) -> str:
        return self.container.name or ""

    @property
    def longpoll_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{LONGPOLL_PATH}"

    def stall(self) -> None:
        """From now until the next restart, every longpoll request hangs."""
        _exec(self.container, "touch /www/stalled")

    def poll(self, timeout: float = 2.0) -> float | None:
        """Seconds one longpoll request took, or None if it did not answer 200 in time."""
        try:
            with httpx.Client(timeout=timeout) as client:
                response = client.get(self.longpoll_url)
        except httpx.HTTPError:
            return None
        return response.elapsed.total_seconds() if response.status_code == 200 else None


def odoo_web_command(port: int) -> list[str]:
    return ["sh", "-c", f"PORT={int(port)}\n{ODOO_WEB_SCRIPT.read_text()}"]


def start_odoo_web(
    containers: ContainerFactory,
    *,
    project: str,
    service: str,
    port: int | None = None,
    name: str | None = None,
    ready_timeout: float = 10.0,
) -> OdooWeb:
    """Run the stand-in and wait until its longpoll endpoint answers."""
    port = port or free_port()
    container = containers.run(
        odoo_web_command(port), name=name, labels=compose_labels(project, service)
    )
    web = OdooWeb(container=container, port=port)
    wait_until(
        lambda: web.poll() is not None,
        timeout=ready_timeout,
        interval=0.1,
        what=f"longpoll answering on {web.longpoll_url}",
    )
    return web


@dataclass
class LeakyWorker:
    """An Odoo worker stand-in with a memory limit that leaks on demand."""

    container: Container
    mem_limit_mib: int
    leak_mib: int

    @property
    def name(self) -> str:
        return self.container.name or ""

    def start_leak(self) -> None:
        _exec(self.container, "touch /tmp/leaking")

    def leaked_mib(self) -> int:
        """How much it has leaked since its last start (0 right after a restart)."""
        out = _exec(self.container, "cat /tmp/leaked_mib 2>/dev/null || echo 0").strip()
        return int(out or 0)

    def working_set_mib(self) -> float:
        """cAdvisor's working set, as the Docker stats API gives it (see cadvisor_standin)."""
        from tests.support.servers.cadvisor_standin import working_set

        stats: dict[str, Any] = self.container.stats(  # type: ignore[assignment]
            stream=False, one_shot=True
        )
        return (working_set(stats.get("memory_stats") or {}) or 0.0) / 2**20


def leaky_worker_command(leak_mib: int, step_s: float) -> list[str]:
    return [
        "sh",
        "-c",
        f"LEAK_MIB={int(leak_mib)}\nLEAK_STEP_S={float(step_s)}\n{LEAKY_WORKER_SCRIPT.read_text()}",
    ]


def start_leaky_workers(
    containers: ContainerFactory,
    *,
    project: str,
    services: Sequence[str],
    mem_limit_mib: int = 64,
    leak_mib: int = 40,
    step_s: float = 0.1,
) -> list[LeakyWorker]:
    """One worker per entry of ``services`` (repeat a service for replicas), each limited
    to ``mem_limit_mib``, named and labelled as compose names them.

    ``leak_mib`` must stay below the limit (minus busybox's ~1 MiB): the leak is
    meant to be seen and healed, not to end in the OOM killer.
    """
    if leak_mib >= mem_limit_mib - 4:
        raise ValueError(f"leak_mib={leak_mib} too close to the {mem_limit_mib} MiB limit")
    workers = []
    numbers: dict[str, int] = {}
    for service in services:
        number = numbers[service] = numbers.get(service, 0) + 1
        container = containers.run(
            leaky_worker_command(leak_mib, step_s),
            name=f"{project}-{service}-{number}",
            labels=compose_labels(project, service, number),
            mem_limit=f"{mem_limit_mib}m",
        )
        workers.append(
            LeakyWorker(container=container, mem_limit_mib=mem_limit_mib, leak_mib=leak_mib)
        )
    return workers
