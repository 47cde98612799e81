"""A tiny real HTTP server on 127.0.0.1 that records webhook POSTs.

Used to check what Alertmanager really sends (headers, payload) without healer.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.env import wait_until
from tests.support.servers.loopback_http import LoopbackServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes = field(repr=False)


class WebhookRecorder:
    """Answers 200 to every POST and keeps the requests in ``received``.

    ``responses``: status codes to answer the next POSTs with, in order (e.g. ``[500, 200]``
    to make a sender retry); 200 once it is empty."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.responses: list[int] = []
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body: Any = json.loads(raw)
                except ValueError:
                    body = None
                with recorder._lock:
                    recorder.received.append(
                        Received(
                            self.path, {k.lower(): v for k, v in self.headers.items()}, body, raw
                        )
                    )
                    status = recorder.responses.pop(0) if recorder.responses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = LoopbackServer(Handler)
        self.port: int = self._server.port

    @property
    def url(self) -> str:
        """Base URL; Alertmanager posts to whatever path you append (e.g. ``/api/v1/alerts``)."""
        return f"http://127.0.0.1:{self.port}"

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def wait_for(
        self, predicate: Callable[[Received], bool], *, timeout: float = 20.0, what: str = "webhook"
    ) -> Received:
        """First received request matching ``predicate`` (bounded wait)."""

        def probe() -> Received | None:
            return next((r for r in self.snapshot() if predicate(r)), None)

        return wait_until(probe, timeout=timeout, interval=0.05, what=what)

    def close(self) -> None:
        self._server.close()
