"""The odoo.* handlers' contract without services: params they accept and refuse, the
config-time check of a number taken from an alert label, and how container memory is
read from a Docker stats sample (cgroup v1 and v2)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from handlers.odoo import (
    RestartLongpoll,
    RestartLongpollParams,
    RestartWorkers,
    RestartWorkersParams,
    UnlockCron,
    UnlockCronParams,
)
from healer.config import RuleConfig
from healer.docker_adapter import memory_usage
from healer.plugins import HandlerRegistry


def test_the_three_handlers_load_from_the_real_entry_points() -> None:
    """odoo.unlock_cron needs PostgreSQL, the two restarts need Docker."""
    registry = HandlerRegistry.from_entry_points()
    assert isinstance(registry.get("odoo.unlock_cron"), UnlockCron)
    assert isinstance(registry.get("odoo.restart_workers"), RestartWorkers)
    assert isinstance(registry.get("odoo.restart_longpoll"), RestartLongpoll)
    assert UnlockCron.requires == frozenset({"postgres"})
    assert RestartWorkers.requires == RestartLongpoll.requires == frozenset({"docker"})


def test_unlock_cron_params_parse_durations_and_a_label_cron_id() -> None:
    """Durations take '10m'-style strings; cron_id (from a label: a string) becomes an int."""
    p = UnlockCronParams.model_validate(
        {"database": "odoo", "overdue": "30m", "min_held": "2m", "cron_id": "42"}
    )
    assert (p.overdue, p.min_held, p.cron_id) == (1800.0, 120.0, 42)
    defaults = UnlockCronParams.model_validate({"database": "odoo"})
    assert (defaults.overdue, defaults.min_held, defaults.cron_id) == (600.0, 300.0, None)


@pytest.mark.parametrize(
    "params",
    [
        {"database": "odoo", "cron_id": "1; DROP TABLE ir_cron"},
        {"database": "odoo", "cron_id": "0"},
        {"database": "odoo db"},
        {"database": "odoo", "overdue": "ten minutes"},
        {"database": "odoo", "datname": "x" * 64},
        {"database": "odoo", "min_hold": "5m"},
    ],
)
def test_unlock_cron_refuses_bad_params(params: dict[str, Any]) -> None:
    """Hostile or mistyped values never reach SQL: the params model refuses them."""
    with pytest.raises(ValidationError):
        UnlockCronParams.model_validate(params)


def test_restart_workers_takes_several_services_in_order() -> None:
    """service and services combine in the order written; the stop timeout defaults to a
    graceful 30 s and health_timeout parses durations."""
    p = RestartWorkersParams.model_validate(
        {
            "service": "odoo-core",
            "services": ["odoo-accounting", "odoo-marketing"],
            "project": "odoo",
            "health_timeout": "2m",
        }
    )
    assert p.all_services() == ["odoo-core", "odoo-accounting", "odoo-marketing"]
    assert (p.stop_timeout, p.health_timeout) == (30, 120.0)


@pytest.mark.parametrize(
    ("model", "params", "message"),
    [
        (RestartWorkersParams, {}, "give 'containers'"),
        (RestartWorkersParams, {"project": "odoo", "containers": ["odoo-1"]}, "'project' narrows"),
        (RestartWorkersParams, {"services": ["odoo;rm -rf /"]}, "pattern"),
        (RestartLongpollParams, {"services": ["odoo-longpoll"]}, "Extra inputs"),
        (RestartLongpollParams, {"service": "odoo", "health_timeout": "1h"}, "less than or equal"),
    ],
)
def test_restart_params_refuse_what_cannot_be_done(
    model: type, params: dict[str, Any], message: str
) -> None:
    """No selector, a project without a service, a hostile name, a key the handler does not
    have, or a health wait above 30 minutes: refused with a message saying which."""
    with pytest.raises(ValidationError, match=message):
        model.model_validate(params)


def test_a_number_from_an_alert_label_passes_the_config_check() -> None:
    """`cron_id: "{{ labels.cron_id }}"` is judged when the alert arrives, so check-config
    accepts it; a literal that is no number is still reported at start-up."""
    registry = HandlerRegistry.from_entry_points()

    def errors(cron_id: str) -> list[tuple[str, str]]:
        rule = RuleConfig.model_validate(
            {
                "name": "cron",
                "match": 'alertname="OdooCronStuck"',
                "handler": "odoo.unlock_cron",
                "params": {"database": "odoo", "cron_id": cron_id},
            }
        )
        return registry.validate_rule_params(rule, "rules[0]")

    assert errors("{{ labels.cron_id }}") == []
    assert [where for where, _ in errors("seven")] == ["rules[0].params.cron_id"]
    assert [where for where, _ in errors("job-{{ labels.cron_id }}")] == ["rules[0].params.cron_id"]


def test_memory_is_the_working_set_on_cgroup_v1_and_v2() -> None:
    """usage minus inactive page cache (v1: total_inactive_file, v2: inactive_file), the
    limit as reported, and nothing invented for a stopped container."""
    v1 = {
        "memory_stats": {
            "usage": 50_000_000,
            "limit": 67_108_864,
            "stats": {"total_inactive_file": 10_000_000, "inactive_file": 1, "cache": 20_000_000},
        }
    }
    v2 = {
        "memory_stats": {
            "usage": 50_000_000,
            "limit": 67_108_864,
            "stats": {"inactive_file": 5_000_000, "anon": 40_000_000},
        }
    }
    assert memory_usage(v1) == {"usage": 40_000_000, "limit": 67_108_864, "raw_usage": 50_000_000}
    assert memory_usage(v2)["usage"] == 45_000_000
    assert memory_usage({"memory_stats": {}}) == {"usage": None, "limit": None, "raw_usage": None}
