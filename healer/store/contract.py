"""The store contract: every durable operation healer's engine, HTTP API, CLI, safety
gates and follow-ups need, as named async methods, whatever keeps the data (SQLite on
one host, :class:`healer.store.SqliteStore`; PostgreSQL shared by several replicas,
:class:`healer.store.postgres.store.PostgresStore`).

Guarantees every implementation keeps (``tests/unit/test_store_contract.py`` checks them
against each store):

* Durable before answered: a method (or the future of a ``*_soon`` one) returns only
  once what it wrote survives a crash; a store reopened on the same data sees every
  acknowledged write.
* Atomic decisions: ``ingest``, ``admit`` and ``claim_follow_up`` read and write in one
  transaction, atomic against every other write of any process sharing the store.
* Errors: a store that cannot durably store or read raises JournalUnavailable
  (JournalBroken once it refuses everything until restart); nothing is acknowledged then.
* ``*_soon`` variants queue the write now, in order with every other write of this
  process, and return a future done once it is durable: many queued at once may share
  one commit.
* Replicas and leases: a store object writes as one replica (``Replica``: its ``id``,
  its ``lease_ttl`` and a ``token`` of its own, so a restarted process of the same id is
  another holder). Every timeline entry records the ``replica`` id that wrote it. Every
  unfinished heal is leased to one holder (``owner``: its replica id, ``lease_until``):
  the store that created it (:meth:`ingest`, :meth:`create_manual_heal`, a retry by
  :meth:`claim_follow_up`), until :meth:`take_over` moves it. A lease is held until it
  is taken over: an expired lease nobody took yet still lets its holder write (taking
  over and the fenced writes are serialised, so never both).
* Fencing: :meth:`set_phase` (the change to acting among them), fenced timeline entries
  (``fenced=True``: the act, every entry of a running heal), :meth:`finish` and
  :meth:`interrupt` check the lease in the same transaction as their write, and raise
  LeaseLost (writing nothing) unless this store holds it.

Usage::

    store: Store = await SqliteStore.open(Path("healer.db"))
    dispositions = await store.ingest(alerts, match=ruleset.plan_for)
    await store.add_event(heal_id, "verifying", "verify_sample", {...})
    heal = await store.get_heal(heal_id)
    await store.close()
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from healer.outcomes import Outcome, Phase
from healer.replica import Replica
from healer.store.retention import Cutoffs, JournalStats
from healer.store.types import (
    AlertKey,
    ApprovalRow,
    ApprovalVerdict,
    CircuitRow,
    Decision,
    Disposition,
    FollowUpClaim,
    FollowUpPolicy,
    HealDetail,
    HealPlan,
    HealRow,
    Limits,
    Match,
    PauseRow,
    ReceivedAlert,
    TakenHeal,
)


class Store(Protocol):
    replica: Replica
    """Who this store object writes as: its replica ``id`` (on every timeline entry it
    writes, as ``owner`` of the heals it leases; the app logs it, /health/ready shows it),
    ``lease_ttl`` and the ``token`` of this holder."""

    # ---- lifecycle ---------------------------------------------------------------------

    async def close(self) -> None:
        """Let queued writes reach the disk, then release the store (it is not used
        again)."""

    async def ping(self) -> None:
        """Raise JournalUnavailable unless the store answers and accepts a write (it
        really writes: an empty transaction succeeds on a full disk)."""

    # ---- ingest ------------------------------------------------------------------------

    async def ingest(
        self,
        alerts: Sequence[ReceivedAlert],
        match: Match,
        *,
        body: str | None = None,
        received_at: float | None = None,
    ) -> list[Disposition]:
        """Store a webhook's alerts; create a pending heal for each *new* firing alert
        that ``match`` plans, in the same transaction. One disposition per alert, in
        order, returned only once all of it is durable.

        Exactly once on (fingerprint, startsAt in whole seconds, status): the first
        receipt decides (started / ignored / resolved / stale), every later one (repeat,
        HA peer, retry, concurrent POST, after a restart) is a ``duplicate`` of it that
        only counts a receipt. A resolved alert puts ``alert_resolved`` on its open heals'
        timelines; a firing re-send after its resolve is ignored as stale. ``body`` (the
        POST as received, ``alerts[i]`` its ``alerts[i]``) is kept once, when it brings a
        new alert; ``received_at`` goes into each new heal's ``matched`` event."""
        ...

    async def alert_counts(self) -> dict[str, int]:
        """Stored alerts (identity and status) per first disposition."""
        ...

    async def alert_resolved_at(self, alert: AlertKey) -> float | None:
        """When the resolved notification of this alert (fingerprint, startsAt) was first
        received, or None while it has not been."""
        ...

    async def resolved_alerts(self, fingerprints: Sequence[str]) -> dict[AlertKey, float]:
        """:meth:`alert_resolved_at` of every resolved alert of these fingerprints."""
        ...

    # ---- heals and timelines -----------------------------------------------------------

    async def create_manual_heal(
        self, plan: HealPlan, labels: dict[str, str], annotations: dict[str, str]
    ) -> str:
        """A new pending heal (source ``manual``, ``manual_trigger`` on its timeline)."""
        ...

    async def add_event(
        self, heal_id: str, phase: str, kind: str, data: dict[str, Any], *, fenced: bool = False
    ) -> None:
        """Append to the heal's timeline (``seq`` one more than its last; passwords in
        ``data`` redacted; ``replica`` this store's replica id); durable on return.
        ``fenced``: in the same transaction, LeaseLost (nothing written) unless this store
        holds the heal's lease (what the running heal writes; an operator's note is not
        fenced)."""
        ...

    def event_soon(
        self, heal_id: str, phase: str, kind: str, data: dict[str, Any], *, fenced: bool = False
    ) -> asyncio.Future[None]:
        """:meth:`add_event`, queued now (LeaseLost through the future)."""
        ...

    async def set_phase(
        self, heal_id: str, phase: Phase, *, targets: list[str] | None = None
    ) -> None:
        """The heal's phase (and, given, its targets). Fenced: LeaseLost, nothing
        written, unless this store holds the heal's lease."""
        ...

    def set_phase_soon(
        self, heal_id: str, phase: Phase, *, targets: list[str] | None = None
    ) -> asyncio.Future[None]:
        """:meth:`set_phase`, queued now."""
        ...

    async def interrupt(
        self, heal_id: str, phase: Phase, reason: str, durations: dict[str, float]
    ) -> None:
        """healer stopped mid-heal: outcome ``interrupted`` with the phase kept (not
        done), so that the next start finds the heal in :meth:`unfinished` and resumes it
        from that phase. Fenced (LeaseLost, nothing written); the lease is kept, to
        expire (a later process takes the heal over)."""
        ...

    async def finish(
        self, heal_id: str, outcome: Outcome, reason: str, durations: dict[str, float]
    ) -> None:
        """The heal is done: its outcome, reason (DSN passwords redacted) and durations,
        an ``outcome`` entry on its timeline, and its target locks released, in one
        write. Fenced: LeaseLost, nothing written, unless this store holds the heal's
        lease (a replica whose heal was taken over never writes its outcome)."""
        ...

    def finish_soon(
        self, heal_id: str, outcome: Outcome, reason: str, durations: dict[str, float]
    ) -> asyncio.Future[None]:
        """:meth:`finish`, queued now."""
        ...

    # ---- history reads -----------------------------------------------------------------

    async def get_heal(self, heal_id: str) -> HealDetail | None:
        """One heal with its ``timeline`` (in ``seq`` order), or None."""
        ...

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
    ) -> list[HealRow]:
        """Heals newest first (``created_at`` unique and increasing); page with
        ``before=<created_at of the last row>``. ``phase``: only heals in that phase
        (``awaiting_approval``: the heals waiting for a human). ``since``: only heals
        created at or after this time (epoch seconds)."""
        ...

    async def unfinished(self) -> list[HealRow]:
        """Every heal not done, oldest first, whoever holds it (a read: no lease is
        taken; rows carry ``owner`` and ``lease_until``)."""
        ...

    # ---- leases and target locks -------------------------------------------------------

    async def renew_leases(self, heal_ids: Sequence[str], now: float) -> set[str]:
        """Extend this store's leases of ``heal_ids`` to ``now + lease_ttl``, in one
        write; return the ids it still holds (held even if expired, until taken over).
        An id not returned was taken over (or does not exist): its heal must stop and
        write nothing more. Never takes a lease it does not hold."""
        ...

    async def orphans(self, running: Sequence[str], before: float) -> list[TakenHeal]:
        """Unfinished heals leased to this store, created before ``before``, that its
        caller does not run (``running``: the ids it runs or waits on). One appears when a
        delivery's ingest committed but the store answered with an error (a connection
        lost at commit): the webhook answered 503, the retried delivery found the alert
        journaled, and nothing runs the heal while its lease is renewed by nobody. Rows
        as :meth:`take_over` returns them (``taken_from`` is this replica's id); the
        lease is already this store's, so nothing is written."""
        ...

    async def take_over(self, now: float, limit: int) -> list[TakenHeal]:
        """Atomically claim up to ``limit`` unfinished heals (oldest first) whose lease
        has expired at ``now`` (``lease_until < now``, any owner, a previous process of
        this replica id included, or never leased: a journal from before leases), and
        return them as :meth:`unfinished` rows, now leased to this store until
        ``now + lease_ttl``, each with ``taken_from``: the owner it had (None: never
        leased), for the caller to resume. Of racing calls (any process) each
        heal goes to exactly one. Never returns a heal this store already holds.

        SQLite (one process by design) also treats a lease whose holder is no store open
        in this process as expired: a new process takes over everything unfinished at its
        first call, as healer always resumed at start. PostgreSQL: expiry only (a
        restarted replica waits for its old leases to expire, at most ``lease_ttl``)."""
        ...

    async def lock_target(self, target: str, heal_id: str, now: float) -> bool:
        """Take the fleet-wide lock on ``target`` for ``heal_id``, in one transaction:
        True if it is now held by ``heal_id`` (free, already its own, or held by a heal
        that is done or whose lease expired at ``now``); False if another heal with a
        live lease holds it. The lock lasts as long as the heal's lease (no separate
        expiry), until :meth:`unlock_target` or :meth:`finish`. Fenced: LeaseLost unless
        this store holds ``heal_id``'s lease."""
        ...

    async def unlock_target(self, target: str, heal_id: str) -> None:
        """Release ``heal_id``'s lock on ``target``; nothing if it holds none there or
        this store no longer holds the heal's lease (its new owner may hold the lock)."""
        ...

    # ---- safety state ------------------------------------------------------------------

    async def admit(
        self,
        heal_id: str,
        rule: str | None,
        targets: Sequence[str],
        limits: Limits | None,
        now: float,
        alert: AlertKey | None = None,
    ) -> Decision:
        """Decide, and record, whether ``heal_id`` may act on ``targets`` now, in one
        transaction: two heals never both pass a cooldown or a budget only one fits.

        In order: the alert already resolved; pause; an open circuit on any target (the
        first heal to meet it escalates, later ones are suppressed); the cooldown; the
        budget (spent: the circuit opens and this heal escalates). Admitted, one action
        per target is recorded before the heal acts. A heal never meets its own earlier
        records (a resumed heal)."""
        ...

    async def record_escalation(
        self, rule: str, target: str, heal_id: str, deliveries: list[dict[str, Any]]
    ) -> None:
        """The circuit's escalation by ``heal_id`` was delivered so (never again)."""
        ...

    async def open_rules(self) -> set[str]:
        """Rules with at least one open circuit."""
        ...

    async def list_circuits(self, *, include_closed: bool = False) -> list[CircuitRow]:
        """Circuits, most recently opened first."""
        ...

    async def close_circuits(
        self, rule: str, target: str | None, now: float, by: str
    ) -> list[CircuitRow]:
        """Close the rule's open circuits (one target, or all) and return them; the
        budget starts afresh from ``now``."""
        ...

    async def sweep(self, now: float, quiet: float) -> list[CircuitRow]:
        """Close (and return) circuits without an alert for ``quiet`` seconds; forget
        action history older than any budget window."""
        ...

    # ---- pause -------------------------------------------------------------------------

    async def get_pause(self, now: float) -> PauseRow | None:
        """The active pause (``since``, ``until``, ``reason``), or None (expired: none)."""
        ...

    async def set_pause(self, now: float, until: float, reason: str) -> PauseRow:
        """Pause until ``until``, replacing any current pause; the new pause."""
        ...

    async def clear_pause(self, now: float) -> PauseRow | None:
        """End the pause; the pause that was active, if any."""
        ...

    # ---- follow-ups --------------------------------------------------------------------

    async def follow_up_candidates(self) -> list[str]:
        """Heals a re-send may still follow up: ``not_recovered`` without a follow-up,
        or with an escalation whose deliveries were never recorded."""
        ...

    async def claim_follow_up(
        self, heal_id: str, *, run_id: str, now: float, policy: FollowUpPolicy
    ) -> FollowUpClaim:
        """Decide, and record, what follows ``heal_id`` now that its alert was re-sent
        firing, in one transaction: of racing claims (any process) at most one escalates
        or retries; a retry heal is created (pending) in the same transaction. A claim by
        another ``run_id`` whose deliveries were never recorded is taken over. The retry
        heal is leased to this store, like a heal :meth:`ingest` creates."""
        ...

    async def record_follow_up_deliveries(
        self, heal_id: str, deliveries: list[dict[str, Any]]
    ) -> None:
        """The escalation's deliveries on the heal's timeline, and the follow-up settled,
        in one write."""
        ...

    # ---- approvals (mode: approve) -----------------------------------------------------

    async def open_approval(
        self, heal_id: str, token_hash: str, targets: list[str], expires_at: float
    ) -> tuple[ApprovalRow, bool]:
        """The heal waits for a human: its phase ``awaiting_approval``, its ``targets``,
        and its approval (the token's SHA-256, never the token; the deadline), with an
        ``approval_requested`` timeline entry, in one write; returns (the approval, True).
        A heal that already has one (resumed, taken over) keeps it: same token hash, same
        deadline, whatever its decision; returns (it, False). Fenced: LeaseLost unless this
        store holds the heal's lease."""
        ...

    async def get_approval(self, heal_id: str) -> ApprovalRow | None:
        """The heal's approval, or None (it never asked)."""
        ...

    async def decide_approval(
        self,
        heal_id: str,
        decision: str,
        *,
        by: str,
        via: str,
        comment: str | None = None,
        token_hash: str | None = None,
    ) -> ApprovalVerdict:
        """A human's ``approve`` / ``reject``, in one conditional write with an
        ``approved`` / ``rejected`` timeline entry (``by``, ``via``, ``comment``): of
        racing decisions (any process) exactly one is ``decided``; the others are
        ``done``, as is a decision on a closed or expired approval or an ended heal.
        ``token_hash`` given: ``bad_token`` unless it is the approval's (checked before
        anything else but the heal's existence). Not fenced: any replica decides."""
        ...

    async def close_approval(self, heal_id: str, decision: str) -> ApprovalRow | None:
        """The waiting heal's own end of the wait (``expire``, ``resolved``), written only
        if the approval is still open; the approval as it now is (a human's decision that
        came first stays: the caller follows it). Fenced."""
        ...

    async def open_approvals(self) -> list[ApprovalRow]:
        """Every approval still open, soonest deadline first."""
        ...

    # ---- retention ---------------------------------------------------------------------

    async def prune(self, cutoffs: Cutoffs, limit: int) -> dict[str, int] | None:
        """One bounded prune batch, in one short transaction: up to ``limit`` alert rows,
        ``limit`` deliveries, ``limit`` heals (with their timelines, approvals, follow-ups
        and target locks) and ``limit`` closed circuits past ``cutoffs``; rows removed per
        table (:data:`healer.store.retention.PRUNED_TABLES`). Never removes what
        :mod:`healer.store.retention` lists as kept (a heal not done and the safety state
        it needs, alert rows inside their window, ...). Idempotent; racing calls of
        several processes remove each row once. None: another process's batch is running
        (PostgreSQL: one replica prunes at a time), nothing was done."""
        ...

    async def prunable(self, cutoffs: Cutoffs) -> dict[str, int]:
        """What pruning with ``cutoffs`` until nothing is left would remove now, per table
        (a read: ``healer journal prune --dry-run``)."""
        ...

    async def reclaim(self, pages: int, keep: float = 0.0) -> int:
        """Give up to ``pages`` pages freed by pruning back to the file system, in one
        write, while more than ``keep`` (a fraction) of the store's pages are free: those
        stay for new rows; pages given back (SQLite: incremental vacuum; PostgreSQL: 0,
        autovacuum makes freed space reusable in place)."""
        ...

    async def journal_stats(self) -> JournalStats:
        """Rows and oldest entry per table, bytes on disk (``healer journal stats``)."""
        ...
