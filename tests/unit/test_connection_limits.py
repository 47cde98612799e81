"""Every connection to healer's HTTP listener is bounded (healer/connections.py): idle
after connect, trickled headers, a body shorter than its Content-Length and an idle
kept-alive connection are all closed; beyond ``max_connections`` the connection waiting
longest without a request makes room, or the newest is shed.

The server is the real one (uvicorn with healer's protocol, ``healer.server.uvicorn_config``)
on 127.0.0.1, with small limits; the clients are raw sockets. Nothing asserts how long
anything took: a test waits (bounded) for the close it expects, and what it checks is
that the close came, and that no answer came first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from healer.config import ServerConfig, parse_config
from healer.errors import ConfigError
from healer.logs import RateLimitFilter, rate_limit_records
from healer.server import (
    BACKLOG,
    LOG_EVERY,
    RESERVED_FDS,
    GracefulServer,
    connection_cap,
    uvicorn_config,
)
from tests.support.env import require_service

# Generous bound on waiting for a close that a 0.3 s deadline causes (a loaded machine).
CLOSE_WITHIN = 20.0
REQUEST = (
    b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    b"Content-Length: 2\r\n\r\n{}"
)


@dataclass
class EchoApp:
    """Answers 200 with the body's length; ``hold`` keeps requests in progress."""

    bodies: list[int] = field(default_factory=list)
    hold: asyncio.Event | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(len(body))
        if self.hold is not None:
            await self.hold.wait()
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
        )
        await send({"type": "http.response.body", "body": b"ok"})


@dataclass
class Running:
    app: EchoApp
    port: int
    serve: asyncio.Task[None]
    server: GracefulServer

    async def stop(self) -> None:
        """A graceful stop, as on SIGTERM; returns once the server has stopped."""
        self.server.should_exit = True
        await asyncio.wait_for(asyncio.shield(self.serve), CLOSE_WITHIN)

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)


@contextlib.asynccontextmanager
async def serving(grace: float = 1.0, **limits: Any) -> AsyncIterator[Running]:
    """healer's server settings with ``limits`` (ServerConfig fields) on a free port."""
    app = EchoApp()
    config = uvicorn_config(
        app, host="127.0.0.1", port=0, grace=grace, server=ServerConfig(**limits)
    )
    server = GracefulServer(config)
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(400):
            if server.started or task.done():
                break
            await asyncio.sleep(0.05)
        assert server.started, "server did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        yield Running(app, port, task, server)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


async def read_until_closed(reader: asyncio.StreamReader, timeout: float = CLOSE_WITHIN) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts)."""
    data = b""
    async with asyncio.timeout(timeout):
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk


async def closed_while_trickling(
    writer: asyncio.StreamWriter, reader: asyncio.StreamReader, payload: bytes, every: float = 0.05
) -> bytes:
    """Send ``payload`` one byte at a time until the server closes; what it answered.
    Fails if the whole payload went out before the close."""
    answered = asyncio.ensure_future(read_until_closed(reader))
    for byte in payload:
        if answered.done():
            return answered.result()
        with contextlib.suppress(ConnectionError):
            writer.write(bytes([byte]))
            await writer.drain()
        await asyncio.sleep(every)
    answered.cancel()
    pytest.fail(f"still open after trickling all {len(payload)} bytes")


async def test_a_connection_idle_after_connect_is_closed_by_the_header_timeout() -> None:
    """A client that connects and sends nothing is closed, without an answer."""
    async with serving(header_timeout=0.3) as srv:
        reader, writer = await srv.connect()
        assert await read_until_closed(reader) == b""
        writer.close()


async def test_trickled_headers_are_closed_by_the_header_deadline() -> None:
    """A byte every 50 ms never completes the headers in time: the deadline counts from
    connect, each byte does not extend it (the headers would take 100 s)."""
    async with serving(header_timeout=0.3) as srv:
        reader, writer = await srv.connect()
        head = b"POST /echo HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 2000 + b"\r\n\r\n"
        assert await closed_while_trickling(writer, reader, head) == b""
        writer.close()
        assert srv.app.bodies == []


async def test_an_unfinished_request_head_over_16_kib_is_refused_before_the_app() -> None:
    """A request head that has not ended after 20 KB (a header that goes on) is answered
    400 and closed long before its header deadline, and never reaches the app: the bound
    h11 keeps on what a client can make the server hold (one reason healer's protocol is
    not httptools', which read on)."""
    async with serving(header_timeout=30) as srv:
        reader, writer = await srv.connect()
        writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20_000)
        await writer.drain()
        answer = await read_until_closed(reader)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
        assert srv.app.bodies == []


