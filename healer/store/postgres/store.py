"""PostgresStore: the store contract (:class:`healer.store.contract.Store`) on a
PostgreSQL database shared by any number of healer processes, composed of the pool
(:mod:`healer.store.postgres.pool`: errors, retries, queued writes) and one module per
concern, each owning its tables: alerts, heals, safety, followups. The schema is
versioned (:mod:`healer.store.postgres.schema`).

Durable before answered: every method returns (every ``*_soon`` future is done) only
after its COMMIT was acknowledged, with ``synchronous_commit`` as the server has it.
Unreachable server, broken connection: JournalUnavailable naming the store (DSN password
redacted); the pool reconnects by itself once the server is back.

Leases on PostgreSQL are by expiry only (:mod:`healer.store.postgres.heals`): unlike
SQLite, there is no "is its holder open in this process" rule, since the holders are other
processes, so a restarted replica (same id, new token) waits for its old heals' leases
to expire (at most ``lease_ttl``) before it takes them over, as any replica would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from healer.outcomes import Outcome, Phase
from healer.redact import redact_dsn
from healer.store import types as st
from healer.store.postgres import alerts, followups, heals, safety, schema
from healer.store.postgres.pool import Conn, Pool

_ingest = alerts.ingest_batch


@dataclass(frozen=True, slots=True)
class PostgresOptions:
    """How to connect (``journal:`` in the config): the DSN (with its password, never
    logged) and the pool's limits, durations in seconds."""

    dsn: str
    pool_size: int = 4
    connect_timeout: float = 5.0
    statement_timeout: float = 30.0

    def __repr__(self) -> str:
        return f"PostgresOptions({redact_dsn(self.dsn)!r}, pool_size={self.pool_size})"

    @property
    def name(self) -> str:
        """The store as it is named in messages and logs (password redacted)."""
        return redact_dsn(self.dsn)


