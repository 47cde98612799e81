"""Hostile connections held against a listener, from a thread with its own event loop.

    with HostileConnections(port, count=2000) as flood:
        flood.wait_held(2000, timeout=60)
        ...                                   # the connections stay held meanwhile
    flood.stats                               # opened, closed_by_server, most_held

Each of ``count`` slots holds one connection of one kind, in turn: ``idle`` (connects
and sends nothing), ``trickle`` (a header line, one byte per second, never finished),
``short_body`` (headers with ``Content-Length: 100000``, then 10 bytes and silence).
When the server closes a slot's connection, the slot reconnects after ``pause``
seconds, as an attacker keeping the pressure would, within ``max_opens`` connections in
all and ``seconds`` of running (both bounded).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

KINDS = ("idle", "trickle", "short_body")


@dataclass
class FloodStats:
    opened: int = 0
    refused: int = 0  # connect() itself failed
    closed_by_server: int = 0
    held: int = 0
    most_held: int = 0


class HostileConnections:
    def __init__(
        self,
        port: int,
        *,
        count: int = 2000,
        pause: float = 1.0,
        max_opens: int = 40_000,
        seconds: float = 240.0,
    ) -> None:
        self.port = port
        self.count = count
        self.pause = pause
        self.max_opens = max_opens
        self.seconds = seconds
        self.stats = FloodStats()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> HostileConnections:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def wait_held(self, at_least: int, timeout: float) -> None:
        """Until ``at_least`` connections are open at once (TimeoutError after ``timeout``)."""
        self._wait(lambda: self.stats.held >= at_least, timeout, f"{at_least} held")

    def _wait(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise TimeoutError(f"not {what} after {timeout}s: {self.stats}")
            time.sleep(0.1)

    def wait_opened(self, at_least: int, timeout: float) -> None:
        """Until ``at_least`` connections were opened in all (TimeoutError after ``timeout``)."""
        self._wait(lambda: self.stats.opened >= at_least, timeout, f"{at_least} opened")

    async def _run(self) -> None:
        deadline = time.monotonic() + self.seconds
        slots = [
            asyncio.create_task(self._slot(KINDS[i % len(KINDS)], deadline))
            for i in range(self.count)
        ]
        await asyncio.gather(*slots)

    def _stopping(self, deadline: float) -> bool:
        return (
            self._stop.is_set()
            or time.monotonic() > deadline
            or self.stats.opened >= self.max_opens
        )

    async def _slot(self, kind: str, deadline: float) -> None:
        while not self._stopping(deadline):
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                self.stats.refused += 1
                await asyncio.sleep(self.pause)
                continue
            self.stats.opened += 1
            self.stats.held += 1
            self.stats.most_held = max(self.stats.most_held, self.stats.held)
            try:
                if await self._hold(kind, reader, writer, deadline):
                    self.stats.closed_by_server += 1
            finally:
                self.stats.held -= 1
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
            await asyncio.sleep(self.pause)

    async def _hold(
        self, kind: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, deadline: float
    ) -> bool:
        """Hold one connection until the server closes it (True) or the flood stops."""
        closed = asyncio.ensure_future(_closed(reader))
        try:
            if kind == "short_body":
                writer.write(
                    b"POST /api/v1/alerts HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Type: application/json\r\n"
                    b'Content-Length: 100000\r\n\r\n{"version"'
                )
            elif kind == "trickle":
                writer.write(b"POST /api/v1/alerts HTTP/1.1\r\nX-Slow: ")
            while not closed.done() and not self._stopping(deadline):
                if kind == "trickle":
                    with contextlib.suppress(OSError):
                        writer.write(b"a")
                await asyncio.wait([closed], timeout=1.0)
            return closed.done()
        finally:
            closed.cancel()


async def _closed(reader: asyncio.StreamReader) -> None:
    """Returns once the peer closed (EOF or reset); whatever it sent is dropped."""
    with contextlib.suppress(OSError):
        while await reader.read(4096):
            pass
