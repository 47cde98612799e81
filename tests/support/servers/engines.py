"""Two private Docker engines for the multi-engine tests: ``unix`` (its own socket) and
``tls`` (TCP on loopback, TLS with client certificates, as a remote host is reached).

    with two_engines(workdir) as engines:       # tests/conftest.py: fixture docker_engines
        engines.config()                        # docker.engines for healer: unix and tls
        engines.client("tls")                   # docker.DockerClient (over its unix socket)
        engines.containers("unix").run([...])   # a ContainerFactory on that engine
        engines.unix.stop(); engines.unix.start()

The certificates are made by the shipped ``examples/hosts/make-certs.sh`` (the one
docs/multi-host.md tells operators to run): a CA, the engine's server certificate for
``localhost``/127.0.0.1 and healer's client certificate. ``make_certs`` makes other sets
(a rogue CA's client certificate is refused by the engine). Each engine runs the busybox
test image (built in it). Both are private dockerds (tests.support.servers.private_services):
host networking only, removed with everything they made on exit, even on failure.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker

from tests.support.env import free_port, require_service
from tests.support.inprocess.stack import REPO
from tests.support.servers.containers import ContainerFactory, build_busybox_image
from tests.support.servers.private_services import PrivateDockerd, private_dockerd

MAKE_CERTS = REPO / "examples" / "hosts" / "make-certs.sh"
HOST = "localhost"


def make_certs(directory: Path) -> Path:
    """``make-certs.sh directory localhost 127.0.0.1``: a CA, a server and a client
    certificate in ``directory`` (returned)."""
    if subprocess.run(["which", "openssl"], capture_output=True, check=False).returncode:
        require_service("openssl", "the openssl command (Debian package openssl)")
    subprocess.run(
        ["sh", str(MAKE_CERTS), str(directory), HOST, "127.0.0.1"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return directory


@dataclass
class TwoEngines:
    unix: PrivateDockerd
    tls: PrivateDockerd
    tls_url: str  # tcp://127.0.0.1:<port>
    certs: Path  # make-certs.sh's directory: ca.pem, healer/cert.pem, healer/key.pem
    image: str = ""
    _factories: list[ContainerFactory] = field(default_factory=list)

    def engine(self, name: str) -> PrivateDockerd:
        return {"unix": self.unix, "tls": self.tls}[name]

    def tls_files(self, certs: Path | None = None) -> dict[str, str]:
        """ca_file, cert_file, key_file of ``certs`` (default: the engine's own set)."""
        certs = certs or self.certs
        return {
            "ca_file": str(certs / "ca.pem"),
            "cert_file": str(certs / "healer" / "cert.pem"),
            "key_file": str(certs / "healer" / "key.pem"),
        }

    def config(self, **tls_engine: Any) -> dict[str, Any]:
        """``docker.engines`` reaching ``unix`` by its socket and ``tls`` over TCP+TLS
        (``tls_engine`` overrides keys of the latter, e.g. another ``cert_file``)."""
        return {
            "unix": {"base_url": self.unix.base_url, "timeout": "10s"},
            "tls": {"base_url": self.tls_url, "timeout": "10s", **self.tls_files(), **tls_engine},
        }

    def client(self, name: str) -> docker.DockerClient:
        """An admin client of engine ``name``, over its unix socket (not healer's way)."""
        return self.engine(name).client(timeout=30)

    def containers(self, name: str) -> ContainerFactory:
        """A ContainerFactory on engine ``name``; its containers go with the engines."""
        factory = ContainerFactory(self.client(name), self.image)
        self._factories.append(factory)
        return factory

    def close(self) -> None:
        for factory in self._factories:
            with contextlib.suppress(Exception):
                factory.cleanup()
            factory.client.close()


@contextlib.contextmanager
def two_engines(workdir: Path) -> Iterator[TwoEngines]:
    """Start both engines (the busybox image built in each); everything removed on exit."""
    certs = make_certs(workdir / "certs")
    port = free_port()
    server = certs / HOST
    tls_args = (
        f"--host=tcp://127.0.0.1:{port}",
        "--tlsverify",
        f"--tlscacert={certs / 'ca.pem'}",
        f"--tlscert={server / 'server-cert.pem'}",
        f"--tlskey={server / 'server-key.pem'}",
    )
    with private_dockerd() as unix, private_dockerd(tls_args) as tls:
        engines = TwoEngines(unix, tls, f"tcp://127.0.0.1:{port}", certs)
        try:
            for name in ("unix", "tls"):
                with contextlib.closing(engines.client(name)) as client:
                    engines.image = build_busybox_image(client, workdir / f"image-{name}")
            yield engines
        finally:
            engines.close()
