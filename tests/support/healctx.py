"""A HealContext for calling one handler directly, outside the executor.

    ctx = heal_context(labels={"alertname": "DiskFull"}, annotations={"summary": "..."})
    check = await handler.check(ctx, params)
    ctx.records      # what the handler passed to ``ctx.record``, as (kind, data) pairs

The Docker and PostgreSQL adapters are real but never connected (nothing here needs
them); a handler that used them would fail loudly rather than talk to a fake.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from healer.api import Alert, HealContext
from healer.docker_adapter import DockerAdapter
from healer.postgres_adapter import PostgresAdapter


@dataclass
class Recorder:
    records: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def __call__(self, kind: str, data: dict[str, Any]) -> None:
        self.records.append((kind, data))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [data for k, data in self.records if k == kind]


def heal_context(
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    handler: str = "test",
    rule: str = "test-rule",
    heal_id: str = "00000000000000aa",
    dry_run: bool = False,
) -> tuple[HealContext, Recorder]:
    """A context for one direct handler call; ``labels=None`` means a manual heal (no alert)."""
    alert = None
    if labels is not None:
        alert = Alert(
            fingerprint="fedcba9876543210",
            status="firing",
            labels=labels,
            annotations=annotations or {},
            starts_at=datetime(2026, 11, 23, 8, 0, tzinfo=UTC),
        )
    recorder = Recorder()
    ctx = HealContext(
        heal_id=heal_id,
        rule=rule,
        handler=handler,
        alert=alert,
        dry_run=dry_run,
        log=structlog.get_logger("test").bind(heal_id=heal_id),
        docker=DockerAdapter("unix:///nonexistent/docker.sock"),
        postgres=PostgresAdapter({}, {}).for_heal(),
        record=recorder,
    )
    return ctx, recorder