@pytest.mark.parametrize("body_sent", [b"", b'{"a":', b"x" * 4000])
async def test_a_body_shorter_than_its_content_length_is_closed(body_sent: bytes) -> None:
    """Headers promising 10000 bytes, then none, a few or most of them, then silence:
    closed by the body deadline without an answer; the app never got a whole body."""
    async with serving(header_timeout=30, body_timeout=0.3) as srv:
        reader, writer = await srv.connect()
        writer.write(
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10000\r\n\r\n" + body_sent
        )
        await writer.drain()
        assert await read_until_closed(reader) == b""
        writer.close()
        assert srv.app.bodies == []


async def test_a_trickled_body_is_closed_by_the_body_deadline() -> None:
    """A body sent a byte every 50 ms (it would take 100 s) is cut by the deadline."""
    async with serving(header_timeout=30, body_timeout=0.3) as srv:
        reader, writer = await srv.connect()
        writer.write(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\n\r\n")
        assert await closed_while_trickling(writer, reader, b"x" * 2000) == b""
        writer.close()
        assert srv.app.bodies == []


async def test_an_idle_kept_alive_connection_is_closed_and_its_next_request_is_bounded() -> None:
    """After a complete answer, a kept-alive connection that stays silent is closed by
    the keep-alive timeout; one that trickles its next request is closed by the header
    deadline, armed again by that request's first byte."""
    async with serving(header_timeout=0.5, keep_alive=0.3) as srv:
        reader, writer = await srv.connect()
        writer.write(REQUEST)
        answer = await read_until_closed(reader)
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok")
        writer.close()

        reader, writer = await srv.connect()
        writer.write(REQUEST)
        await writer.drain()
        assert (await reader.readuntil(b"ok")).startswith(b"HTTP/1.1 200")
        head = b"POST /echo HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 2000 + b"\r\n\r\n"
        assert await closed_while_trickling(writer, reader, head) == b""
        writer.close()
        assert srv.app.bodies == [2, 2]


async def test_at_the_cap_the_connection_waiting_longest_makes_room() -> None:
    """With ``max_connections`` idle connections held, a client that sends its request
    at once is answered 200; the one that waited longest
    is closed for it, the others stay open and are still served."""
    async with serving(header_timeout=60, max_connections=8) as srv:
        idle = [await srv.connect() for _ in range(8)]
        reader, writer = await srv.connect()
        writer.write(REQUEST)
        assert (await reader.readuntil(b"ok")).startswith(b"HTTP/1.1 200")
        writer.close()
        assert await read_until_closed(idle[0][0]) == b""  # the longest waiting
        for other_reader, other_writer in idle[1:3]:  # still open: served
            other_writer.write(REQUEST)
            assert (await other_reader.readuntil(b"ok")).startswith(b"HTTP/1.1 200")
        for _, w in idle:
            w.close()


async def test_at_the_cap_a_kept_alive_client_is_never_displaced() -> None:
    """A client that completed a request and keeps its connection alive (Alertmanager's
    HTTP client does) is not displaced by newcomers while idle ones are: with the cap
    full of served connections a newcomer is shed, and the first client's next request
    on its connection is still answered."""
    async with serving(header_timeout=60, keep_alive=60, max_connections=8) as srv:
        kept_reader, kept_writer = await srv.connect()
        kept_writer.write(REQUEST)
        assert (await kept_reader.readuntil(b"ok")).startswith(b"HTTP/1.1 200")
        idle = [await srv.connect() for _ in range(7)]
        served = []
        for _ in range(7):  # each newcomer displaces the longest waiting idle one
            reader, writer = await srv.connect()
            writer.write(REQUEST)
            assert (await reader.readuntil(b"ok")).startswith(b"HTTP/1.1 200")
            served.append(writer)
        for r, _ in idle:
            assert await read_until_closed(r) == b""
        reader, writer = await srv.connect()
        writer.write(REQUEST)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        assert await read_until_closed(reader) == b""  # shed: nothing left to displace
        kept_writer.write(REQUEST)
        assert (await kept_reader.readuntil(b"ok")).startswith(b"HTTP/1.1 200")
        for w in [kept_writer, writer, *served, *(w for _, w in idle)]:
            w.close()


async def test_at_the_cap_with_every_connection_busy_the_newest_is_shed() -> None:
    """When all ``max_connections`` connections have a request in progress, a new one is
    closed at once without an answer (not queued, not a 503 that holds a slot); the busy
    ones are all answered once their requests finish."""
    async with serving(header_timeout=60, max_connections=8) as srv:
        srv.app.hold = asyncio.Event()
        busy = [await srv.connect() for _ in range(8)]
        for _, w in busy:
            w.write(REQUEST)
        async with asyncio.timeout(CLOSE_WITHIN):
            while len(srv.app.bodies) < 8:
                await asyncio.sleep(0.02)
        for _ in range(3):
            reader, writer = await srv.connect()
            writer.write(REQUEST)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            assert await read_until_closed(reader) == b""
            writer.close()
        srv.app.hold.set()
        for r, w in busy:
            assert (await r.readuntil(b"ok")).startswith(b"HTTP/1.1 200")
            w.close()
        assert srv.app.bodies == [2] * 8


async def test_a_graceful_stop_is_not_held_by_idle_or_half_sent_requests() -> None:
    """On stop, connections idle after connect, with trickled headers or a body shorter
    than its Content-Length are closed at once (none was received, nothing to finish),
    while a request in progress is let finish: the server stops well within its
    100 s grace and 300/600 s deadlines."""
    async with serving(grace=100.0, header_timeout=300, body_timeout=600) as srv:
        srv.app.hold = asyncio.Event()
        idle = await srv.connect()
        head = await srv.connect()
        head[1].write(b"POST /echo HTTP/1.1\r\nHost: t\r\n")
        body = await srv.connect()
        body[1].write(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{")
        busy = await srv.connect()
        busy[1].write(REQUEST)
        async with asyncio.timeout(CLOSE_WITHIN):
            while srv.app.bodies != [2]:
                await asyncio.sleep(0.02)
        asyncio.get_running_loop().call_later(0.5, srv.app.hold.set)
        await srv.stop()
        for reader, writer in (idle, head, body):
            assert await read_until_closed(reader) == b""
            writer.close()
        assert (await read_until_closed(busy[0])).startswith(b"HTTP/1.1 200")
        busy[1].close()


@pytest.mark.parametrize("open_files", [1024, 1025, 2048, 4096, 65536, 1 << 20])
@pytest.mark.parametrize("wanted", [8, 1000, 4096, 100_000])
def test_the_connection_cap_leaves_descriptors_for_the_heals(open_files: int, wanted: int) -> None:
    """Whatever ``max_connections`` says, the held connections plus the accepts in flight
    (up to three BACKLOG bursts: accepted, not yet shed, or closed but not yet freed)
    leave RESERVED_FDS open files for Docker, PostgreSQL, the journal and runbooks."""
    cap = connection_cap(wanted, open_files)
    assert 0 < cap <= wanted
    assert open_files - cap - 3 * BACKLOG >= RESERVED_FDS


@pytest.mark.parametrize("open_files", [16, 64, 256, 590])
def test_under_a_tiny_open_files_limit_the_cap_is_a_quarter_of_it(open_files: int) -> None:
    """Below 598 open files there is no room for the reserve and a burst: the cap is a
    quarter of the limit, so most of it is left whatever the connections do."""
    assert connection_cap(4096, open_files) == max(open_files // 4, 1)


def test_serve_raises_the_open_files_soft_limit_to_the_hard_one() -> None:
    """A process started with a low soft RLIMIT_NOFILE (here 256, set on the child only)
    gets it raised to its hard limit."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard <= 256:
        require_service("open files", f"hard limit {hard} leaves nothing to raise")
    code = (
        "import resource; from healer.server import raise_open_files_limit as r; "
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0], r(), "
        "resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)),
    )
    before, returned, after = map(int, out.stdout.split())
    expected = hard if hard != resource.RLIM_INFINITY else 1 << 20
    assert (before, returned, after) == (256, expected, expected)


def test_a_repeated_library_message_is_logged_once_per_interval_with_a_count() -> None:
    """However many times the same message comes (an accept loop out of descriptors,
    a flood of bad requests), one line passes per interval, and the next says how many
    were left out; a different message is not held back by it."""
    now = [100.0]
    limiter = RateLimitFilter(10.0, clock=lambda: now[0])

    def record(msg: str, *args: object) -> logging.LogRecord:
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, msg, args, None)

    for burst in (1, 5000):
        passed = [
            r
            for r in (record("socket.accept() out of system resource") for _ in range(burst))
            if limiter.filter(r)
        ]
        assert len(passed) == 1
        now[0] += 10.0
    assert limiter.filter(other := record("Invalid HTTP request %s", "x"))
    assert other.getMessage() == "Invalid HTTP request x"
    last = record("socket.accept() out of system resource")
    assert limiter.filter(last)
    assert "4999 more like this" in last.getMessage()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        *(
            (key, bad)
            for key in ("header_timeout", "body_timeout", "keep_alive")
            for bad in (0, -1, float("nan"), float("inf"), "soon", 10_000)
        ),
        *(("max_connections", bad) for bad in (0, 7, 2_000_000, 1.5, "many")),
    ],
)
def test_a_bad_server_limit_is_a_config_error_naming_it(key: str, value: object) -> None:
    """Zero, negative, NaN, infinite, unparsable or absurd limits are refused at load,
    each error naming ``server.<key>`` (a NaN deadline would never fire)."""
    with pytest.raises(ConfigError) as info:
        parse_config({"server": {key: value}})
    assert [where for where, _ in info.value.errors] == [f"server.{key}"]


def test_the_server_limits_default_and_parse_durations() -> None:
    """Unset, the limits are the documented defaults; durations take units."""
    assert ServerConfig() == ServerConfig(
        header_timeout=10, body_timeout=30, keep_alive=5, max_connections=4096
    )
    config = parse_config(
        {"server": {"header_timeout": "2s", "body_timeout": "1m", "keep_alive": "500ms"}}
    )
    assert (config.server.header_timeout, config.server.body_timeout, config.server.keep_alive) == (
        2.0,
        60.0,
        0.5,
    )


async def test_a_flood_of_invalid_requests_is_logged_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """uvicorn warns once per malformed request; with healer's rate limit on its logger
    (``serve_app`` puts it there) 50 of them make one line, and each got its 400."""
    rate_limit_records(["uvicorn.error"], every=LOG_EVERY)
    try:
        async with serving() as srv:
            with caplog.at_level(logging.WARNING, logger="uvicorn.error"):
                for _ in range(50):
                    reader, writer = await srv.connect()
                    writer.write(b"\x00\x01 not http\r\n\r\n")
                    assert (await read_until_closed(reader)).startswith(b"HTTP/1.1 400")
                    writer.close()
    finally:
        logger = logging.getLogger("uvicorn.error")
        for limiter in [f for f in logger.filters if isinstance(f, RateLimitFilter)]:
            logger.removeFilter(limiter)
    invalid = [r for r in caplog.records if "Invalid HTTP request" in r.getMessage()]
    assert len(invalid) == 1


@pytest.mark.parametrize("without_uvloop", [False, True], ids=["as-installed", "uvloop-missing"])
def test_the_server_runs_on_uvloop_where_installed_and_on_asyncio_without_it(
    without_uvloop: bool,
) -> None:
    """healer's server settings (and so the bare endpoint's) build their event loop with
    uvloop when it can be imported, and fall back to asyncio's own loop when it cannot
    (a fresh interpreter where ``import uvloop`` fails)."""
    code = (
        ("import sys; sys.modules['uvloop'] = None\n" if without_uvloop else "")
        + "from healer.server import uvicorn_config\n"
        + "config = uvicorn_config(None, host='127.0.0.1', port=0, grace=0)\n"
        + "loop = config.get_loop_factory()()\n"
        + "print(config.loop, type(loop).__module__.split('.')[0])\n"
        + "loop.close()\n"
    )
    try:
        import uvloop  # noqa: F401

        installed = True
    except ImportError:
        installed = False
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    if installed and not without_uvloop:
        assert out == ["uvloop", "uvloop"]
    else:
        assert out == ["asyncio", "asyncio"]
