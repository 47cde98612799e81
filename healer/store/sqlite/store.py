"""SqliteStore: the store contract (:class:`healer.store.contract.Store`) on one SQLite
file, composed of the writer (one connection, group commit) and one module per concern,
each owning its tables: alerts, heals, safety, followups. The schema is versioned
(:mod:`healer.store.sqlite.schema`).

Leases on SQLite: the file is used by one process (healer on one host), so a lease is
alive only while the store object that holds it is open *in this process* (``_LIVE``)
and its expiry has not passed. A new process therefore takes over, at its first
:meth:`SqliteStore.take_over`, every unfinished heal (a previous process, killed or
stopped, holds nothing): today's immediate resume at start. Two store objects on one
file in one process (the tests' two replicas) see each other's leases live until they
expire, as PostgreSQL replicas do.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from healer.outcomes import Outcome, Phase
from healer.redact import redact_dsn
from healer.store import types as st
from healer.store.sqlite import alerts, check, followups, heals, safety
from healer.store.sqlite.writer import SqliteWriter

# ingest()'s parameter ``alerts`` hides the module of that name.
_ingest = alerts.ingest_batch

# The lease tokens of the stores open in this process (see the module's docstring).
_LIVE: set[str] = set()


class SqliteStore:
    def __init__(self, writer: SqliteWriter, replica: st.Replica | None = None) -> None:
        self.writer = writer
        self.path = writer.path
        self.replica = replica if replica is not None else st.Replica()
        _LIVE.add(self.replica.token)

    # ---- lifecycle ---------------------------------------------------------------------

    @classmethod
    async def open(cls, path: Path, replica: st.Replica | None = None) -> SqliteStore:
        """Open (or create) the journal, migrate it and check its pages
        (``PRAGMA quick_check``); any problem is a JournalUnavailable naming the file.
        ``replica``: who writes (default: this host and pid, 15 s leases)."""
        return cls(await SqliteWriter.open(path), replica)

    @staticmethod
    def check_can_open(path: Path) -> None:
        """Open, migrate and check the journal once, synchronously, then close it:
        ``healer serve`` does this before listening, so that a bad journal is one line
        naming the file and exit 1, not a traceback. Raises JournalUnavailable."""
        SqliteWriter.check_can_open(path)

    @staticmethod
    def schema_version(path: Path) -> int:
        """The file's schema version, read-only (0: no file, or an empty one)."""
        if not path.is_file():
            return 0
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return int(db.execute("PRAGMA user_version").fetchone()[0])
        finally:
            db.close()

    @staticmethod
    def check_file(path: Path) -> list[str]:
        """What is wrong with the journal file at ``path`` (empty: nothing), read-only."""
        return check.check_file(path)

    async def close(self) -> None:
        _LIVE.discard(self.replica.token)
        await self.writer.close()

    async def ping(self) -> None:
        now = time.time()
        await self.writer.transaction(lambda db: db.execute(
            "INSERT INTO probe (id, at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET"
            " at = excluded.at", (now,)))

    # ---- ingest ------------------------------------------------------------------------

    async def ingest(self, alerts: Sequence[st.ReceivedAlert], match: st.Match, *,
                     body: str | None = None, received_at: float | None = None
                     ) -> list[st.Disposition]:
        text, plans = await st.prepare_ingest(alerts, match, body)
        now = time.time()
        return await self.writer.transaction(
            lambda db: _ingest(db, alerts, plans, now, received_at, text, self.replica))

    async def alert_counts(self) -> dict[str, int]:
        return await self.writer.read(alerts.alert_counts)

    async def alert_resolved_at(self, alert: st.AlertKey) -> float | None:
        return await self.writer.read(lambda db: alerts.resolved_at(db, alert))

    async def resolved_alerts(self, fingerprints: Sequence[str]) -> dict[st.AlertKey, float]:
        return await self.writer.read(lambda db: alerts.resolved_alerts(db, fingerprints))

    # ---- heals and timelines -----------------------------------------------------------

    async def create_manual_heal(self, plan: st.HealPlan, labels: dict[str, str],
                                 annotations: dict[str, str]) -> str:
        now = time.time()
        return await self.writer.transaction(lambda db: heals.insert_heal(
            db, plan, None, "manual", now, self.replica, labels, annotations))

    async def add_event(self, heal_id: str, phase: str, kind: str,
                        data: dict[str, Any], *, fenced: bool = False) -> None:
        await self.event_soon(heal_id, phase, kind, data, fenced=fenced)

    def event_soon(self, heal_id: str, phase: str, kind: str,
                   data: dict[str, Any], *, fenced: bool = False) -> asyncio.Future[None]:
        now, me = time.time(), self.replica

        def write(db: sqlite3.Connection) -> None:
            if fenced:
                heals.fence(db, heal_id, me)
            heals.event(db, heal_id, phase, kind, data, now, me)
        return self.writer.submit(write)

    async def set_phase(self, heal_id: str, phase: Phase, *,
                        targets: list[str] | None = None) -> None:
        await self.set_phase_soon(heal_id, phase, targets=targets)

    def set_phase_soon(self, heal_id: str, phase: Phase, *,
                       targets: list[str] | None = None) -> asyncio.Future[None]:
        return self.writer.submit(
            lambda db: heals.set_phase(db, heal_id, phase, targets, self.replica))

    async def interrupt(self, heal_id: str, phase: Phase, reason: str,
                        durations: dict[str, float]) -> None:
        now = time.time()
        await self.writer.transaction(
            lambda db: heals.interrupt(db, heal_id, phase, reason, durations, now,
                                       self.replica))

    async def finish(self, heal_id: str, outcome: Outcome, reason: str,
                     durations: dict[str, float]) -> None:
        await self.finish_soon(heal_id, outcome, reason, durations)

    def finish_soon(self, heal_id: str, outcome: Outcome, reason: str,
                    durations: dict[str, float]) -> asyncio.Future[None]:
        now = time.time()
        reason = redact_dsn(reason)
        return self.writer.submit(
            lambda db: heals.finish(db, heal_id, outcome, reason, durations, now,
                                    self.replica))

    # ---- history reads -----------------------------------------------------------------

    async def get_heal(self, heal_id: str) -> dict[str, Any] | None:
        return await self.writer.read(lambda db: heals.get_heal(db, heal_id))

    async def list_heals(self, *, rule: str | None = None, outcome: str | None = None,
                         target: str | None = None, limit: int = 50,
                         before: float | None = None) -> list[dict[str, Any]]:
        return await self.writer.read(lambda db: heals.list_heals(
            db, rule=rule, outcome=outcome, target=target, limit=limit, before=before))

    async def unfinished(self) -> list[dict[str, Any]]:
        return await self.writer.read(heals.unfinished)

    # ---- leases ------------------------------------------------------------------------

    async def renew_leases(self, heal_ids: Sequence[str], now: float) -> set[str]:
        ids = list(dict.fromkeys(heal_ids))
        if not ids:
            return set()
        return await self.writer.transaction(
            lambda db: heals.renew(db, ids, self.replica, now))

    async def take_over(self, now: float, limit: int) -> list[dict[str, Any]]:
        return await self.writer.transaction(
            lambda db: heals.take_over(db, self.replica, set(_LIVE), now, limit))

    async def lock_target(self, target: str, heal_id: str, now: float) -> bool:
        return await self.writer.transaction(lambda db: heals.lock_target(
            db, target, heal_id, self.replica, set(_LIVE), now))

    async def unlock_target(self, target: str, heal_id: str) -> None:
        await self.writer.transaction(
            lambda db: heals.unlock_target(db, target, heal_id, self.replica))

    # ---- safety state ------------------------------------------------------------------

    async def admit(self, heal_id: str, rule: str | None, targets: Sequence[str],
                    limits: st.Limits | None, now: float,
                    alert: st.AlertKey | None = None) -> st.Decision:
        return await self.writer.transaction(
            lambda db: safety.admit(db, heal_id, rule, targets, limits, now, alert))

    async def record_escalation(self, rule: str, target: str, heal_id: str,
                                deliveries: list[dict[str, Any]]) -> None:
        await self.writer.transaction(
            lambda db: safety.record_escalation(db, rule, target, heal_id, deliveries))

    async def open_rules(self) -> set[str]:
        return await self.writer.read(safety.open_rules)

    async def list_circuits(self, *, include_closed: bool = False) -> list[dict[str, Any]]:
        return await self.writer.read(
            lambda db: safety.list_circuits(db, include_closed=include_closed))

    async def close_circuits(self, rule: str, target: str | None, now: float,
                             by: str) -> list[dict[str, Any]]:
        return await self.writer.transaction(
            lambda db: safety.close_circuits(db, rule, target, now, by))

    async def sweep(self, now: float, quiet: float) -> list[dict[str, Any]]:
        return await self.writer.transaction(lambda db: safety.sweep(db, now, quiet))

    # ---- pause -------------------------------------------------------------------------

    async def get_pause(self, now: float) -> dict[str, Any] | None:
        return await self.writer.read(lambda db: safety.get_pause(db, now))

    async def set_pause(self, now: float, until: float, reason: str) -> dict[str, Any]:
        return await self.writer.transaction(
            lambda db: safety.set_pause(db, now, until, reason))

    async def clear_pause(self, now: float) -> dict[str, Any] | None:
        return await self.writer.transaction(lambda db: safety.clear_pause(db, now))

    # ---- follow-ups --------------------------------------------------------------------

    async def follow_up_candidates(self) -> list[str]:
        return await self.writer.read(followups.candidates)

    async def claim_follow_up(self, heal_id: str, *, run_id: str, now: float,
                              policy: st.FollowUpPolicy) -> st.FollowUpClaim:
        return await self.writer.transaction(lambda db: followups.claim(
            db, heal_id, run_id=run_id, now=now, policy=policy, me=self.replica))

    async def record_follow_up_deliveries(self, heal_id: str,
                                          deliveries: list[dict[str, Any]]) -> None:
        now = time.time()
        await self.writer.transaction(
            lambda db: followups.record_deliveries(db, heal_id, deliveries, now,
                                                   self.replica))

