"""healer in-process: the real app factory and lifespan, driven through httpx's ASGI transport.

async with running_healer(config, handlers=..., secrets=...) as h:
    response = await h.client.post("/api/v1/alerts", json=payload)
    heal = await h.wait_for_outcome(heal_id)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from healer.app import create_app
from healer.config import Secrets, parse_config
from healer.plugins import HandlerRegistry
from healer.services import Services
from healer.store import Store


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


@dataclass
class InProcessHealer:
    app: FastAPI
    client: httpx.AsyncClient
    registry: CollectorRegistry
    admin_headers: dict[str, str]

    @property
    def services(self) -> Services:
        svc: Services = self.app.state.services
        return svc

    async def wait_for_outcome(self, heal_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """Poll the journal (bounded) until the heal has an outcome."""
        return await wait_for_heal(self.services.journal, heal_id, timeout)

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        return self.registry.get_sample_value(name, labels or {})


@asynccontextmanager
async def running_healer(
    config: dict[str, Any],
    *,
    handlers: HandlerRegistry | None = None,
    secrets: Secrets | None = None,
) -> AsyncIterator[InProcessHealer]:
    handlers = handlers if handlers is not None else HandlerRegistry.from_entry_points()
    secrets = secrets if secrets is not None else Secrets(admin_token="admin-token")
    registry = CollectorRegistry()
    app = create_app(parse_config(config, handlers), secrets, handlers=handlers, registry=registry)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://healer") as client:
            headers = (
                {"Authorization": f"Bearer {secrets.admin_token}"} if secrets.admin_token else {}
            )
            yield InProcessHealer(app, client, registry, headers)


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


def alert_payload(
    labels: dict[str, str],
    *,
    fingerprint: str = "0123456789abcdef",
    status: str = "firing",
    starts_at: datetime | None = None,
) -> dict[str, Any]:
    """An Alertmanager v4 webhook body with one alert."""
    starts = (starts_at or datetime(2026, 11, 23, 8, 0, tzinfo=UTC)).isoformat()
    return {
        "version": "4",
        "status": status,
        "receiver": "healer",
        "groupKey": "{}:{}",
        "groupLabels": {},
        "commonLabels": labels,
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "truncatedAlerts": 0,
        "alerts": [
            {
                "status": status,
                "labels": labels,
                "annotations": {},
                "startsAt": starts,
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "",
                "fingerprint": fingerprint,
            }
        ],
    }


def timeline_event(heal: dict[str, Any], kind: str) -> dict[str, Any]:
    """The data of the first ``kind`` entry of a finished heal's timeline (fails, listing
    the kinds there are, when there is none)."""
    found = [e["data"] for e in heal["timeline"] if e["kind"] == kind]
    assert found, f"no {kind!r} in {[e['kind'] for e in heal['timeline']]}"
    data: dict[str, Any] = found[0]
    return data
