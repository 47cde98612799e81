"""Every duration of the built-in handlers' params is a ``healer.api.Duration``: a number
of seconds or a Prometheus-style string ("2m"), the same in every handler."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from pydantic import TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from handlers.docker import RestartParams
from handlers.odoo import RestartLongpollParams
from healer.plugins import HandlerRegistry

# A field whose name says it is a length of time.
DURATION_WORDS = ("timeout", "wait", "age", "interval", "sample", "older_than", "duration")
DURATION_WORDS += ("idle", "overdue", "held", "_seconds", "_s")


def _duration_fields() -> list[tuple[str, str, FieldInfo]]:
    registry = HandlerRegistry.from_entry_points()
    found = []
    for name in registry:
        handler = registry.get(name)
        assert handler is not None
        if not type(handler).__module__.startswith("handlers."):
            continue  # built-ins only
        for field, info in handler.Params.model_fields.items():
            if any(field.endswith(w) or field.startswith(w) for w in DURATION_WORDS):
                found.append((name, field, info))
    return found


DURATION_FIELDS = _duration_fields()


def _adapter(info: FieldInfo) -> TypeAdapter[Any]:
    return TypeAdapter(Annotated[info.annotation, *info.metadata])  # type: ignore[name-defined]


def test_the_scan_finds_the_known_durations() -> None:
    """The name scan is not vacuous: it finds the durations of every built-in family."""
    found = {(h, f) for h, f, _ in DURATION_FIELDS}
    assert {
        ("docker.restart", "stop_timeout"),
        ("docker.restart", "health_timeout"),
        ("exec", "timeout"),
        ("files.prune", "older_than"),
        ("odoo.restart_workers", "stop_timeout"),
        ("odoo.restart_longpoll", "health_timeout"),
        ("odoo.unlock_cron", "sample"),
        ("postgres.terminate_blockers", "min_wait"),
        ("postgres.cancel_slow", "min_duration"),
        ("postgres.terminate_idle", "min_idle"),
    } <= found


@pytest.mark.parametrize(
    ("handler", "field", "info"), DURATION_FIELDS, ids=[f"{h}.{f}" for h, f, _ in DURATION_FIELDS]
)
def test_a_duration_param_takes_a_string_or_a_number(
    handler: str, field: str, info: FieldInfo
) -> None:
    """ "2s" and 2 both validate to 2.0 seconds; a word that is no duration is refused."""
    adapter = _adapter(info)
    assert adapter.validate_python("2s") == 2.0
    assert adapter.validate_python(2) == 2.0
    with pytest.raises(ValidationError):
        adapter.validate_python("soon")


def test_docker_restart_takes_minutes_like_odoo() -> None:
    """`health_timeout: 2m` works in docker.restart as in odoo.*; a fractional stop
    timeout is kept (rounded up to whole seconds only when Docker is called)."""
    docker = RestartParams.model_validate(
        {"containers": ["web"], "health_timeout": "2m", "stop_timeout": "1.5s"}
    )
    odoo = RestartLongpollParams.model_validate({"containers": ["web"], "health_timeout": "2m"})
    assert docker.health_timeout == odoo.health_timeout == 120.0
    assert docker.stop_timeout == 1.5
