"""What the SQLite and PostgreSQL stores share: one method per contract method that
stamps the time, names the replica, redacts a reason and hands the backend's module
function (``alerts``, ``heals``, ``gates``, ``followups``, each backend has its own
with the same names and arguments) to the backend's runner. A subclass supplies the
modules and how to run a read, a transaction and a queued write (the SQLite writer
thread, the asyncpg pool), and keeps what really differs: opening, closing, the probe's
SQL, composed writes (fenced events) and the lease-liveness rule.

The module functions are sync on SQLite and async on PostgreSQL, so they are typed here
only through the runners (``Any``); the results are cast to the contract's types, and
the contract tests run every method on both backends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from types import ModuleType
from typing import Any, cast

from healer.outcomes import Outcome, Phase
from healer.redact import redact_dsn
from healer.store import rows
from healer.store import types as st
from healer.store.retention import Cutoffs

Work = Callable[[Any], Any]


class ModuleStore:
    """The contract's methods on one backend's modules (see the module's docstring)."""

    _alerts: ModuleType
    _heals: ModuleType
    _gates: ModuleType
    _followups: ModuleType
    _approvals: ModuleType
    _retention: ModuleType
    replica: st.Replica

    def __init__(self) -> None:
        self._recent_bodies = rows.RecentBodies()

    # ---- what a backend supplies -------------------------------------------------------

    def _read(self, work: Work) -> Awaitable[Any]:
        """Run ``work(db)`` as a read."""
        raise NotImplementedError

    def _write(self, work: Work) -> Awaitable[Any]:
        """Run ``work(db)`` in one transaction, returned once committed."""
        raise NotImplementedError

    def _submit(self, work: Work) -> asyncio.Future[Any]:
        """Queue ``work(db)`` as a write; the future is done once committed."""
        raise NotImplementedError

    # ---- ingest ------------------------------------------------------------------------

    async def ingest(
        self,
        alerts: Sequence[st.ReceivedAlert],
        match: st.Match,
        *,
        body: str | None = None,
        received_at: float | None = None,
    ) -> list[st.Disposition]:
        text, plans = await st.prepare_ingest(alerts, match, body)
        now, me, ingest = time.time(), self.replica, self._alerts.ingest_batch
        body_key = rows.RecentBodies.key(text)
        fresh = not self._recent_bodies.kept(body_key)
        out = await self._write(
            lambda db: ingest(db, alerts, plans, now, received_at, text, me, fresh)
        )
        if fresh and any(plan is None for plan in plans):  # noise in a kept body now
            self._recent_bodies.add(body_key)
        return cast(list[st.Disposition], out)

    async def alert_counts(self) -> dict[str, int]:
        return cast(dict[str, int], await self._read(self._alerts.alert_counts))

    async def alert_resolved_at(self, alert: st.AlertKey) -> float | None:
        return cast(float | None, await self._read(lambda db: self._alerts.resolved_at(db, alert)))

    async def resolved_alerts(self, fingerprints: Sequence[str]) -> dict[st.AlertKey, float]:
        return cast(
            dict[st.AlertKey, float],
            await self._read(lambda db: self._alerts.resolved_alerts(db, fingerprints)),
        )

    # ---- heals and timelines -----------------------------------------------------------

    async def create_manual_heal(
        self, plan: st.HealPlan, labels: dict[str, str], annotations: dict[str, str]
    ) -> str:
        now = time.time()
        return cast(
            str,
            await self._write(
                lambda db: self._heals.insert_heal(
                    db, plan, None, "manual", now, self.replica, labels, annotations
                )
            ),
        )

    def event_soon(
        self, heal_id: str, phase: str, kind: str, data: dict[str, Any], *, fenced: bool = False
    ) -> asyncio.Future[None]:
        raise NotImplementedError

    async def add_event(
        self, heal_id: str, phase: str, kind: str, data: dict[str, Any], *, fenced: bool = False
    ) -> None:
        await self.event_soon(heal_id, phase, kind, data, fenced=fenced)

    async def set_phase(
        self, heal_id: str, phase: Phase, *, targets: list[str] | None = None
    ) -> None:
        await self.set_phase_soon(heal_id, phase, targets=targets)

    def set_phase_soon(
        self, heal_id: str, phase: Phase, *, targets: list[str] | None = None
    ) -> asyncio.Future[None]:
        return self._submit(
            lambda db: self._heals.set_phase(db, heal_id, phase, targets, self.replica)
        )

    async def interrupt(
        self, heal_id: str, phase: Phase, reason: str, durations: dict[str, float]
    ) -> None:
        now = time.time()
        await self._write(
            lambda db: self._heals.interrupt(
                db, heal_id, phase, reason, durations, now, self.replica
            )
        )

    async def finish(
        self, heal_id: str, outcome: Outcome, reason: str, durations: dict[str, float]
    ) -> None:
        await self.finish_soon(heal_id, outcome, reason, durations)

    def finish_soon(
        self, heal_id: str, outcome: Outcome, reason: str, durations: dict[str, float]
    ) -> asyncio.Future[None]:
        now = time.time()
        reason = redact_dsn(reason)
        return self._submit(
            lambda db: self._heals.finish(
                db, heal_id, outcome, reason, durations, now, self.replica
            )
        )

    # ---- history reads -----------------------------------------------------------------

    async def get_heal(self, heal_id: str) -> st.HealDetail | None:
        return cast(
            st.HealDetail | None, await self._read(lambda db: self._heals.get_heal(db, heal_id))
        )

    async def list_heals(
        self,
        *,
        rule: str | None = None,
        outcome: str | None = None,
        target: str | None = None,
        limit: int = 50,
        before: float | None = None,
        phase: str | None = None,
        since: float | None = None,
    ) -> list[st.HealRow]:
        return cast(
            list[st.HealRow],
            await self._read(
                lambda db: self._heals.list_heals(
                    db,
                    rule=rule,
                    outcome=outcome,
                    target=target,
                    limit=limit,
                    before=before,
                    phase=phase,
                    since=since,
                )
            ),
        )

    async def unfinished(self) -> list[st.HealRow]:
        return cast(list[st.HealRow], await self._read(self._heals.unfinished))

    # ---- leases ------------------------------------------------------------------------

    async def renew_leases(self, heal_ids: Sequence[str], now: float) -> set[str]:
        ids = list(dict.fromkeys(heal_ids))
        if not ids:
            return set()
        return cast(
            set[str], await self._write(lambda db: self._heals.renew(db, ids, self.replica, now))
        )

    async def orphans(self, running: Sequence[str], before: float) -> list[st.TakenHeal]:
        ids = list(running)
        return cast(
            list[st.TakenHeal],
            await self._read(lambda db: self._heals.orphans(db, self.replica, ids, before)),
        )

    async def take_over(self, now: float, limit: int) -> list[st.TakenHeal]:
        return cast(
            list[st.TakenHeal],
            await self._write(lambda db: self._heals.take_over(db, self.replica, now, limit)),
        )

    async def lock_target(self, target: str, heal_id: str, now: float) -> bool:
        return cast(
            bool,
            await self._write(
                lambda db: self._heals.lock_target(db, target, heal_id, self.replica, now)
            ),
        )

    async def unlock_target(self, target: str, heal_id: str) -> None:
        await self._write(lambda db: self._heals.unlock_target(db, target, heal_id, self.replica))

    # ---- safety state ------------------------------------------------------------------

    async def admit(
        self,
        heal_id: str,
        rule: str | None,
        targets: Sequence[str],
        limits: st.Limits | None,
        now: float,
        alert: st.AlertKey | None = None,
    ) -> st.Decision:
        return cast(
            st.Decision,
            await self._write(
                lambda db: self._gates.admit(db, heal_id, rule, targets, limits, now, alert)
            ),
        )

    async def record_escalation(
        self, rule: str, target: str, heal_id: str, deliveries: list[dict[str, Any]]
    ) -> None:
        await self._write(
            lambda db: self._gates.record_escalation(db, rule, target, heal_id, deliveries)
        )

    async def open_rules(self) -> set[str]:
        return cast(set[str], await self._read(self._gates.open_rules))

    async def list_circuits(self, *, include_closed: bool = False) -> list[st.CircuitRow]:
        return cast(
            list[st.CircuitRow],
            await self._read(
                lambda db: self._gates.list_circuits(db, include_closed=include_closed)
            ),
        )

    async def close_circuits(
        self, rule: str, target: str | None, now: float, by: str
    ) -> list[st.CircuitRow]:
        return cast(
            list[st.CircuitRow],
            await self._write(lambda db: self._gates.close_circuits(db, rule, target, now, by)),
        )

    async def sweep(self, now: float, quiet: float) -> list[st.CircuitRow]:
        return cast(
            list[st.CircuitRow], await self._write(lambda db: self._gates.sweep(db, now, quiet))
        )

    # ---- pause -------------------------------------------------------------------------

    async def get_pause(self, now: float) -> st.PauseRow | None:
        return cast(st.PauseRow | None, await self._read(lambda db: self._gates.get_pause(db, now)))

    async def set_pause(self, now: float, until: float, reason: str) -> st.PauseRow:
        return cast(
            st.PauseRow,
            await self._write(lambda db: self._gates.set_pause(db, now, until, reason)),
        )

    async def clear_pause(self, now: float) -> st.PauseRow | None:
        return cast(
            st.PauseRow | None, await self._write(lambda db: self._gates.clear_pause(db, now))
        )

    # ---- follow-ups --------------------------------------------------------------------

    async def follow_up_candidates(self) -> list[str]:
        return cast(list[str], await self._read(self._followups.candidates))

    async def claim_follow_up(
        self, heal_id: str, *, run_id: str, now: float, policy: st.FollowUpPolicy
    ) -> st.FollowUpClaim:
        return cast(
            st.FollowUpClaim,
            await self._write(
                lambda db: self._followups.claim(
                    db, heal_id, run_id=run_id, now=now, policy=policy, me=self.replica
                )
            ),
        )

    async def record_follow_up_deliveries(
        self, heal_id: str, deliveries: list[dict[str, Any]]
    ) -> None:
        now = time.time()
        await self._write(
            lambda db: self._followups.record_deliveries(db, heal_id, deliveries, now, self.replica)
        )

    # ---- approvals ---------------------------------------------------------------------

    async def open_approval(
        self, heal_id: str, token_hash: str, targets: list[str], expires_at: float
    ) -> tuple[st.ApprovalRow, bool]:
        now, me = time.time(), self.replica
        return cast(
            tuple[st.ApprovalRow, bool],
            await self._write(
                lambda db: self._approvals.open_approval(
                    db, heal_id, token_hash, targets, expires_at, now, me
                )
            ),
        )

    async def get_approval(self, heal_id: str) -> st.ApprovalRow | None:
        return cast(
            st.ApprovalRow | None,
            await self._read(lambda db: self._approvals.get_approval(db, heal_id)),
        )

    async def decide_approval(
        self,
        heal_id: str,
        decision: str,
        *,
        by: str,
        via: str,
        comment: str | None = None,
        token_hash: str | None = None,
    ) -> st.ApprovalVerdict:
        now, me = time.time(), self.replica
        return cast(
            st.ApprovalVerdict,
            await self._write(
                lambda db: self._approvals.decide(
                    db, heal_id, decision, by, via, comment, token_hash, now, me
                )
            ),
        )

    async def close_approval(self, heal_id: str, decision: str) -> st.ApprovalRow | None:
        now, me = time.time(), self.replica
        return cast(
            st.ApprovalRow | None,
            await self._write(lambda db: self._approvals.close(db, heal_id, decision, now, me)),
        )

    async def open_approvals(self) -> list[st.ApprovalRow]:
        return cast(list[st.ApprovalRow], await self._read(self._approvals.open_approvals))

    # ---- retention ---------------------------------------------------------------------

    async def prune(self, cutoffs: Cutoffs, limit: int) -> dict[str, int] | None:
        return cast(
            dict[str, int] | None,
            await self._write(lambda db: self._retention.prune_batch(db, cutoffs, limit)),
        )

    async def prunable(self, cutoffs: Cutoffs) -> dict[str, int]:
        return cast(
            dict[str, int], await self._read(lambda db: self._retention.prunable(db, cutoffs))
        )

    async def reclaim(self, pages: int, keep: float = 0.0) -> int:
        return cast(int, await self._write(lambda db: self._retention.reclaim(db, pages, keep)))
