"""The ``safety:`` and per-rule gate keys: defaults, overrides, bounds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from healer.config import ConfigError, parse_config
from healer.gates import SafetyGates
from healer.metrics import Metrics
from healer.notify import Notifiers
from healer.store import Limits, SqliteStore
from healer.timefmt import format_seconds

RULE = {"name": "r", "match": 'alertname="A"', "handler": "test.noop", "params": {"target": "x"}}


def test_safety_defaults() -> None:
    """Without a safety section: cooldown 5m, 3 actions per 1h, circuits close after 1h
    quiet, no min_firing, pauses up to 1d, no notifiers."""
    config = parse_config({})
    assert (
        config.safety.cooldown,
        config.safety.budget.max_actions,
        config.safety.budget.window,
        config.safety.circuit_quiet,
        config.safety.min_firing,
        config.safety.max_pause,
    ) == (300.0, 3, 3600.0, 3600.0, 0.0, 86400.0)
    assert config.notify == []


async def test_rule_keys_override_the_defaults_field_by_field(tmp_path: Path) -> None:
    """A rule's cooldown, min_firing and each budget field override ``safety:``'s; what
    it leaves unset comes from ``safety:``."""
    config = parse_config(
        {
            "safety": {
                "cooldown": "10m",
                "budget": {"max_actions": 5, "window": "2h"},
                "min_firing": "1m",
                "circuit_quiet": "30m",
            },
            "rules": [
                {**RULE, "cooldown": "1m", "budget": {"max_actions": 2}, "min_firing": "0s"},
                {**RULE, "name": "plain"},
            ],
        }
    )
    journal = await SqliteStore.open(tmp_path / "j.db")
    try:
        async with httpx.AsyncClient() as http:
            gates = SafetyGates(
                journal=journal,
                config=config,
                notifiers=Notifiers([], http),
                metrics=Metrics(CollectorRegistry()),
            )
            assert gates.limits("r") == Limits(cooldown=60, max_actions=2, window=7200, quiet=1800)
            assert gates.limits("plain") == Limits(
                cooldown=600, max_actions=5, window=7200, quiet=1800
            )
            assert gates.limits(None) is None
            assert (gates.min_firing("r"), gates.min_firing("plain")) == (0.0, 60.0)
    finally:
        await journal.close()


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"safety": {"budget": {"window": "0s"}}}, "safety.budget.window"),
        ({"safety": {"budget": {"max_actions": 0}}}, "safety.budget.max_actions"),
        ({"safety": {"cooldown": "8d"}}, "safety.cooldown"),
        ({"safety": {"circuit_quiet": "0s"}}, "safety.circuit_quiet"),
        ({"safety": {"min_firing": "2d"}}, "safety.min_firing"),
        ({"safety": {"cooldwn": "1m"}}, "safety.cooldwn"),
        ({"rules": [{**RULE, "budget": {"max_actions": 1, "per": "1h"}}]}, "rules[0].budget.per"),
        ({"rules": [{**RULE, "min_firing": "soon"}]}, "rules[0].min_firing"),
    ],
)
def test_bad_safety_values_are_config_errors(data: dict[str, Any], path: str) -> None:
    """Each bad value is reported at its path."""
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    assert path in [where for where, _ in exc.value.errors]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.4, "0.4s"), (45, "45s"), (90, "1m30s"), (3600, "1h"), (90061, "1d1h1m1s")],
)
def test_durations_read_like_the_config(seconds: float, text: str) -> None:
    """Reasons print durations the way the config writes them."""
    assert format_seconds(seconds) == text
