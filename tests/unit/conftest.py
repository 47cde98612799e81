"""Fixtures for unit tests: the no-op handler plugin (bench/noop.py) recording its calls,
and in-process healers (tests/support/inprocess/inproc.py) of ``web_config``'s world.

    noop          a fresh ``Noop`` registered as ``test.noop``: ``.checks`` / ``.acts``
                  list the params it was called with; set ``.gate`` to an
                  ``asyncio.Event`` to hold ``act``, ``.check_gate`` to hold ``check``
                  (after it is recorded in ``.checks``), ``.notes`` to timeline kinds
                  ``act`` adds with ``ctx.record_soon``
    handlers      a ``HandlerRegistry`` from the real entry points plus ``noop``
    dead_port     a loopback port nobody listens on (Prometheus "unreachable")
    start         ``start(secrets=None, **config_overrides)``: an async context manager
                  running healer on ``web_config`` (no tokens unless ``secrets``); on
                  exit it waits for running heals first
    healer        ``start()`` entered
    admin_healer  started with the admin token ``ADMIN``, its client sending it
    backend       each store implementation on fresh, real storage (SQLite, PostgreSQL;
                  tests/support/inprocess/stores.py)
    store         a store opened on ``backend``

Nothing here fakes Docker or PostgreSQL: the no-op handler never touches either, and
the stores run on a real file and a real server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from bench.noop import Noop
from healer.config import Secrets
from healer.plugins import HandlerRegistry
from tests.support.env import free_port
from tests.support.inprocess.inproc import ADMIN, InProcessHealer, Start, running_healer, web_config
from tests.support.inprocess.noop import NAME, recording_noop
from tests.support.inprocess.stores import backend, store  # noqa: F401 - fixtures, registered


@pytest.fixture
def noop() -> Noop:
    return recording_noop()


@pytest.fixture
def handlers(noop: Noop) -> HandlerRegistry:
    return HandlerRegistry.from_entry_points((NAME, noop))


@pytest.fixture(scope="module")
def dead_port() -> int:
    """A loopback port nobody listens on: Prometheus "unreachable", answered at once."""
    return free_port()


@pytest.fixture
def start(tmp_path: Path, handlers: HandlerRegistry, dead_port: int) -> Start:
    @asynccontextmanager
    async def _start(secrets: Secrets | None = None, **over: Any) -> AsyncIterator[InProcessHealer]:
        config = {**web_config(tmp_path, dead_port), **over}
        async with running_healer(config, handlers=handlers, secrets=secrets or Secrets()) as h:
            try:
                yield h
            finally:
                await h.idle()

    return _start


@pytest.fixture
async def healer(start: Start) -> AsyncIterator[InProcessHealer]:
    async with start() as h:
        yield h


@pytest.fixture
async def admin_healer(start: Start) -> AsyncIterator[InProcessHealer]:
    async with start(Secrets(admin_token=ADMIN)) as h:
        h.client.headers["Authorization"] = f"Bearer {ADMIN}"
        yield h
