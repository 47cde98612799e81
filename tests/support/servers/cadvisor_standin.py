"""A cAdvisor stand-in: container memory from Docker's stats API, under cAdvisor's names.

cAdvisor itself cannot run here (no registry to pull it from), and the alert
rules for Odoo's memory leak are written against cAdvisor's series. This
process exposes the two the rules use, with cAdvisor's label names::

    container_memory_working_set_bytes{id="/docker/<id>", name="<container name>",
        image="<image>", container_label_com_docker_compose_service="odoo", ...} 1.2e+08
    container_spec_memory_limit_bytes{...same labels...} 2.68e+08

Like cAdvisor, every Docker label becomes ``container_label_<label, non
[a-zA-Z0-9_] replaced by _>``. The working set is cAdvisor's: usage minus
inactive file pages (``total_inactive_file`` on cgroup v1, ``inactive_file``
on v2). The limit is the container's ``--memory``; without one, the limit the
stats API reports (the host's memory), as cAdvisor reports the cgroup's.

Run as a subprocess (tests/support/servers/exporters.py CadvisorFactory does)::

    python cadvisor_standin.py --listen 127.0.0.1:PORT --label com.docker.compose.project=x

Only containers carrying every ``--label`` are read. The process exits by
itself after ``--max-lifetime`` seconds, so a killed test run cannot leave it
behind for long.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
import docker.errors
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")


def label_name(docker_label: str) -> str:
    """``com.docker.compose.service`` -> ``container_label_com_docker_compose_service``."""
    return "container_label_" + _LABEL_CHARS.sub("_", docker_label)


def working_set(memory_stats: dict[str, Any]) -> float | None:
    """cAdvisor's working set: usage minus inactive file pages (never below 0)."""
    usage = memory_stats.get("usage")
    if usage is None:
        return None
    stats = memory_stats.get("stats") or {}
    inactive = stats.get("total_inactive_file", stats.get("inactive_file", 0))
    return float(max(usage - inactive, 0))


class DockerMemoryCollector(Collector):
    def __init__(self, client: docker.DockerClient, labels: Iterable[str]) -> None:
        self._client = client
        self._filters = {"label": list(labels)}
        self._pool = ThreadPoolExecutor(max_workers=8)

    def _read(self, container: Any) -> tuple[dict[str, str], float | None, float] | None:
        try:
            stats = container.stats(stream=False, one_shot=True)
        except docker.errors.NotFound:
            return None  # removed between list and stats
        memory = stats.get("memory_stats") or {}
        attrs = container.attrs
        limit = float((attrs.get("HostConfig") or {}).get("Memory") or memory.get("limit") or 0)
        labels = {
            "id": f"/docker/{container.id}",
            "name": container.name or "",
            "image": (attrs.get("Config") or {}).get("Image", ""),
        }
        for key, value in ((attrs.get("Config") or {}).get("Labels") or {}).items():
            labels[label_name(key)] = value
        return labels, working_set(memory), limit

    def collect(self) -> Iterator[Metric]:
        containers = self._client.containers.list(filters=dict(self._filters))
        rows = [r for r in self._pool.map(self._read, containers) if r is not None]
        names = sorted({name for labels, _, _ in rows for name in labels})
        ws = GaugeMetricFamily(
            "container_memory_working_set_bytes", "Current working set in bytes.", labels=names
        )
        limit = GaugeMetricFamily(
            "container_spec_memory_limit_bytes", "Memory limit for the container.", labels=names
        )
        for labels, value, lim in rows:
            values = [labels.get(name, "") for name in names]
            if value is not None:
                ws.add_metric(values, value)
            limit.add_metric(values, lim)
        yield ws
        yield limit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT to serve /metrics on")
    parser.add_argument(
        "--label",
        action="append",
        default=[],
        help="only containers with this Docker label (key=value); repeatable",
    )
    parser.add_argument(
        "--max-lifetime", type=float, default=3600.0, help="exit after this many seconds"
    )
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")

    client = docker.from_env()
    registry = CollectorRegistry()
    registry.register(DockerMemoryCollector(client, args.label))
    server, thread = start_http_server(int(port), addr=host, registry=registry)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"cadvisor stand-in on http://{args.listen}/metrics, labels {args.label}", flush=True)
    stop.wait(args.max_lifetime)
    server.shutdown()
    thread.join(5)
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
