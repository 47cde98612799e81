"""A Prometheus stand-in on 127.0.0.1 for in-process tests whose heals must end
``not_recovered`` (the alert keeps firing) or ``recovered``, without a Prometheus binary.

    with StillFiring() as prom:                 # every ALERTS query: one firing series
        config["prometheus"] = {"url": prom.url, "timeout": "2s"}
        prom.firing = False                     # from now on: gone (recovered)

It answers the three endpoints healer's verifier reads: ``/api/v1/status/config``
(``evaluation_interval: 1s``), ``/api/v1/rules`` (no groups) and ``/api/v1/query`` (one
sample of value 1 while ``firing``, else an empty vector), and ``/-/ready`` (200, for
healer's readiness). ``queries`` counts the queries.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Any

from tests.support.servers.loopback_http import LoopbackServer, reply


class StillFiring:
    def __init__(self) -> None:
        self.firing = True
        self.queries = 0
        self._lock = threading.Lock()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/-/ready":
                    reply(self, 200, b"Prometheus Server is Ready.\n", "text/plain")
                    return
                if path == "/api/v1/status/config":
                    data: Any = {"yaml": "global:\n  evaluation_interval: 1s\n"}
                elif path == "/api/v1/rules":
                    data = {"groups": []}
                elif path == "/api/v1/query":
                    with standin._lock:
                        standin.queries += 1
                    result = (
                        [{"metric": {"alertstate": "firing"}, "value": [time.time(), "1"]}]
                        if standin.firing
                        else []
                    )
                    data = {"resultType": "vector", "result": result}
                else:
                    self.send_error(404)
                    return
                reply(
                    self,
                    200,
                    json.dumps({"status": "success", "data": data}).encode(),
                    "application/json",
                )

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = LoopbackServer(Handler)
        self.url = self._server.url

    def close(self) -> None:
        self._server.close()

    def __enter__(self) -> StillFiring:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
