"""Per-connection limits of the HTTP listener: uvicorn's h11 protocol with a header
deadline, a body deadline and a cap on open connections that sheds instead of starving.

uvicorn alone closes an idle kept-alive connection (``timeout_keep_alive``) but never
one that is idle after connect, trickles its headers byte by byte or sends less body
than its ``Content-Length``, and its ``limit_concurrency`` answers 503 while the held
connections stay open. Here every connection has:

- a header deadline: from connect (or from the first byte of a kept-alive connection's
  next request) to the end of the request headers, ``header_timeout``;
- a body deadline: from the end of the headers to the end of the body, ``body_timeout``;
- uvicorn's keep-alive timeout once a response is complete (``keep_alive``).

They are deadlines, not inactivity timers: a byte now and then does not extend them.
At most ``max_connections`` are open. A connection beyond that displaces the one that
has waited longest for its first request (idle or trickling); when there is none (every
connection has a request in progress or was kept alive after one) the new connection
is closed at once: the newest is shed. A client that sends its request as soon as it
connects (Alertmanager) is waiting for only a loop iteration or two, so it is displaced
only if ``max_connections`` more connect in that time (asyncio accepts at most the
listen backlog, 128, per iteration): thousands of idle or slow connections cannot keep
it out. A connection that completed a request is never displaced (its keep-alive
timeout bounds it). Connections are closed with a reset (no lingering
FIN_WAIT), and none is logged one by one: one summary line per ``SUMMARY_EVERY``
seconds counts them by reason.

Usage (healer/server.py does this)::

    guard = ConnectionGuard(ConnectionLimits(header_timeout=10, body_timeout=30,
                                             max_connections=4096))
    uvicorn.Config(app, http=guard.protocol_class(), timeout_keep_alive=5)
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import h11
import structlog
from uvicorn.protocols.http.h11_impl import H11Protocol

SUMMARY_EVERY = 10.0

Phase = Literal["new", "request", "body", "busy"]


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float
    body_timeout: float
    max_connections: int


class ConnectionGuard:
    """The connections of one listener: how many are open, which wait for a request
    (longest first), and how many the limits closed, for the summary line."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self._open: set[GuardedH11Protocol] = set()
        # Connections still waiting for their first request, oldest first (a dict keeps
        # insertion order and removes in O(1)).
        self._unproven: dict[GuardedH11Protocol, None] = {}
        self._closed: Counter[str] = Counter()
        self._summary: asyncio.TimerHandle | None = None
        self._log = structlog.get_logger("healer.http")

    @property
    def open(self) -> int:
        return len(self._open)

    def protocol_class(self) -> type[GuardedH11Protocol]:
        """A protocol class for ``uvicorn.Config(http=...)`` whose connections this
        guard counts (uvicorn builds one instance per connection)."""
        guard = self

        class Guarded(GuardedH11Protocol):
            pass

        Guarded.guard = guard
        return Guarded

    def admit(self, conn: GuardedH11Protocol) -> bool:
        """Count ``conn`` in; at the cap, displace the longest waiting connection or
        refuse ``conn`` (False: the caller closes it)."""
        if len(self._open) >= self.limits.max_connections:
            victim = self._displaceable()
            if victim is None:
                self.count("shed")
                return False
            victim.close_for("displaced")
        self._open.add(conn)
        return True

    def _displaceable(self) -> GuardedH11Protocol | None:
        """The connection that has waited longest for its first request. Kept-alive ones
        are left to keep_alive."""
        return next(iter(self._unproven), None)

    def waiting(self, conn: GuardedH11Protocol) -> None:
        """``conn`` waits for its first request."""
        self._unproven[conn] = None

    def busy(self, conn: GuardedH11Protocol) -> None:
        """``conn`` has a request in progress, or has completed one."""
        self._unproven.pop(conn, None)

    def release(self, conn: GuardedH11Protocol) -> None:
        self._open.discard(conn)
        self.busy(conn)

    def count(self, reason: str) -> None:
        """One more connection closed by the limits; summarised, never logged alone."""
        self._closed[reason] += 1
        if self._summary is None:
            self._summary = asyncio.get_running_loop().call_later(SUMMARY_EVERY, self.flush_summary)

    def flush_summary(self) -> None:
        self._summary = None
        if self._closed:
            self._log.warning(
                "connections closed by the server limits",
                seconds=SUMMARY_EVERY,
                open=self.open,
                **self._closed,
            )
            self._closed.clear()


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the header and body deadlines and the connection cap
    of its class' ``guard`` (see :meth:`ConnectionGuard.protocol_class`)."""

    guard: ClassVar[ConnectionGuard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._admitted = False
        self._served = False  # a response was completed on this connection
        self._phase: Phase = "new"
        self._deadline: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if not self.guard.admit(self):
            transport.abort()  # shed: uvicorn never sees it
            return
        self._admitted = True
        super().connection_made(transport)
        self._follow()
        self._arm(self.guard.limits.header_timeout, "header_timeout")

    def data_received(self, data: bytes) -> None:
        if self._phase == "request" and self._deadline is None:
            # The first byte of a kept-alive connection's next request.
            self._arm(self.guard.limits.header_timeout, "header_timeout")
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._admitted:
            return
        self._disarm()
        self.guard.release(self)
        super().connection_lost(exc)

    # -- uvicorn's hooks: where the request phase can change -------------------
    def handle_events(self) -> None:
        super().handle_events()
        self._follow()

    def on_response_complete(self) -> None:
        self._served = True
        super().on_response_complete()
        self._follow()

    def shutdown(self) -> None:
        """A graceful stop lets requests in progress finish; one whose body is still
        being read was not received (nothing of it is journaled), so it is closed now
        instead of holding the stop until its body deadline."""
        if self._phase == "body":
            self.close_for("stopping")
            return
        super().shutdown()

    # -- deadlines -------------------------------------------------------------
    def close_for(self, reason: str) -> None:
        """Close now (a reset, nothing more is read or written) and count why."""
        self._disarm()
        self.guard.release(self)
        self.guard.count(reason)
        if not self.transport.is_closing():
            self.transport.abort()

    def _follow(self) -> None:
        """Track the request phase from h11's view of the client."""
        state = self.conn.their_state
        phase: Phase = (
            "request" if state is h11.IDLE else "body" if state is h11.SEND_BODY else "busy"
        )
        if phase == self._phase:
            return
        self._phase = phase
        self._disarm()
        if phase == "request":
            if not self._served:
                self.guard.waiting(self)
            # else kept alive: its timeout runs until the next request's first byte.
            return
        self.guard.busy(self)
        if phase == "body":
            self._arm(self.guard.limits.body_timeout, "body_timeout")

    def _arm(self, seconds: float, reason: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self.close_for, reason)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
