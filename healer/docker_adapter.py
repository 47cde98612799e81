"""The one place the synchronous docker SDK is called, always off the event loop.

Usage::

    adapter = DockerAdapter(base_url=None)        # DOCKER_HOST or the local socket
    containers = await adapter.list_containers(labels={"com.docker.compose.service": "web"})
    await adapter.restart("web-1", timeout=10)
    await adapter.aclose()

    db1 = DockerAdapter.for_engine("db1", engine_config)   # a named engine (docker.engines)

Each call runs in a worker thread of the engine's own pool (at most ``THREADS`` at
once): an engine that hangs ties up its own threads only, never the event loop's
default pool nor another engine's. Readiness pings of one engine never pile up: a ping
still waiting for the engine is shared by the next probe. The client is created lazily,
and kept, so that healer starts (and reports the engine down on /health/ready)
when an engine is not there yet. An engine that cannot be reached, or whose TLS
handshake fails, raises :class:`EngineUnavailable` naming the engine (and, for TLS, the
file to look at); the heal that met it fails, the other engines' heals go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import docker
import docker.errors
import docker.tls
import requests.exceptions

from healer.docker_config import DEFAULT_ENGINE, EngineConfig
from healer.errors import ActionFailed

T = TypeVar("T")

# The SDK would otherwise wait 60 s for a dead engine; a heal must fail fast.
_API_TIMEOUT = 30
# Threads per engine: calls beyond them wait their turn (heals on that engine only).
THREADS = 8


class EngineUnavailable(ActionFailed):
    """A Docker engine could not be reached, or refused healer's TLS: the message names
    the engine and, for TLS, the file to look at."""


class _TlsApiClient(docker.APIClient):
    """The SDK's API client, but the engine's ``ca_file`` is what verifies it: requests
    lets ``$REQUESTS_CA_BUNDLE`` / ``$CURL_CA_BUNDLE`` (often set in images) replace a
    session's own CA (psf/requests#3829), and the engine's certificate would then be
    checked against the system's CAs instead."""

    def merge_environment_settings(
        self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> Any:
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        settings["verify"] = self.verify
        return settings


class _TlsDockerClient(docker.DockerClient):
    def __init__(self, **kwargs: Any) -> None:
        self.api = _TlsApiClient(**kwargs)


class DockerAdapter:
    def __init__(
        self,
        base_url: str | None = None,
        *,
        name: str = DEFAULT_ENGINE,
        engine: EngineConfig | None = None,
    ) -> None:
        self.name = name
        self._engine = engine
        self._base_url = engine.base_url if engine is not None else base_url
        # Whole seconds, as the SDK takes them: 0.5s is 1s, never 0 (no timeout at all).
        self._timeout = math.ceil(engine.timeout) if engine is not None else _API_TIMEOUT
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(THREADS, thread_name_prefix=f"docker-{name}")
        self._ping: asyncio.Future[bool] | None = None
        limit = engine.max_concurrent_actions if engine is not None else None
        self._actions = asyncio.Semaphore(limit) if limit is not None else None

    @classmethod
    def for_engine(cls, name: str, engine: EngineConfig | None) -> DockerAdapter:
        """The adapter of engine ``name`` (``None``: the environment's engine)."""
        return cls(name=name, engine=engine)

    @property
    def where(self) -> str:
        """``engine 'db1' (tcp://db1:2376)``: how errors name this engine."""
        return f"engine {self.name!r} ({self._base_url or 'DOCKER_HOST or the local socket'})"

    def _tls(self) -> docker.tls.TLSConfig | None:
        engine = self._engine
        if engine is None or engine.cert_file is None or engine.key_file is None:
            return None
        ca = str(engine.ca_file) if engine.ca_file is not None else None
        return docker.tls.TLSConfig(
            client_cert=(str(engine.cert_file), str(engine.key_file)), ca_cert=ca, verify=True
        )

    def _new_client(self) -> docker.DockerClient:
        if not self._base_url:
            return docker.from_env(timeout=self._timeout)
        kwargs: dict[str, Any] = {}
        if self._base_url.startswith("ssh://"):
            kwargs["use_ssh_client"] = True  # the system's ssh, its keys and known_hosts
        tls = self._tls()
        factory = _TlsDockerClient if tls is not None else docker.DockerClient
        return factory(
            base_url=self._base_url,
            timeout=self._timeout,
            version="auto",
            tls=tls or False,
            **kwargs,
        )

    def _get(self) -> docker.DockerClient:
        with self._lock:
            if self._client is not None:
                return self._client
        # Made outside the lock: the SDK asks the engine for its API version here, and a
        # hung engine must not make every call queue behind one attempt's timeout.
        client = self._new_client()
        with self._lock:
            if self._client is None:
                self._client = client
            kept = self._client
        if kept is not client:  # another call made one first
            client.close()
        return kept

    def _call(self, fn: Callable[[docker.DockerClient], T]) -> T:
        try:
            return fn(self._get())
        except (requests.exceptions.SSLError, docker.errors.TLSParameterError) as exc:
            raise EngineUnavailable(f"docker {self.where}: {self._tls_problem(exc)}") from exc
        except requests.exceptions.ConnectionError as exc:
            if self._engine is not None and self._engine.tls and _looks_like_tls(exc):
                raise EngineUnavailable(f"docker {self.where}: {self._tls_problem(exc)}") from exc
            raise EngineUnavailable(f"docker {self.where} cannot be reached: {exc}") from exc
        except docker.errors.DockerException as exc:
            if self._client is None:  # the constructor asks the engine for its version
                cause = exc.__context__
                if isinstance(cause, requests.exceptions.SSLError) or _looks_like_tls(exc):
                    problem = self._tls_problem(cause or exc)
                    raise EngineUnavailable(f"docker {self.where}: {problem}") from exc
                raise EngineUnavailable(f"docker {self.where} cannot be reached: {exc}") from exc
            raise

    def _tls_problem(self, exc: BaseException) -> str:
        """Which of the engine's TLS files is the likely culprit, from the error text."""
        engine = self._engine
        text = str(exc)
        if engine is None or engine.cert_file is None:
            return f"TLS failed: {text}"
        low = text.lower()
        if isinstance(exc, docker.errors.TLSParameterError) or "no such file" in low:
            files = f"ca_file {engine.ca_file}, cert_file {engine.cert_file}, key_file "
            return f"TLS files unusable ({files}{engine.key_file}): {text}"
        if "certificate verify failed" in low or "hostname mismatch" in low:
            return (
                f"TLS: the engine's certificate does not verify against ca_file "
                f"{engine.ca_file} (or does not name the host): {text}"
            )
        if "key values mismatch" in low or "pem lib" in low:
            return (
                f"TLS: cert_file {engine.cert_file} and key_file {engine.key_file} are "
                f"not a pair: {text}"
            )
        return (
            f"TLS: the engine refused healer's client certificate (cert_file "
            f"{engine.cert_file}; is it signed by the CA the engine trusts?): {text}"
        )

    async def run(self, fn: Callable[[docker.DockerClient], T]) -> T:
        """Run ``fn(client)`` in a thread. The escape hatch for calls not wrapped below."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._call, fn)

    @contextlib.asynccontextmanager
    async def acting(self) -> AsyncIterator[None]:
        """Held while a handler acts on this engine: ``max_concurrent_actions`` at once."""
        if self._actions is None:
            yield
            return
        async with self._actions:
            yield

    async def ping(self) -> bool:
        """Whether the engine answers ``/_ping``. A ping still in flight is awaited,
        not repeated (a hung engine holds one thread for probes, not one per probe)."""
        if self._ping is None or self._ping.done():
            self._ping = asyncio.ensure_future(self.run(lambda c: c.ping()))
            # A probe that gave up waiting (its timeout) leaves the result unread: read
            # here, so that asyncio does not report it lost; the next probe asks afresh.
            self._ping.add_done_callback(lambda f: f.cancelled() or f.exception())
        return bool(await asyncio.shield(self._ping))

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
            await asyncio.get_running_loop().run_in_executor(self._pool, client.close)
        self._pool.shutdown(wait=False, cancel_futures=True)


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


def _looks_like_tls(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(w in text for w in ("ssl", "tls", "certificate", "handshake"))


NotFound = docker.errors.NotFound
DockerException = docker.errors.DockerException
