"""Environment helpers shared by every test layer: CI policy, ports, polling."""

from __future__ import annotations

import math
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from typing import NoReturn, TypeVar

import pytest

T = TypeVar("T")

_TRUTHY = {"1", "true", "yes", "on"}


def in_ci() -> bool:
    """True when the ``CI`` environment variable says we run in CI (``CI=true``)."""
    return os.environ.get("CI", "").strip().lower() in _TRUTHY


def require_service(what: str, why: str) -> NoReturn:
    """A real dependency is missing: fail under ``CI=true``, skip otherwise.

    CI provisions every service (see scripts/test), so a missing one there is a
    broken pipeline, never a silently skipped test.
    """
    message = f"{what} unavailable: {why}"
    if in_ci():
        pytest.fail(f"{message} (CI=true: required services must be present)", pytrace=False)
    pytest.skip(message)


# Ports handed out by free_port(): below the kernel's ephemeral range (32768-60999 by
# default, /proc/sys/net/ipv4/ip_local_port_range), where no outgoing connection takes one,
# and a block of its own for each pytest-xdist worker (gw0, gw1, ...), so two workers never
# hand out the same port. A run without xdist uses block 0.
PORT_BASE = 20000
PORT_BLOCK = 1500
_PORT_BLOCKS = 8  # 20000-31999: below 32768


def worker_index() -> int:
    """This pytest-xdist worker's number (``PYTEST_XDIST_WORKER=gw3`` -> 3); 0 without xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    digits = worker.removeprefix("gw")
    return int(digits) if digits.isdigit() else 0


class _PortCursor:
    """Walks this worker's block round-robin from a random start (two runs at once on the
    machine rarely meet), so a port handed out is not handed out again before the other
    ~1,500 have been: a test that has not bound its port yet keeps it."""

    def __init__(self) -> None:
        self.block = -1
        self.next = 0

    def take(self) -> int:
        block = worker_index() % _PORT_BLOCKS
        if block != self.block:
            self.block, self.next = block, random.randrange(PORT_BLOCK)
        start = PORT_BASE + block * PORT_BLOCK
        for _ in range(PORT_BLOCK):
            port = start + self.next
            self.next = (self.next + 1) % PORT_BLOCK
            if _bindable(port):
                return port
        raise RuntimeError(f"no free port in {start}-{start + PORT_BLOCK - 1}")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


_PORTS = _PortCursor()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, from this worker's own block
    (see :data:`PORT_BASE`): no other xdist worker hands it out, and no outgoing
    connection takes it, before the service binds it."""
    return _PORTS.take()


def wait_until(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.1,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``probe`` until it returns something truthy; return that value.

    Bounded both in time (``timeout`` seconds) and in attempts
    (``timeout / interval + 2``). Exceptions listed in ``ignore`` count as "not
    yet". Raises ``TimeoutError`` naming ``what`` and the last result/exception.
    """
    deadline = time.monotonic() + timeout
    attempts = math.ceil(timeout / interval) + 2
    last: object = None
    for _ in range(attempts):
        try:
            result = probe()
        except ignore as exc:
            last = exc
        else:
            if result:
                return result
            last = result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(interval, remaining))
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}; last: {last!r}")


def stop_process(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    """SIGTERM, wait up to ``timeout`` s, then SIGKILL. Returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode
