"""Fixtures of the example plugin's tests: a real Docker engine and throw-away
containers (no mocks: healer.testing hands the handler the real adapter)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import docker
import docker.errors
import pytest

from healer.api import DockerAdapter
from healer.testing import docker_adapter

# Any image with `sh` and `sleep`: busybox by default; the healer suite passes its own.
IMAGE = os.environ.get("HEALER_EXAMPLE_IMAGE", "busybox:latest")
LABELS = {"healer-example-test": "1"}


def _unavailable(why: str) -> None:
    """A missing Docker engine fails the run under CI=true, skips it elsewhere."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"Docker unavailable: {why} (CI=true)", pytrace=False)
    pytest.skip(f"Docker unavailable: {why}")


@pytest.fixture
def client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:
        _unavailable(str(exc))
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
async def docker_engine() -> AsyncIterator[DockerAdapter]:
    """healer's Docker adapter on the local engine, closed afterwards."""
    adapter = docker_adapter()
    try:
        yield adapter
    finally:
        await adapter.aclose()


def _health(container: Any) -> str | None:
    container.reload()
    return (container.attrs["State"].get("Health") or {}).get("Status")


def _run(client: docker.DockerClient, probe: str) -> Any:
    """A sleeping container whose health check runs ``probe`` every 100 ms."""
    return client.containers.run(
        IMAGE,
        ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.2; done"],
        detach=True,
        name=f"healer-example-{uuid.uuid4().hex[:8]}",
        labels=LABELS,
        network_mode="none",
        healthcheck={"test": ["CMD", probe], "interval": 100_000_000, "retries": 1},
    )


def _container(client: docker.DockerClient, probe: str, wanted: str) -> Iterator[Any]:
    container = _run(client, probe)
    try:
        deadline = time.monotonic() + 30
        while _health(container) != wanted:
            assert time.monotonic() < deadline, f"{container.name} never became {wanted}"
            time.sleep(0.1)
        yield container
    finally:
        container.remove(force=True, v=True)


@pytest.fixture
def unhealthy(client: docker.DockerClient) -> Iterator[Any]:
    """A running container whose health check fails (``false``)."""
    yield from _container(client, "false", "unhealthy")


@pytest.fixture
def healthy(client: docker.DockerClient) -> Iterator[Any]:
    """A running container whose health check passes (``true``)."""
    yield from _container(client, "true", "healthy")
