"""Serving the app with a graceful stop (SIGTERM / SIGINT end healer with exit code 0)
and with every connection bounded (healer/connections.py).

Usage (``healer serve`` does this)::

    code = serve_app(app, host="127.0.0.1", port=9095, grace=10.0,
                     server=config.server)   # 0 after SIGTERM

On SIGTERM or SIGINT uvicorn stops accepting connections, lets in-flight
requests finish, then runs the app's lifespan shutdown, where the executor
lets running heals finish for up to ``shutdown_grace`` and journals the rest
``interrupted`` (they are re-verified at the next start). uvicorn itself
re-raises the caught signal once it is done, so the process would die of it
(exit 143 under SIGTERM) and a supervisor could not tell a clean stop from a
crash; here a requested stop that completed is a success.

At start the open-file limit's soft value is raised to the hard one, and the
connection cap is kept ``RESERVED_FDS`` + ``IN_FLIGHT`` below it, so that held
connections and the accepts not yet shed can never take the descriptors a heal needs
(Docker, PostgreSQL, the journal, a runbook). Errors of the accept loop (EMFILE, ...)
and uvicorn's per-request warnings are logged at most once per ``LOG_EVERY`` seconds
each, with a count of those left out.

The event loop is uvloop (a dependency) when it can be imported, asyncio's own otherwise
(:func:`event_loop`); the benchmarks' bare endpoint runs on the same. The HTTP protocol
stays uvicorn's h11 one even where httptools is installed: the connection limits
(healer/connections.py) follow h11's view of each request, its header and body phases
(uvicorn's httptools protocol has none of them: 11 of tests/unit/test_connection_limits.py
fail on it), and h11 answers 400 once an unfinished request head passes 16 KiB, where
httptools read a 1 MB header and answered 200.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import resource
import signal
import threading
from collections.abc import Iterator
from typing import Any

import structlog
import uvicorn

from healer.config import ServerConfig
from healer.connections import ConnectionGuard, ConnectionLimits
from healer.logs import rate_limit_records

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
RESERVED_FDS = 256
# The listen backlog, and so how many connections asyncio accepts in one loop iteration
# before any of them can be shed. A connection closed by the limits frees its descriptor
# an iteration later, so up to three bursts hold descriptors beyond the cap.
BACKLOG = 64
IN_FLIGHT = 3 * BACKLOG
LOG_EVERY = 10.0
# Where the hard limit is unlimited, Linux still refuses more than fs.nr_open (2**20).
_NOFILE_CEILING = 1 << 20


class GracefulServer(uvicorn.Server):
    """``uvicorn.Server`` that handles SIGINT/SIGTERM without re-raising them afterwards."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signals can only be handled on the main thread
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def raise_open_files_limit() -> int:
    """Raise RLIMIT_NOFILE's soft value to the hard one; the soft value in effect."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _NOFILE_CEILING if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return soft


def connection_cap(max_connections: int, open_files: int) -> int:
    """``max_connections``, kept below the open-file limit with room for the accept
    bursts in flight and for the heals (a quarter of a limit too small for that)."""
    return min(max_connections, max(open_files - RESERVED_FDS - IN_FLIGHT, open_files // 4, 1))


def connection_guard(server: ServerConfig, open_files: int) -> ConnectionGuard:
    """The connection limits of ``server``, the cap kept below ``open_files``."""
    return ConnectionGuard(
        ConnectionLimits(
            header_timeout=server.header_timeout,
            body_timeout=server.body_timeout,
            max_connections=connection_cap(server.max_connections, open_files),
        )
    )


def event_loop() -> str:
    """uvicorn's ``loop``: ``uvloop`` when it is installed, else ``asyncio`` (a machine
    without it still serves, only slower)."""
    try:
        importlib.import_module("uvloop")
    except ImportError:
        return "asyncio"
    return "uvloop"


def uvicorn_config(
    app: Any,
    *,
    host: str,
    port: int,
    grace: float,
    server: ServerConfig | None = None,
    guard: ConnectionGuard | None = None,
) -> uvicorn.Config:
    """The server settings healer runs with (the benchmarks' bare endpoint uses them too).
    ``guard`` defaults to ``server``'s limits under the current open-file limit."""
    server = server if server is not None else ServerConfig()
    if guard is None:
        guard = connection_guard(server, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        http=guard.protocol_class(),
        loop=event_loop(),
        backlog=BACKLOG,
        timeout_keep_alive=server.keep_alive,  # type: ignore[arg-type]
        timeout_graceful_shutdown=int(grace) + 5,
    )


def freeze_heap() -> None:
    """Leave what start-up built (modules, the app, its routes and models: most of the
    heap, and alive for good) out of every later garbage collection. Each full collection
    walked all of it: about 60 ms in which no request was served, every few seconds under
    load (the ingest benchmark's p99 went from ~63 ms to ~15 ms on 1-alert posts)."""
    gc.collect()
    gc.freeze()


def serve_app(
    app: Any, *, host: str, port: int, grace: float, server: ServerConfig | None = None
) -> int:
    """Run ``app`` until SIGTERM/SIGINT; 0 once the graceful stop completed."""
    server = server if server is not None else ServerConfig()
    open_files = raise_open_files_limit()
    rate_limit_records(("asyncio", "uvicorn.error"), every=LOG_EVERY)
    guard = connection_guard(server, open_files)
    structlog.get_logger("healer.http").info(
        "listener limits",
        loop=event_loop(),
        open_files=open_files,
        max_connections=guard.limits.max_connections,
        header_timeout=server.header_timeout,
        body_timeout=server.body_timeout,
        keep_alive=server.keep_alive,
    )
    freeze_heap()
    GracefulServer(
        uvicorn_config(app, host=host, port=port, grace=grace, server=server, guard=guard)
    ).run()
    # uvicorn exits the process itself (code 3) when the lifespan start-up fails.
    return 0
