"""examples/odoo/docker-proxy/haproxy.cfg in front of the real Docker engine: healer's
own Docker adapter can list, inspect and restart through it, and every other API call
(create, exec, kill, stop, delete, images, ..., encoded path tricks) gets 403."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from healer.docker_adapter import DockerAdapter
from tests.support.env import require_service
from tests.support.inprocess.stack import REPO
from tests.support.servers.containers import ContainerFactory
from tests.support.servers.processes import ManagedProcess

pytestmark = pytest.mark.docker

CONFIG = REPO / "examples" / "odoo" / "docker-proxy" / "haproxy.cfg"
SOCKET = Path("/var/run/docker.sock")


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[str]:
    """haproxy with the stack's config, bound to 127.0.0.1 instead of :2375; yields its URL."""
    exe = shutil.which("haproxy") or require_service("haproxy", "Debian package haproxy")
    if not SOCKET.exists():
        require_service("docker", f"no {SOCKET}")
    text = CONFIG.read_text()
    assert "    bind :2375\n" in text

    def argv(port: int) -> list[str]:
        cfg = tmp_path / f"haproxy-{port}.cfg"
        cfg.write_text(text.replace("    bind :2375\n", f"    bind 127.0.0.1:{port}\n"))
        return [exe, "-db", "-f", str(cfg)]

    proc = ManagedProcess("docker-proxy", argv, workdir=tmp_path, ready_path="/_ping")
    proc.start()
    try:
        yield proc.url
    finally:
        proc.stop()


@pytest.fixture
async def adapter(proxy: str) -> AsyncIterator[DockerAdapter]:
    docker = DockerAdapter(base_url=proxy.replace("http://", "tcp://"))
    try:
        yield docker
    finally:
        await docker.aclose()


async def test_healer_lists_inspects_and_restarts_through_the_proxy(
    adapter: DockerAdapter, containers: ContainerFactory, proxy: str
) -> None:
    """What docker.restart and the odoo handlers do: ping, list by compose labels and by
    name, inspect, read stats, restart (a new StartedAt)."""
    labels = {
        "com.docker.compose.project": f"odoo-proxy-{uuid.uuid4().hex[:8]}",
        "com.docker.compose.service": "odoo-core",
    }
    box = containers.run(["sleep", "300"], labels=labels)
    assert await adapter.ping()
    by_labels = await adapter.list_containers(labels=labels)
    assert [c["Id"] for c in by_labels] == [box.id]
    assert [c["Id"] for c in await adapter.list_containers(name=box.name)] == [box.id]
    before = await adapter.inspect(box.name)
    stats = await adapter.run(lambda c: c.api.stats(box.name, stream=False))
    assert "memory_stats" in stats
    await adapter.restart(box.name, timeout=1)
    after = await adapter.inspect(box.name)
    assert after["State"]["Status"] == "running"
    assert after["State"]["StartedAt"] != before["State"]["StartedAt"]


FORBIDDEN = [
    ("POST", "/containers/create"),
    ("POST", "/v1.41/containers/create?name=evil"),
    ("POST", "/containers/{id}/exec"),
    ("POST", "/containers/{id}/kill"),
    ("POST", "/containers/{id}/stop"),
    ("POST", "/containers/{id}/start"),
    ("POST", "/containers/{id}/update"),
    ("POST", "/containers/{id}/rename?name=x"),
    ("DELETE", "/containers/{id}?force=1"),
    ("PUT", "/containers/{id}/archive?path=/"),
    ("GET", "/containers/{id}/archive?path=/"),
    ("GET", "/containers/{id}/logs?stdout=1"),
    ("POST", "/containers/{id}/attach?stream=1"),
    ("GET", "/containers/{id}/export"),
    ("POST", "/containers/prune"),
    ("GET", "/images/json"),
    ("POST", "/images/create?fromImage=busybox"),
    ("GET", "/volumes"),
    ("GET", "/networks"),
    ("GET", "/info"),
    ("GET", "/events"),
    ("POST", "/build"),
    ("GET", "/secrets"),
    ("POST", "/exec/abc/start"),
    # A container reference cannot smuggle a path: matched URL-decoded, no "/" in it.
    ("POST", "/containers/x%2F..%2Fcreate/restart"),
    ("POST", "/containers/{id}%2Fkill/restart"),
    ("GET", "/containers/json/../../images/json"),
    ("GET", "/v1.41/containers/{id}/json/../../create"),
    # A restart by GET, an inspect by POST.
    ("GET", "/containers/{id}/restart"),
    ("POST", "/containers/{id}/json"),
]


async def test_everything_else_is_forbidden(proxy: str, containers: ContainerFactory) -> None:
    """Each call outside list/inspect/stats/restart answers 403 from the proxy, and the
    container is untouched (one container for all the calls: none of them may reach it)."""
    box = containers.run(["sleep", "300"])
    box.reload()
    started = box.attrs["State"]["StartedAt"]
    answers = {}
    async with httpx.AsyncClient(base_url=proxy, timeout=10) as client:
        for method, path in FORBIDDEN:
            response = await client.request(method, path.replace("{id}", box.id))
            answers[f"{method} {path}"] = response.status_code
    assert answers == {call: 403 for call in answers}
    box.reload()
    assert box.status == "running"
    assert box.attrs["State"]["StartedAt"] == started
