"""Where healer keeps what must survive a restart, behind one contract.

:class:`Store` (:mod:`healer.store.contract`) is every durable operation the engine, the
HTTP API, the CLI, the safety gates and the follow-ups need; :class:`SqliteStore` is
today's implementation (one SQLite file, :mod:`healer.store.sqlite`). Callers type against
``Store``; only the app factory and the CLI construct a ``SqliteStore``.
"""

from healer.errors import JournalBroken, JournalUnavailable
from healer.store.contract import Store
from healer.store.sqlite.schema import SCHEMA_VERSION
from healer.store.sqlite.store import SqliteStore
from healer.store.types import (
    CircuitRow,
    Decision,
    Disposition,
    FollowUpHeal,
    FollowUpPolicy,
    HealDetail,
    HealPlan,
    HealRow,
    Limits,
    PauseRow,
    ReceivedAlert,
    StepRow,
    TakenHeal,
    alert_key_time,
)

__all__ = [
    "SCHEMA_VERSION",
    "CircuitRow",
    "Decision",
    "Disposition",
    "FollowUpHeal",
    "FollowUpPolicy",
    "HealDetail",
    "HealPlan",
    "HealRow",
    "JournalBroken",
    "JournalUnavailable",
    "Limits",
    "PauseRow",
    "ReceivedAlert",
    "SqliteStore",
    "StepRow",
    "Store",
    "TakenHeal",
    "alert_key_time",
]
