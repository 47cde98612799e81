"""healer in-process: the real app factory and lifespan, driven through httpx's ASGI
transport; the one harness of the tests that need no healer process.

async with running_healer(config, handlers=..., secrets=...) as h:
    response = await h.client.post("/api/v1/alerts", json=payload)
    [heal_id] = await h.fire(alert("Poke", {"target": "t1"}))   # the started heal ids
    heal = await h.wait_for_outcome(heal_id)
    await h.idle()                       # no heal task left running
    h.noop                               # the ``test.noop`` handler, when registered

``web_config`` / ``web_alert`` are the world of tests/unit/test_{receiver,executor,
http_heals,health,auth}.py (fixtures in tests/unit/conftest.py): rules that run
``test.noop`` on ``web-*`` targets, and a Prometheus nobody answers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from bench.noop import Noop
from healer.app import create_app
from healer.config import Secrets, parse_config
from healer.plugins import HandlerRegistry
from healer.services import Services
from healer.store import SqliteStore, Store
from tests.support.inprocess.noop import NAME as NOOP
from tests.support.inprocess.payloads import alert, payload

ADMIN = "admin-token"  # running_healer's admin token unless ``secrets`` say otherwise


async def wait_for_heal(journal: Store, heal_id: str, timeout: float) -> dict[str, Any]:
    """The heal once it has an outcome; TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        heal = await journal.get_heal(heal_id)
        if heal is not None and heal["outcome"] is not None:
            return heal
        if time.monotonic() > deadline:
            raise TimeoutError(f"heal {heal_id} has no outcome after {timeout}s: {heal}")
        await asyncio.sleep(0.05)


def healer_app(
    config: dict[str, Any],
    *,
    handlers: HandlerRegistry,
    secrets: Secrets,
    registry: CollectorRegistry | None = None,
) -> FastAPI:
    """The real app for ``config`` (lifespan not started), metrics in its own registry."""
    return create_app(
        parse_config(config, handlers),
        secrets,
        handlers=handlers,
        registry=registry if registry is not None else CollectorRegistry(),
    )


