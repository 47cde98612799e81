"""A real reverse proxy on 127.0.0.1 that forwards at once but answers late.

Alertmanager 0.25 has no webhook timeout setting: a notification attempt is
bounded by ``max(group_interval, 10s)``, after which Alertmanager drops the
request and sends the group again. To make that happen between a real
Alertmanager and a real healer, put this proxy between them::

    proxy = SlowAnswerProxy(healer_url, hold_first=True)   # forwards POSTs at once
    am = alertmanager.start(proxy.url + "/api/v1/alerts", ...)
    ...
    proxy.wait_for_posts(2)                       # the original and Alertmanager's resend
    proxy.close()

Every request reaches healer immediately, exactly as sent; only the *answers*
are held back: each by ``delay`` seconds, and with ``hold_first`` the first one
until a second request arrives (Alertmanager gave up and retried) or ``hold``
seconds pass. healer has therefore journaled the alert and started its heal
before the sender decides the delivery failed: the case where a resend must not
act twice. (An Alertmanager records a notification - and gossips it to its HA
peers - only once it is answered, so ``delay`` also keeps peers from learning
of each other's delivery in time.)
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx

from tests.support.env import wait_until
from tests.support.servers.loopback_http import LoopbackServer

_FORWARDED = ("authorization", "content-type", "user-agent")


@dataclass
class Forwarded:
    at: float
    path: str
    body: bytes
    status: int
    answer: bytes
    answered_late: bool = False


class SlowAnswerProxy:
    def __init__(
        self, upstream: str, *, delay: float = 0.0, hold_first: bool = False, hold: float = 40.0
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.delay = delay
        self.hold_first = hold_first
        self.hold = hold
        self.forwarded: list[Forwarded] = []
        self._lock = threading.Lock()
        self._second = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {k: v for k, v in self.headers.items() if k.lower() in _FORWARDED}
                with httpx.Client(timeout=30) as client:
                    resp = client.post(proxy.upstream + self.path, content=body, headers=headers)
                record = Forwarded(
                    time.monotonic(), self.path, body, resp.status_code, resp.content
                )
                with proxy._lock:
                    first = not proxy.forwarded
                    proxy.forwarded.append(record)
                    if not first:
                        proxy._second.set()
                if first and proxy.hold_first:
                    record.answered_late = True
                    proxy._second.wait(proxy.hold)
                elif proxy.delay:
                    record.answered_late = True
                    time.sleep(proxy.delay)
                with contextlib.suppress(OSError):  # the sender has usually hung up by now
                    self.send_response(resp.status_code)
                    self.send_header("Content-Type", resp.headers.get("content-type", ""))
                    self.send_header("Content-Length", str(len(resp.content)))
                    self.end_headers()
                    self.wfile.write(resp.content)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = LoopbackServer(Handler)
        self.port: int = self._server.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def snapshot(self) -> list[Forwarded]:
        with self._lock:
            return list(self.forwarded)

    def wait_for_posts(
        self,
        count: int,
        *,
        timeout: float = 60.0,
        where: Callable[[Forwarded], bool] = lambda f: True,
    ) -> list[Forwarded]:
        def enough() -> list[Forwarded] | None:
            matching = [f for f in self.snapshot() if where(f)]
            return matching if len(matching) >= count else None

        return wait_until(
            enough, timeout=timeout, interval=0.1, what=f"{count} POSTs through the proxy"
        )

    def close(self) -> None:
        self._second.set()  # release a held first answer
        self._server.close()
