"""healer's real app served by uvicorn in a thread on 127.0.0.1, for tests that reach it
as a shell would (the CLI through ``--url``):

    with served(app) as http:          # an httpx.Client on its base URL
        main(["circuits", "--url", str(http.base_url)])

The server is stopped (and its lifespan closed) on exit, even on failure."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn
from fastapi import FastAPI
from structlog.testing import capture_logs

from tests.support.env import free_port, wait_until


@contextmanager
def served(app: FastAPI) -> Iterator[httpx.Client]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on"
        )
    )
    thread = threading.Thread(target=server.run, name="healer-uvicorn", daemon=True)
    with capture_logs():  # healer's own log lines stay out of the CLI's captured stdout
        thread.start()
        try:
            wait_until(lambda: server.started, timeout=15, what="uvicorn to start")
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
                yield http
        finally:
            server.should_exit = True
            thread.join(15)


def run_cli(client: httpx.Client, *argv: str) -> int:
    """``healer ARGV --url <the served healer>``, as from a shell; the exit code."""
    from healer.cli import main

    return main([*argv, "--url", str(client.base_url)])
