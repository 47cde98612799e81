"""Serving the app with a graceful stop: SIGTERM / SIGINT end healer with exit code 0.

Usage (``healer serve`` does this)::

    code = serve_app(app, host="127.0.0.1", port=9095, grace=10.0)   # 0 after SIGTERM

On SIGTERM or SIGINT uvicorn stops accepting connections, lets in-flight
requests finish, then runs the app's lifespan shutdown, where the executor
lets running heals finish for up to ``shutdown_grace`` and journals the rest
``interrupted`` (they are re-verified at the next start). uvicorn itself
re-raises the caught signal once it is done, so the process would die of it
(exit 143 under SIGTERM) and a supervisor could not tell a clean stop from a
crash; here a requested stop that completed is a success.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

import uvicorn

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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


def uvicorn_config(app: Any, *, host: str, port: int, grace: float) -> uvicorn.Config:
    """The server settings healer runs with (the benchmarks' bare endpoint uses them too)."""
    return uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                          timeout_graceful_shutdown=int(grace) + 5)


def serve_app(app: Any, *, host: str, port: int, grace: float) -> int:
    """Run ``app`` until SIGTERM/SIGINT; 0 once the graceful stop completed."""
    server = GracefulServer(uvicorn_config(app, host=host, port=port, grace=grace))
    server.run()
    # uvicorn exits the process itself (code 3) when the lifespan start-up fails.
    return 0
