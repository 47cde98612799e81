"""One PostgreSQL backend as the handlers see it (:class:`Session`): a leaf module, so
the protection rules (healer/pg_protection.py) and the adapter that reads sessions
(healer/postgres_adapter.py) both build on it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from healer.redact import redact_dsn


@dataclass(frozen=True, slots=True)
class Session:
    """One backend from ``pg_stat_activity``, with its place in the lock graph.

    Ages are seconds (``None`` when PostgreSQL does not know them); ``query`` is
    the first 200 characters of the current or last statement. ``backend_start``
    (with ``pid``) identifies the backend: a pid PostgreSQL hands out again belongs
    to a backend with a later start; ``xact_start`` / ``query_start`` identify its
    current transaction and statement."""

    pid: int
    database: str | None
    user: str | None
    application_name: str
    client_addr: str | None
    backend_type: str
    state: str | None
    wait_event_type: str | None
    wait_event: str | None
    xact_age: float | None
    query_age: float | None
    state_age: float | None
    query: str
    superuser: bool
    blocked_by: tuple[int, ...] = ()
    blocking: tuple[int, ...] = field(default=())
    backend_start: datetime | None = None
    xact_start: datetime | None = None
    query_start: datetime | None = None

    def evidence(self) -> dict[str, Any]:
        """What a heal records about a session it acted on or considered."""
        return {
            "pid": self.pid,
            "user": self.user,
            "application_name": self.application_name,
            "database": self.database,
            "state": self.state,
            "wait": f"{self.wait_event_type}:{self.wait_event}" if self.wait_event_type else None,
            "xact_age_s": _round(self.xact_age),
            "query_age_s": _round(self.query_age),
            "state_age_s": _round(self.state_age),
            "query": redact_dsn(self.query),
            "blocked_by": list(self.blocked_by),
            "blocking": len(self.blocking),
            "backend_start": _iso(self.backend_start),
        }


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def _iso(v: datetime | None) -> str | None:
    return None if v is None else v.isoformat()
