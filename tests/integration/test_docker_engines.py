"""Several Docker engines on real dockerds: ``unix`` (a socket) and ``tls`` (TCP on
loopback with client certificates, as a remote host is reached). A rule picks the engine
from the alert (``engine: "{{ labels.host }}"``); each heal acts on its engine only, an
engine nobody configured is refused, a stopped engine fails only its own heals, and a
wrong certificate is an error naming the engine and the file, with nothing acted.
dockerd's own restart events say what was restarted, never healer's word for it."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.env import free_port
from tests.support.inprocess.gates import kinds
from tests.support.inprocess.inproc import InProcessHealer, running_healer
from tests.support.inprocess.payloads import alert
from tests.support.servers.engines import TwoEngines, make_certs
from tests.support.servers.prometheus_standin import StillFiring

pytestmark = pytest.mark.docker


@pytest.fixture
def prometheus_url() -> Iterator[str]:
    """A Prometheus stand-in: ready, and the alert gone (a heal that acts recovers)."""
    with StillFiring() as prom:
        prom.firing = False
        yield prom.url


def _config(tmp_path: Path, engines: dict[str, Any], prometheus: str) -> dict[str, Any]:
    """``ServiceDown`` -> docker.restart of ``labels.container`` on engine
    ``labels.host``; containers ``web-*`` on any engine allowed."""
    return {
        "journal": str(tmp_path / "journal.db"),
        "prometheus": {"url": prometheus, "timeout": "2s"},
        "verify": {"stable_for": "0s", "timeout": "0.3s"},
        "docker": {"engines": engines},
        "allow": [{"kind": "docker", "engine": "*", "name": "web-*"}],
        "rules": [
            {
                "name": "restart",
                "match": 'alertname="ServiceDown"',
                "handler": "docker.restart",
                "engine": "{{ labels.host }}",
                "params": {"containers": ["{{ labels.container }}"], "stop_timeout": 1},
            }
        ],
    }


@pytest.fixture
def twins(docker_engines: TwoEngines) -> Iterator[str]:
    """A container of one name, ``web-<hex>``, running on both engines."""
    name = f"web-{uuid.uuid4().hex[:8]}"
    factories = [docker_engines.containers(e) for e in ("unix", "tls")]
    for factory in factories:
        factory.run(["sleep", "600"], name=name)
    try:
        yield name
    finally:
        for factory in factories:
            factory.cleanup()


async def _heal(h: InProcessHealer, host: str, container: str) -> dict[str, Any]:
    [heal_id] = await h.fire(alert("ServiceDown", {"host": host, "container": container}))
    return await h.wait_for_outcome(heal_id, timeout=60)


def _restarts(engines: TwoEngines, name: str, container: str, since: float) -> int:
    """dockerd's own ``restart`` events for ``container`` on engine ``name`` since
    ``since``. (Asked of that engine: the recorder behind tests.support's
    docker_restarts is keyed by a client's base URL, the same for every unix socket.)"""
    client = engines.client(name)
    filters = {"container": container, "event": "restart"}
    stream = client.events(
        since=int(since) - 1, until=int(time.time()) + 1, decode=True, filters=filters
    )
    try:
        return len(list(stream))
    finally:
        stream.close()
        client.close()


async def test_each_alert_acts_on_its_own_engine_only(
    tmp_path: Path, docker_engines: TwoEngines, twins: str, prometheus_url: str
) -> None:
    """Two alerts for the same container name, one per host: each restarts the container
    on its own engine (over TLS for ``tls``), never the other's; the targets are keyed
    ``docker:<engine>/<name>`` and /health/ready lists both engines up."""
    since = time.time()
    async with running_healer(_config(tmp_path, docker_engines.config(), prometheus_url)) as h:
        on_tls = await _heal(h, "tls", twins)
        assert on_tls["outcome"] == "recovered", on_tls["reason"]
        assert on_tls["targets"] == [f"docker:tls/{twins}"]
        assert _restarts(docker_engines, "tls", twins, since) == 1
        assert _restarts(docker_engines, "unix", twins, since) == 0

        on_unix = await _heal(h, "unix", twins)
        assert on_unix["outcome"] == "recovered", on_unix["reason"]
        assert on_unix["targets"] == [f"docker:unix/{twins}"]
        assert _restarts(docker_engines, "unix", twins, since) == 1
        assert _restarts(docker_engines, "tls", twins, since) == 1

        ready = await h.client.get("/health/ready")
        checks = ready.json()["checks"]
        assert checks["docker:tls"] == checks["docker:unix"] == {"status": "up"}, checks
        assert ready.status_code == 200


async def test_an_engine_nobody_configured_is_refused(
    tmp_path: Path, docker_engines: TwoEngines, twins: str, prometheus_url: str
) -> None:
    """An alert whose host names no configured engine ends ``refused`` naming the engine,
    before any check; no engine restarts anything. A host label that is not an engine
    name at all is refused too."""
    since = time.time()
    async with running_healer(_config(tmp_path, docker_engines.config(), prometheus_url)) as h:
        heal = await _heal(h, "db9", twins)
        assert heal["outcome"] == "refused"
        assert "'db9' is not configured" in heal["reason"], heal["reason"]
        assert "check" not in kinds(heal)
        odd = await _heal(h, "../tls", twins)
        assert odd["outcome"] == "refused"
        assert "is not an engine name" in odd["reason"], odd["reason"]
    assert _restarts(docker_engines, "unix", twins, since) == 0
    assert _restarts(docker_engines, "tls", twins, since) == 0


async def test_a_stopped_engine_fails_only_its_own_heals(
    tmp_path: Path, docker_engines: TwoEngines, twins: str, prometheus_url: str
) -> None:
    """With ``unix`` stopped, its heal ends ``failed`` naming the engine, while ``tls``'s
    heal restarts its container; /health/ready reports ``docker:unix`` down and stays
    ready (one engine down fails only its heals)."""
    since = time.time()
    # The SDK leaks a socket per failed unix connect: pyproject's filterwarnings says why.
    async with running_healer(_config(tmp_path, docker_engines.config(), prometheus_url)) as h:
        # The client is made and kept before the engine goes away: reused afterwards.
        assert (await h.client.get("/health/ready")).status_code == 200
        docker_engines.unix.stop()
        try:
            down = await _heal(h, "unix", twins)
            up = await _heal(h, "tls", twins)
            ready = await h.client.get("/health/ready")
        finally:
            docker_engines.unix.start()
    assert down["outcome"] == "failed"
    assert "engine 'unix'" in down["reason"], down["reason"]
    assert "act" not in kinds(down)
    assert up["outcome"] == "recovered", up["reason"]
    assert _restarts(docker_engines, "tls", twins, since) == 1
    assert _restarts(docker_engines, "unix", twins, since) == 0
    checks = ready.json()["checks"]
    assert checks["docker:unix"]["status"] == "down", checks
    assert checks["docker:tls"] == {"status": "up"}
    assert ready.status_code == 200


async def test_a_client_certificate_the_engine_does_not_trust(
    tmp_path: Path, docker_engines: TwoEngines, twins: str, prometheus_url: str
) -> None:
    """healer's client certificate from another CA: the TLS engine refuses it, the heal
    ends ``failed`` with a message naming the engine and the cert_file, nothing is
    restarted; /health/ready names the engine down with the same message."""
    rogue = make_certs(tmp_path / "rogue")
    files = docker_engines.tls_files(rogue)
    engines = docker_engines.config(cert_file=files["cert_file"], key_file=files["key_file"])
    since = time.time()
    async with running_healer(_config(tmp_path, engines, prometheus_url)) as h:
        heal = await _heal(h, "tls", twins)
        ready = (await h.client.get("/health/ready")).json()
    assert heal["outcome"] == "failed"
    assert "engine 'tls'" in heal["reason"], heal["reason"]
    assert files["cert_file"] in heal["reason"], heal["reason"]
    assert "act" not in kinds(heal)
    assert "engine 'tls'" in ready["checks"]["docker:tls"]["error"], ready
    assert _restarts(docker_engines, "tls", twins, since) == 0


async def test_an_engine_certificate_the_ca_file_does_not_verify(
    tmp_path: Path, docker_engines: TwoEngines, twins: str, prometheus_url: str
) -> None:
    """healer given another CA as ca_file: the engine's certificate does not verify, and
    the error names the engine and the ca_file; nothing is restarted."""
    rogue = make_certs(tmp_path / "rogue")
    engines = docker_engines.config(ca_file=str(rogue / "ca.pem"))
    since = time.time()
    async with running_healer(_config(tmp_path, engines, prometheus_url)) as h:
        heal = await _heal(h, "tls", twins)
    assert heal["outcome"] == "failed"
    assert "engine 'tls'" in heal["reason"], heal["reason"]
    assert str(rogue / "ca.pem") in heal["reason"], heal["reason"]
    assert _restarts(docker_engines, "tls", twins, since) == 0


@pytest.fixture
def silent_engine() -> Iterator[tuple[str, threading.Event]]:
    """A TCP port on loopback that accepts connections and never answers (an engine
    that hangs); yields its URL and an event that, once set, closes every connection
    and the port."""
    listener = socket.create_server(("127.0.0.1", free_port()))
    listener.settimeout(0.1)
    hang_up = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        try:
            while not hang_up.is_set():  # bounded by the test: set at the latest on teardown
                try:
                    held.append(listener.accept()[0])
                except TimeoutError:
                    continue
        finally:
            listener.close()  # from now on: connection refused
            for conn in held:
                conn.close()

    port = listener.getsockname()[1]
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{port}", hang_up
    finally:
        hang_up.set()
        thread.join(5)


async def test_a_hung_engine_ties_up_only_its_own_threads(
    tmp_path: Path,
    docker_engines: TwoEngines,
    twins: str,
    prometheus_url: str,
    silent_engine: tuple[str, threading.Event],
) -> None:
    """Twelve heals stuck on an engine that never answers (more than the event loop's
    default thread pool holds) do not hold up a heal on another engine: it recovers
    while they still wait. Once the engine hangs up, they end ``failed`` naming it."""
    url, hang_up = silent_engine
    engines = {**docker_engines.config(), "hung": {"base_url": url, "timeout": "60s"}}
    async with running_healer(_config(tmp_path, engines, prometheus_url)) as h:
        stuck = [
            await h.fire(alert("ServiceDown", {"host": "hung", "container": f"web-{i}"}))
            for i in range(12)
        ]
        ok = await _heal(h, "tls", twins)
        pending = [await h.journal.get_heal(i) for [i] in stuck]
        hang_up.set()
        ended = [await h.wait_for_outcome(i, timeout=30) for [i] in stuck]
    assert ok["outcome"] == "recovered", ok["reason"]
    assert [heal["outcome"] for heal in pending if heal is not None] == [None] * 12
    assert {heal["outcome"] for heal in ended} == {"failed"}
    assert all("engine 'hung'" in heal["reason"] for heal in ended), ended[0]["reason"]
