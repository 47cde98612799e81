"""Docker side of the test support: busybox image, container factory, clean-up."""

from __future__ import annotations

import contextlib
import fcntl
import gc
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container

from tests.support.env import require_service
from tests.support.servers.service import DemoService, start_service

TEST_LABEL = "healer-test"
TEST_LABEL_VALUE = "1"
# The pid of the pytest process (each xdist worker is one) that made the container: a
# session removes its own at the end, and at the start those whose process is gone.
SESSION_LABEL = "healer-test-session"
BUSYBOX_IMAGE_TAG = "healer-test-busybox:latest"
BUSYBOX_BINARY = Path("/bin/busybox")
BUILD_LOCK = Path(tempfile.gettempdir()) / "healer-test-busybox.lock"

_DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN ["/bin/busybox", "mkdir", "-p", "/tmp", "/www"]
LABEL healer-test-image="1"
"""


def connect_docker() -> docker.DockerClient:
    """``docker.from_env()`` + ping, or :func:`require_service`."""
    try:
        client = docker.from_env()
    except docker.errors.DockerException as exc:
        reason = f"cannot create a client: {exc}"
    else:
        reason = ""
    if reason:
        # from_env() asks the engine for its API version inside the constructor;
        # when that fails, the half-built client's HTTP session is unreachable
        # but still holds a socket. Reclaim it here, quietly, instead of letting
        # a later GC raise ResourceWarning (an error under filterwarnings=error).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
        require_service("docker", reason)
    try:
        client.ping()
    except Exception as exc:
        client.close()
        require_service("docker", f"engine does not answer ping: {exc}")
    return client


def _session_alive(label: str | None) -> bool:
    """Whether the pytest process that created a container (``healer-test-session``) lives."""
    if not label or not label.isdigit():
        return False
    pid = int(label)
    if pid == os.getpid():
        return False  # ours: always fair game
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_labelled_containers(client: docker.DockerClient) -> list[str]:
    """Force-remove containers labelled ``healer-test=1`` left by this or a dead session.

    Containers of another pytest session that is still running on this machine
    (label ``healer-test-session=<pid>``) are left alone, so concurrent runs by
    several engineers do not kill each other's containers.
    """
    removed: list[str] = []
    for container in client.containers.list(
        all=True, filters={"label": f"{TEST_LABEL}={TEST_LABEL_VALUE}"}
    ):
        if _session_alive(container.labels.get(SESSION_LABEL)):
            continue
        try:
            container.remove(force=True, v=True)
        except docker.errors.NotFound:
            continue
        removed.append(container.name or container.id or "?")
    return removed


def build_busybox_image(client: docker.DockerClient, workdir: Path) -> str:
    """Build ``healer-test-busybox:latest`` FROM scratch with the host's busybox."""
    if not BUSYBOX_BINARY.is_file():
        require_service("busybox", f"{BUSYBOX_BINARY} not found (apt-get install busybox-static)")
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX_BINARY, workdir / "busybox")
    (workdir / "Dockerfile").write_text(_DOCKERFILE)
    # pytest-xdist workers (and other runs on the machine) build the same tag at once: one
    # at a time, so no build moves the tag under another's feet; after the first, the
    # layer cache makes each build a no-op with the same image id.
    with BUILD_LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            client.images.build(path=str(workdir), tag=BUSYBOX_IMAGE_TAG, rm=True, forcerm=True)
        except docker.errors.BuildError as exc:
            log = "".join(str(chunk.get("stream", chunk)) for chunk in exc.build_log)
            raise RuntimeError(f"building {BUSYBOX_IMAGE_TAG} failed: {exc}\n{log}") from exc
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return BUSYBOX_IMAGE_TAG


class ContainerFactory:
    """Runs throw-away containers on the host network and removes them afterwards."""

    def __init__(self, client: docker.DockerClient, image: str) -> None:
        self.client = client
        self.image = image
        self.created: list[Container] = []

    def run(
        self,
        command: Sequence[str],
        *,
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
        mem_limit: str | None = None,
        environment: Mapping[str, str] | Sequence[str] | None = None,
        healthcheck: Mapping[str, Any] | None = None,
        network_mode: str = "host",
    ) -> Container:
        """Run ``command`` detached in the busybox image with ``network_mode="host"``
        (``"none"``: a namespace of its own with only loopback; ``"container:<name>"``:
        joined to another's).

        The name defaults to ``healer-test-<8 hex>``; the labels ``healer-test=1``
        and ``healer-test-session=<pid>`` are always added. Every container is
        force-removed at teardown.
        """
        name = name or f"healer-test-{uuid.uuid4().hex[:8]}"
        all_labels = {
            **(labels or {}),
            TEST_LABEL: TEST_LABEL_VALUE,
            SESSION_LABEL: str(os.getpid()),
        }
        kwargs: dict[str, Any] = {}
        if mem_limit is not None:
            kwargs["mem_limit"] = mem_limit
        if healthcheck is not None:
            kwargs["healthcheck"] = dict(healthcheck)
        if environment is not None:
            kwargs["environment"] = (
                dict(environment) if isinstance(environment, Mapping) else list(environment)
            )
        try:
            container = self.client.containers.run(
                self.image,
                list(command),
                detach=True,
                name=name,
                labels=all_labels,
                network_mode=network_mode,
                **kwargs,
            )
        except docker.errors.APIError:
            # create may have succeeded and start failed: do not leak it.
            self._remove_by_name(name)
            raise
        assert isinstance(container, Container)
        self.created.append(container)
        return container

    def run_service(
        self,
        *,
        port: int | None = None,
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
        mem_limit: str | None = None,
        healthcheck: bool = False,
    ) -> DemoService:
        """Run the demo service (see service.sh) and wait until it serves metric 1.

        ``healthcheck=True`` gives the container a Docker healthcheck that fetches its
        /metrics every 250 ms (healthy while it serves, unhealthy once muted)."""
        return start_service(
            self, port=port, name=name, labels=labels, mem_limit=mem_limit, healthcheck=healthcheck
        )

    def _remove_by_name(self, name: str) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self.client.containers.get(name).remove(force=True, v=True)

    def cleanup(self) -> list[str]:
        """Force-remove every container this factory created; return error texts."""
        errors: list[str] = []
        while self.created:
            container = self.created.pop()
            try:
                container.remove(force=True, v=True)
            except docker.errors.NotFound:
                continue
            except docker.errors.APIError as exc:
                errors.append(f"{container.name}: {exc}")
        return errors
