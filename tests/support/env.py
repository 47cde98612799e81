"""Environment helpers shared by every test layer: CI policy, ports, polling."""

from __future__ import annotations

import math
import os
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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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