@dataclass
class InProcessHealer:
    app: FastAPI
    client: httpx.AsyncClient
    registry: CollectorRegistry
    admin_headers: dict[str, str]
    handlers: HandlerRegistry

    @property
    def services(self) -> Services:
        svc: Services = self.app.state.services
        return svc

    @property
    def journal(self) -> Store:
        return self.services.journal

    @property
    def noop(self) -> Noop:
        """The ``test.noop`` handler this healer runs."""
        handler = self.handlers.get(NOOP)
        assert isinstance(handler, Noop), f"no {NOOP} registered"
        return handler

    async def post(self, body: Any, **kw: Any) -> httpx.Response:
        """POST ``body`` to the webhook."""
        return await self.client.post("/api/v1/alerts", json=body, **kw)

    async def fire(self, *alerts: dict[str, Any]) -> list[str]:
        """Post one group of ``alerts``; the started heal ids."""
        resp = await self.post(payload(*alerts))
        assert resp.status_code == 200, resp.text
        return [s["heal_id"] for s in resp.json()["started"]]

    async def wait_for_outcome(self, heal_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """Poll the journal (bounded) until the heal has an outcome."""
        return await wait_for_heal(self.journal, heal_id, timeout)

    async def idle(self, timeout: float = 30.0) -> None:
        """Wait (bounded) until no heal task is running."""
        deadline = time.monotonic() + timeout
        while self.services.executor.running:
            if time.monotonic() > deadline:
                raise TimeoutError(f"heals still running after {timeout}s")
            await asyncio.sleep(0.05)

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        return self.registry.get_sample_value(name, labels or {})

    def heals_total(self, outcome: str, rule: str = "poke-web", handler: str = NOOP) -> float:
        """healer_heals_total for ``rule`` (``web_config``'s poke-web unless given)."""
        return (
            self.sample(
                "healer_heals_total", {"rule": rule, "handler": handler, "outcome": outcome}
            )
            or 0.0
        )


@asynccontextmanager
async def running_healer(
    config: dict[str, Any],
    *,
    handlers: HandlerRegistry | None = None,
    secrets: Secrets | None = None,
) -> AsyncIterator[InProcessHealer]:
    handlers = handlers if handlers is not None else HandlerRegistry.from_entry_points()
    secrets = secrets if secrets is not None else Secrets(admin_token=ADMIN)
    registry = CollectorRegistry()
    app = healer_app(config, handlers=handlers, secrets=secrets, registry=registry)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://healer") as client:
            headers = (
                {"Authorization": f"Bearer {secrets.admin_token}"} if secrets.admin_token else {}
            )
            yield InProcessHealer(app, client, registry, headers, handlers)


async def set_query_only(journal: Store, on: bool) -> None:
    """Make every write of a SQLite journal fail inside SQLite (as a full or read-only disk
    would), or stop doing so."""
    assert isinstance(journal, SqliteStore)
    await journal.writer.call(lambda: journal.writer.conn().execute(f"PRAGMA query_only={int(on)}"))


def noop_config(journal: Path, **verify: str) -> dict[str, Any]:
    """A config with one rule, ``poke``: alertname="Poke" -> the ``test.noop`` handler on
    ``labels.target``. Nothing listens at its Prometheus, so verification ends
    ``unverified`` (quickly) unless ``verify`` says otherwise."""
    return {
        "journal": str(journal),
        "prometheus": {"url": "http://127.0.0.1:9", "timeout": "0.2s"},
        "allow": [{"kind": "test", "name": "*"}],
        "rules": [
            {
                "name": "poke",
                "match": 'alertname="Poke"',
                "handler": "test.noop",
                "params": {"target": "{{ labels.target }}"},
                "verify": {"stable_for": "0s", "timeout": "0.2s", **verify},
            }
        ],
    }


def web_config(tmp_path: Path, port: int) -> dict[str, Any]:
    """Rules running ``test.noop`` on ``labels.instance``: ``poke-web`` (WebDown),
    ``poke-slow`` (WebSlow), the dry-run ``rehearse`` (WebRehearse) and ``explode``
    (Explode; ``labels.step`` says which step raises); ``web-*`` targets allowed;
    Prometheus at ``port`` (nobody there), so a heal that acts ends ``unverified``
    after a 0.3 s verify timeout."""
    target = {"target": "{{ labels.instance }}"}
    return {
        "journal": str(tmp_path / "journal.db"),
        "shutdown_grace": "2s",
        "prometheus": {
            "url": f"http://127.0.0.1:{port}",
            "timeout": "0.5s",
            "evaluation_interval": "50ms",
        },
        "verify": {"timeout": "0.3s", "stable_for": "0s"},
        "allow": [{"kind": "test", "name": "web-*"}],
        "rules": [
            {
                "name": "poke-web",
                "match": ['alertname="WebDown"'],
                "handler": "test.noop",
                "params": target,
            },
            {
                "name": "poke-slow",
                "match": ['alertname="WebSlow"'],
                "handler": "test.noop",
                "params": target,
            },
            {
                "name": "rehearse",
                "match": ['alertname="WebRehearse"'],
                "handler": "test.noop",
                "params": target,
                "dry_run": True,
            },
            {
                "name": "explode",
                "match": 'alertname="Explode"',
                "handler": "test.noop",
                "params": {**target, "explode_in": "{{ labels.step }}"},
            },
        ],
    }


def web_alert(
    name: str = "WebDown",
    instance: str = "web-1",
    *,
    status: str = "firing",
    starts: str = "2024-05-01T10:00:00Z",
    **labels: str,
) -> dict[str, Any]:
    """An alert of ``web_config``'s world (fingerprint derived from its labels)."""
    return alert(
        name,
        {"instance": instance, **labels},
        status=status,
        starts_at=starts,
        ends_at="2024-05-01T10:05:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        annotations={"summary": "s"},
        generator_url="http://prometheus/graph",
    )


# ``start(secrets=None, **config_overrides)``: the fixture of tests/unit/conftest.py.
Start = Callable[..., AbstractAsyncContextManager[InProcessHealer]]


def timeline_event(heal: dict[str, Any], kind: str) -> dict[str, Any]:
    """The data of the first ``kind`` entry of a finished heal's timeline (fails, listing
    the kinds there are, when there is none)."""
    found = [e["data"] for e in heal["timeline"] if e["kind"] == kind]
    assert found, f"no {kind!r} in {[e['kind'] for e in heal['timeline']]}"
    data: dict[str, Any] = found[0]
    return data
