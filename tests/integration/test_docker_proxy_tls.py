"""examples/hosts/docker-proxy-tls.cfg (HAProxy: TLS with client certificates in front of
a host's Docker socket) on the real engine, with certificates from the shipped
make-certs.sh: healer's adapter, with its client certificate, lists, inspects and
restarts through it; other calls answer 403; a client without a certificate, or with one
another CA signed, never reaches the engine. Its allowed calls are the Odoo stack's."""

from __future__ import annotations

import re
import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from healer.docker_adapter import DockerAdapter, EngineUnavailable
from healer.docker_config import EngineConfig
from tests.support.env import free_port, require_service
from tests.support.inprocess.stack import REPO
from tests.support.servers.containers import ContainerFactory
from tests.support.servers.engines import make_certs
from tests.support.servers.processes import ManagedProcess

pytestmark = pytest.mark.docker

CONFIG = REPO / "examples" / "hosts" / "docker-proxy-tls.cfg"
ODOO_PROXY = REPO / "examples" / "odoo" / "docker-proxy" / "haproxy.cfg"
BIND = (
    "    bind :2376 ssl crt /etc/haproxy/docker-proxy.pem ca-file /etc/haproxy/healer-ca.pem"
    " verify required\n"
)


def _rules(path: Path) -> list[str]:
    return [
        line.strip()
        for line in path.read_text().splitlines()
        if re.match(r"\s+(acl|http-request) ", line)
    ]


def test_the_tls_proxy_allows_what_the_odoo_proxy_allows() -> None:
    """The two shipped proxies let through the same calls (their ACL and http-request
    lines are equal), so a fix to one list is made to both."""
    assert _rules(CONFIG) == _rules(ODOO_PROXY)
    assert len(_rules(CONFIG)) >= 10


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The shipped config bound to 127.0.0.1 (files from make-certs.sh), in front of
    the real engine's socket; yields (tcp:// URL, certificate directory). Readiness is
    asked of an extra plain-HTTP monitor frontend (test only)."""
    exe = shutil.which("haproxy") or require_service("haproxy", "Debian package haproxy")
    if not Path("/var/run/docker.sock").exists():
        require_service("docker", "no /var/run/docker.sock")
    certs = make_certs(tmp_path / "certs")
    pem = tmp_path / "docker-proxy.pem"
    server = certs / "localhost"
    pem.write_bytes(
        (server / "server-cert.pem").read_bytes() + (server / "server-key.pem").read_bytes()
    )
    text = CONFIG.read_text()
    assert BIND in text
    tls_port = free_port()

    def argv(port: int) -> list[str]:
        ca = certs / "ca.pem"
        bind = f"    bind 127.0.0.1:{tls_port} ssl crt {pem} ca-file {ca} verify required\n"
        monitor = f"\nfrontend monitor\n    bind 127.0.0.1:{port}\n    monitor-uri /_ping\n"
        cfg = tmp_path / f"haproxy-{port}.cfg"
        cfg.write_text(text.replace(BIND, bind) + monitor)
        return [exe, "-db", "-f", str(cfg)]

    proc = ManagedProcess("docker-proxy-tls", argv, workdir=tmp_path, ready_path="/_ping")
    proc.start()
    try:
        yield f"tcp://127.0.0.1:{tls_port}", certs
    finally:
        proc.stop()


def _engine(url: str, certs: Path, client: Path | None = None) -> EngineConfig:
    client = client or certs
    return EngineConfig(
        base_url=url,
        ca_file=certs / "ca.pem",
        cert_file=client / "healer" / "cert.pem",
        key_file=client / "healer" / "key.pem",
        timeout=10,
    )


async def test_healer_restarts_through_the_tls_proxy(
    proxy: tuple[str, Path], containers: ContainerFactory
) -> None:
    """With its client certificate, healer's adapter pings, lists, inspects and restarts
    (a new StartedAt) through the proxy."""
    url, certs = proxy
    box = containers.run(["sleep", "300"])
    adapter = DockerAdapter.for_engine("db1", _engine(url, certs))
    try:
        assert await adapter.ping()
        assert [c["Id"] for c in await adapter.list_containers(name=box.name)] == [box.id]
        before = await adapter.inspect(box.name)
        await adapter.restart(box.name, timeout=1)
        after = await adapter.inspect(box.name)
    finally:
        await adapter.aclose()
    assert after["State"]["Status"] == "running"
    assert after["State"]["StartedAt"] != before["State"]["StartedAt"]


async def test_other_calls_and_other_clients_are_kept_out(
    tmp_path: Path, proxy: tuple[str, Path], containers: ContainerFactory
) -> None:
    """With healer's certificate, a create or an image list answers 403; without a client
    certificate the TLS handshake fails; with one from another CA, healer's adapter fails
    naming the engine and its cert_file. The container is untouched throughout."""
    url, certs = proxy
    box = containers.run(["sleep", "300"])
    box.reload()
    started = box.attrs["State"]["StartedAt"]
    https = url.replace("tcp://", "https://")
    trusted = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    anonymous = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    trusted.load_cert_chain(certs / "healer" / "cert.pem", certs / "healer" / "key.pem")
    async with httpx.AsyncClient(base_url=https, verify=trusted, timeout=10) as client:
        created = await client.post("/containers/create", json={"Image": "x"})
        images = await client.get("/images/json")
        killed = await client.post(f"/containers/{box.id}/kill")
    assert (created.status_code, images.status_code, killed.status_code) == (403, 403, 403)
    async with httpx.AsyncClient(base_url=https, verify=anonymous, timeout=10) as client:
        # TLS 1.3: the proxy's refusal arrives as an alert on the first read.
        with pytest.raises((httpx.TransportError, ssl.SSLError)):
            (await client.post(f"/containers/{box.id}/restart")).raise_for_status()
    rogue = make_certs(tmp_path / "rogue")
    adapter = DockerAdapter.for_engine("db1", _engine(url, certs, client=rogue))
    try:
        with pytest.raises(EngineUnavailable) as caught:
            await adapter.restart(box.name, timeout=1)
    finally:
        await adapter.aclose()
    assert "engine 'db1'" in str(caught.value)
    assert str(rogue / "healer" / "cert.pem") in str(caught.value)
    box.reload()
    assert box.attrs["State"]["StartedAt"] == started


async def test_a_key_that_is_not_the_certificates(tmp_path: Path, proxy: tuple[str, Path]) -> None:
    """healer's cert_file with another key: the error names the engine and both files
    as not a pair (before anything reaches the proxy)."""
    url, certs = proxy
    other = make_certs(tmp_path / "other")
    engine = _engine(url, certs).model_copy(update={"key_file": other / "healer" / "key.pem"})
    adapter = DockerAdapter.for_engine("db1", engine)
    try:
        with pytest.raises(EngineUnavailable) as caught:
            await adapter.ping()
    finally:
        await adapter.aclose()
    message = str(caught.value)
    assert "engine 'db1'" in message and "are not a pair" in message, message
    assert str(other / "healer" / "key.pem") in message
