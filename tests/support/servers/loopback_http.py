"""A real HTTP server on 127.0.0.1 (a free port), served by a daemon thread: what the
webhook recorder, the slow-answer proxy and the Prometheus stand-in are built on.

    server = LoopbackServer(Handler)        # Handler: a BaseHTTPRequestHandler subclass
    server.url                              # http://127.0.0.1:<port>
    reply(handler, 200, b"{}", "application/json")   # inside a do_GET / do_POST
    server.close()
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LoopbackServer:
    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def reply(
    handler: BaseHTTPRequestHandler, status: int, body: bytes = b"", content_type: str = ""
) -> None:
    """Answer ``status`` with ``body`` (and its Content-Length)."""
    handler.send_response(status)
    if content_type:
        handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
