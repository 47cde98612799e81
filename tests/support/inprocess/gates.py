"""Helpers for the safety-gate tests: a no-op config with two rules and tunable gates,
and firing one alert at a time.

    config = gates_config(tmp_path, safety={"cooldown": "1h"}, notify=[...])
    async with running_healer(config, handlers=handlers, secrets=with_notify(url)) as h:
        heal = await fire_and_wait(h, "t1", n=0)     # n: the n-th firing (new startsAt)
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from healer.config import Secrets
from tests.support.inprocess.inproc import InProcessHealer, noop_config
from tests.support.inprocess.payloads import alert_payload

ADMIN = "admin-token"
BASE = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)  # long past: min_firing never waits


def gates_config(
    tmp_path: Path,
    *,
    safety: dict[str, Any] | None = None,
    rule: dict[str, Any] | None = None,
    notify: list[dict[str, Any]] | None = None,
    **top: Any,
) -> dict[str, Any]:
    """Rules ``poke`` (alertname="Poke") and ``poke2`` (alertname="Poke2"), both
    ``test.noop`` on ``labels.target``. Gates default to *off* (cooldown 0, budget 100) so
    each test turns on only the one it is about; ``rule`` overrides keys of ``poke`` only."""
    config = noop_config(tmp_path / "journal.db")
    config["shutdown_grace"] = "2s"
    config["safety"] = {
        "cooldown": "0s",
        "budget": {"max_actions": 100, "window": "1h"},
        **(safety or {}),
    }
    poke = config["rules"][0]
    config["rules"].append({**poke, "name": "poke2", "match": 'alertname="Poke2"'})
    poke.update(rule or {})
    if notify is not None:
        config["notify"] = notify
    config.update(top)
    return config


def with_notify(*urls: str) -> Secrets:
    return Secrets(admin_token=ADMIN, notify_urls=tuple(urls))


def webhook_notifier(**over: Any) -> dict[str, Any]:
    """A generic webhook notifier whose URL the test passes in ``Secrets.notify_urls``."""
    return {
        "kind": "webhook",
        "url_env": "UNUSED_IN_TESTS",
        "timeout": "2s",
        "retries": 0,
        "backoff": "0s",
        **over,
    }


def fingerprint(name: str, target: str) -> str:
    return hashlib.sha256(f"{name}/{target}".encode()).hexdigest()[:16]


async def fire(
    h: InProcessHealer,
    target: str = "t1",
    n: int = 0,
    *,
    name: str = "Poke",
    starts: datetime | None = None,
    status: str = "firing",
) -> str | None:
    """Post one alert (the ``n``-th firing of ``name`` on ``target``); the started heal id."""
    labels = {"alertname": name, "target": target}
    resp = await h.client.post(
        "/api/v1/alerts",
        json=alert_payload(
            labels,
            fingerprint=fingerprint(name, target),
            status=status,
            starts_at=starts or BASE + timedelta(minutes=n),
        ),
    )
    assert resp.status_code == 200, resp.text
    started = resp.json()["started"]
    return str(started[0]["heal_id"]) if started else None


async def fire_and_wait(
    h: InProcessHealer, target: str = "t1", n: int = 0, *, name: str = "Poke"
) -> dict[str, Any]:
    heal_id = await fire(h, target, n, name=name)
    assert heal_id is not None
    return await h.wait_for_outcome(heal_id, timeout=15)


async def until(
    predicate: Callable[[], Any], *, timeout: float = 10.0, what: str = "condition"
) -> None:
    """Await until ``predicate()`` (sync or async) is truthy; bounded in time and count."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.02) + 2):
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def kinds(heal: dict[str, Any]) -> list[str]:
    return [e["kind"] for e in heal["timeline"]]
