"""The one place the synchronous docker SDK is called, always off the event loop.

Usage::

    adapter = DockerAdapter(base_url=None)        # DOCKER_HOST or the local socket
    containers = await adapter.list_containers(labels={"com.docker.compose.service": "web"})
    await adapter.restart("web-1", timeout=10)
    await adapter.aclose()

Each call runs in a worker thread (``asyncio.to_thread``). The client is created
lazily so that healer starts (and reports "docker: down" on /health/ready) when
the engine is not there yet.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import docker
import docker.errors

T = TypeVar("T")

# The SDK would otherwise wait 60 s for a dead engine; a heal must fail fast.
_API_TIMEOUT = 30


class DockerAdapter:
    def __init__(self, base_url: str | None = None) -> None:
        self._base_url = base_url
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()

    def _get(self) -> docker.DockerClient:
        with self._lock:
            if self._client is None:
                if self._base_url:
                    self._client = docker.DockerClient(
                        base_url=self._base_url, timeout=_API_TIMEOUT, version="auto"
                    )
                else:
                    self._client = docker.from_env(timeout=_API_TIMEOUT)
            return self._client

    async def run(self, fn: Callable[[docker.DockerClient], T]) -> T:
        """Run ``fn(client)`` in a thread. The escape hatch for calls not wrapped below."""
        return await asyncio.to_thread(lambda: fn(self._get()))

    async def ping(self) -> bool:
        return bool(await self.run(lambda c: c.ping()))

    async def list_containers(
        self, *, name: str | None = None, labels: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Containers (running or not) filtered by exact name and/or labels, as inspect dicts."""

        def _list(c: docker.DockerClient) -> list[dict[str, Any]]:
            filters: dict[str, Any] = {}
            if labels:
                filters["label"] = [f"{k}={v}" for k, v in labels.items()]
            if name:
                # Docker's name filter is a substring match: narrow to the exact name below.
                filters["name"] = name
            found = c.containers.list(all=True, filters=filters)
            out = [dict(ct.attrs) for ct in found]
            if name:
                out = [a for a in out if a.get("Name", "").lstrip("/") == name]
            return out

        return await self.run(_list)

    async def inspect(self, container: str) -> dict[str, Any]:
        return await self.run(lambda c: dict(c.api.inspect_container(container)))

    async def restart(self, container: str, *, timeout: int) -> None:
        await self.run(lambda c: c.api.restart(container, timeout=timeout))

    async def stats(self, container: str) -> dict[str, int | None]:
        """Memory of a container from one stats sample (``docker stats --no-stream``).

        ``usage`` is the working set, as cAdvisor and ``docker stats`` count it: the
        cgroup's usage minus its inactive page cache (``total_inactive_file`` on cgroup
        v1, ``inactive_file`` on v2, else ``cache``). ``limit`` is the memory limit
        (the host's memory when the container has none); ``raw_usage`` what the cgroup
        reports. Values are bytes, ``None`` when the engine reports none (e.g. stopped)."""

        def _stats(c: docker.DockerClient) -> dict[str, Any]:
            # one_shot: answer at once instead of waiting for a second CPU sample.
            return dict(c.api.stats(container, stream=False, one_shot=True))

        return memory_usage(await self.run(_stats))

    async def aclose(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)


def memory_usage(stats: dict[str, Any]) -> dict[str, int | None]:
    """``usage`` (working set), ``limit`` and ``raw_usage`` from a stats sample."""
    mem = stats.get("memory_stats") or {}
    raw, limit = mem.get("usage"), mem.get("limit")
    detail = mem.get("stats") or {}
    inactive = next(
        (
            detail[k]
            for k in ("total_inactive_file", "inactive_file", "cache")
            if isinstance(detail.get(k), int)
        ),
        0,
    )
    usage = raw - inactive if isinstance(raw, int) and inactive < raw else raw
    return {
        "usage": usage if isinstance(usage, int) else None,
        "limit": limit if isinstance(limit, int) and limit > 0 else None,
        "raw_usage": raw if isinstance(raw, int) else None,
    }


NotFound = docker.errors.NotFound
DockerException = docker.errors.DockerException
