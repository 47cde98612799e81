"""The suite's shorthand over :mod:`healer.testing` for calling one handler directly:

    ctx, recorder = heal_context(labels={"alertname": "DiskFull"}, annotations={"summary": "."})
    check = await handler.check(ctx, params)
    recorder.of("note")      # what the handler passed to ``ctx.record``, by kind

No adapter is given: a handler that used Docker or PostgreSQL here would raise
``healer.testing.NoAdapter`` rather than talk to a fake.
"""

from __future__ import annotations

from datetime import UTC, datetime

from healer.testing import Recorder, RecordingContext, make_alert
from healer.testing import heal_context as kit_context


def heal_context(
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    handler: str = "test",
    rule: str = "test-rule",
    heal_id: str = "00000000000000aa",
    dry_run: bool = False,
) -> tuple[RecordingContext, Recorder]:
    """A context for one direct handler call; ``labels=None`` means a manual heal (no alert)."""
    alert = None
    if labels is not None:
        alert = make_alert(
            labels,
            annotations,
            fingerprint="fedcba9876543210",
            starts_at=datetime(2026, 11, 23, 8, 0, tzinfo=UTC),
        )
    ctx = kit_context(alert, handler=handler, rule=rule, heal_id=heal_id, dry_run=dry_run)
    return ctx, ctx.recorder