class PostgresStore:
    def __init__(self, pool: Pool, options: PostgresOptions,
                 replica: st.Replica | None = None) -> None:
        self.pool = pool
        self.options = options
        self.replica = replica if replica is not None else st.Replica()

    # ---- lifecycle ---------------------------------------------------------------------

    @classmethod
    async def open(cls, options: PostgresOptions,
                   replica: st.Replica | None = None) -> PostgresStore:
        """Connect, refuse a newer schema, create or migrate an older (or empty) one.
        ``replica``: who writes (default: this host and pid, 15 s leases)."""
        pool = await Pool.connect(options.dsn, pool_size=options.pool_size,
                                  connect_timeout=options.connect_timeout,
                                  statement_timeout=options.statement_timeout)
        try:
            await pool.transaction(lambda db: schema.migrate(db, options.dsn))
        except BaseException:
            await pool.close()
            raise
        return cls(pool, options, replica)

    @classmethod
    async def migrate(cls, options: PostgresOptions) -> tuple[int, int]:
        """Apply pending migrations; the schema version (before, after)."""
        pool = await Pool.connect(options.dsn, pool_size=1,
                                  connect_timeout=options.connect_timeout,
                                  statement_timeout=options.statement_timeout)
        try:
            return await pool.transaction(lambda db: schema.migrate(db, options.dsn))
        finally:
            await pool.close()

    @classmethod
    def check_can_open(cls, options: PostgresOptions) -> None:
        """Open (creating or migrating the schema) and close once, synchronously:
        ``healer serve`` does this before listening. Raises JournalUnavailable."""

        async def once() -> None:
            await (await cls.open(options)).close()

        asyncio.run(once())

    async def close(self) -> None:
        await self.pool.close()

    async def ping(self) -> None:
        now = time.time()
        await self.pool.transaction(lambda db: db.execute(
            "INSERT INTO probe (id, at) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET"
            " at = excluded.at", now))

    # ---- ingest ------------------------------------------------------------------------

    async def ingest(self, alerts: Sequence[st.ReceivedAlert], match: st.Match, *,
                     body: str | None = None, received_at: float | None = None
                     ) -> list[st.Disposition]:
        text, plans = await st.prepare_ingest(alerts, match, body)
        now = time.time()
        return await self.pool.transaction(
            lambda db: _ingest(db, alerts, plans, now, received_at, text, self.replica))

    async def alert_counts(self) -> dict[str, int]:
        return await self.pool.read(alerts.alert_counts)

    async def alert_resolved_at(self, alert: st.AlertKey) -> float | None:
        return await self.pool.read(lambda db: alerts.resolved_at(db, alert))

    async def resolved_alerts(self, fingerprints: Sequence[str]) -> dict[st.AlertKey, float]:
        return await self.pool.read(lambda db: alerts.resolved_alerts(db, fingerprints))

    # ---- heals and timelines -----------------------------------------------------------

    async def create_manual_heal(self, plan: st.HealPlan, labels: dict[str, str],
                                 annotations: dict[str, str]) -> str:
        now = time.time()
        return await self.pool.transaction(lambda db: heals.insert_heal(
            db, plan, None, "manual", now, self.replica, labels, annotations))

    async def add_event(self, heal_id: str, phase: str, kind: str,
                        data: dict[str, Any], *, fenced: bool = False) -> None:
        await self.event_soon(heal_id, phase, kind, data, fenced=fenced)

    def event_soon(self, heal_id: str, phase: str, kind: str,
                   data: dict[str, Any], *, fenced: bool = False) -> asyncio.Future[None]:
        now, me = time.time(), self.replica

        async def write(db: Conn) -> None:
            if fenced:
                await heals.fence(db, heal_id, me)
            await heals.event(db, heal_id, phase, kind, data, now, me)
        return self.pool.submit(write)

    async def set_phase(self, heal_id: str, phase: Phase, *,
                        targets: list[str] | None = None) -> None:
        await self.set_phase_soon(heal_id, phase, targets=targets)

    def set_phase_soon(self, heal_id: str, phase: Phase, *,
                       targets: list[str] | None = None) -> asyncio.Future[None]:
        return self.pool.submit(
            lambda db: heals.set_phase(db, heal_id, phase, targets, self.replica))

    async def interrupt(self, heal_id: str, phase: Phase, reason: str,
                        durations: dict[str, float]) -> None:
        now = time.time()
        await self.pool.transaction(
            lambda db: heals.interrupt(db, heal_id, phase, reason, durations, now,
                                       self.replica))

    async def finish(self, heal_id: str, outcome: Outcome, reason: str,
                     durations: dict[str, float]) -> None:
        await self.finish_soon(heal_id, outcome, reason, durations)

    def finish_soon(self, heal_id: str, outcome: Outcome, reason: str,
                    durations: dict[str, float]) -> asyncio.Future[None]:
        now = time.time()
        reason = redact_dsn(reason)
        return self.pool.submit(
            lambda db: heals.finish(db, heal_id, outcome, reason, durations, now,
                                    self.replica))

    # ---- history reads -----------------------------------------------------------------

    async def get_heal(self, heal_id: str) -> dict[str, Any] | None:
        return await self.pool.read(lambda db: heals.get_heal(db, heal_id))

    async def list_heals(self, *, rule: str | None = None, outcome: str | None = None,
                         target: str | None = None, limit: int = 50,
                         before: float | None = None) -> list[dict[str, Any]]:
        return await self.pool.read(lambda db: heals.list_heals(
            db, rule=rule, outcome=outcome, target=target, limit=limit, before=before))

    async def unfinished(self) -> list[dict[str, Any]]:
        return await self.pool.read(heals.unfinished)

    # ---- leases ------------------------------------------------------------------------

    async def renew_leases(self, heal_ids: Sequence[str], now: float) -> set[str]:
        ids = list(dict.fromkeys(heal_ids))
        if not ids:
            return set()
        return await self.pool.transaction(lambda db: heals.renew(db, ids, self.replica, now))

    async def take_over(self, now: float, limit: int) -> list[dict[str, Any]]:
        return await self.pool.transaction(
            lambda db: heals.take_over(db, self.replica, now, limit))

    async def lock_target(self, target: str, heal_id: str, now: float) -> bool:
        return await self.pool.transaction(
            lambda db: heals.lock_target(db, target, heal_id, self.replica, now))

    async def unlock_target(self, target: str, heal_id: str) -> None:
        await self.pool.transaction(
            lambda db: heals.unlock_target(db, target, heal_id, self.replica))

    # ---- safety state ------------------------------------------------------------------

    async def admit(self, heal_id: str, rule: str | None, targets: Sequence[str],
                    limits: st.Limits | None, now: float,
                    alert: st.AlertKey | None = None) -> st.Decision:
        return await self.pool.transaction(
            lambda db: safety.admit(db, heal_id, rule, targets, limits, now, alert))

    async def record_escalation(self, rule: str, target: str, heal_id: str,
                                deliveries: list[dict[str, Any]]) -> None:
        await self.pool.transaction(
            lambda db: safety.record_escalation(db, rule, target, heal_id, deliveries))

    async def open_rules(self) -> set[str]:
        return await self.pool.read(safety.open_rules)

    async def list_circuits(self, *, include_closed: bool = False) -> list[dict[str, Any]]:
        return await self.pool.read(
            lambda db: safety.list_circuits(db, include_closed=include_closed))

    async def close_circuits(self, rule: str, target: str | None, now: float,
                             by: str) -> list[dict[str, Any]]:
        return await self.pool.transaction(
            lambda db: safety.close_circuits(db, rule, target, now, by))

    async def sweep(self, now: float, quiet: float) -> list[dict[str, Any]]:
        return await self.pool.transaction(lambda db: safety.sweep(db, now, quiet))

    # ---- pause -------------------------------------------------------------------------

    async def get_pause(self, now: float) -> dict[str, Any] | None:
        return await self.pool.read(lambda db: safety.get_pause(db, now))

    async def set_pause(self, now: float, until: float, reason: str) -> dict[str, Any]:
        return await self.pool.transaction(
            lambda db: safety.set_pause(db, now, until, reason))

    async def clear_pause(self, now: float) -> dict[str, Any] | None:
        return await self.pool.transaction(lambda db: safety.clear_pause(db, now))

    # ---- follow-ups --------------------------------------------------------------------

    async def follow_up_candidates(self) -> list[str]:
        return await self.pool.read(followups.candidates)

    async def claim_follow_up(self, heal_id: str, *, run_id: str, now: float,
                              policy: st.FollowUpPolicy) -> st.FollowUpClaim:
        return await self.pool.transaction(lambda db: followups.claim(
            db, heal_id, run_id=run_id, now=now, policy=policy, me=self.replica))

    async def record_follow_up_deliveries(self, heal_id: str,
                                          deliveries: list[dict[str, Any]]) -> None:
        now = time.time()
        await self.pool.transaction(
            lambda db: followups.record_deliveries(db, heal_id, deliveries, now,
                                                   self.replica))


