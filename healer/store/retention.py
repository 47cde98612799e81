"""Journal retention's values, the same for both stores: what may be removed
(:class:`Cutoffs`), what a prune removed (rows per table) and what the journal holds
(:class:`JournalStats`). The SQL is each backend's (``sqlite/retention.py``,
``postgres/retention.py``); the loop that runs it is :mod:`healer.retention`.

What is never removed, whatever its age (each backend's predicates keep it):

* a heal not done (pending, running, awaiting approval, interrupted), its timeline, its
  approval, its follow-up and its target locks;
* every alert row of a fingerprint that has a heal not done (the resolve the gates look
  for, the dedup key that answers its re-sends), and every alert row seen (first or
  last) within the ``alerts`` window: a re-send of it is still a duplicate;
* a done heal that an alert row still kept points at (its re-sends are its duplicates,
  a follow-up of it may still be claimed), and a delivery that a kept alert row reads
  its labels from;
* the pause, every open circuit, and a closed circuit for as long as the action
  history it started afresh is kept (:data:`KEEP_CLOSED_CIRCUITS`);
* the action history (cooldowns, budgets): the gates' sweep keeps 31 days of it, longer
  than any budget window or cooldown, and prunes it itself.
"""

from __future__ import annotations

from dataclasses import dataclass

# As long as the gates keep action history (gates._KEEP_ACTIONS): a closed circuit says
# from when its rule's budget counts again, so it outlives the actions before it.
KEEP_CLOSED_CIRCUITS = 31 * 86400.0

# What a prune removes rows from, in the order it reports them.
PRUNED_TABLES = (
    "heals",
    "events",
    "approvals",
    "follow_ups",
    "target_locks",
    "safety_circuits",
    "alerts",
    "deliveries",
)
# What `healer journal stats` counts: every table with rows that grow.
STATS_TABLES = (*PRUNED_TABLES, "safety_actions")
# Each counted table's time column (its oldest entry; target_locks has none).
OLDEST_COLUMN = {
    "heals": "created_at",
    "events": "at",
    "approvals": "opened_at",
    "follow_ups": "at",
    "safety_circuits": "opened_at",
    "alerts": "first_seen",
    "deliveries": "received_at",
    "safety_actions": "at",
}


@dataclass(frozen=True, slots=True)
class Cutoffs:
    """Rows older than these epoch times may go (None: that class is kept forever).
    ``heals``: done heals created before it, with their timelines, approvals, follow-ups
    and locks; ``alerts``: alert rows neither first nor last seen since, and the
    deliveries only they read."""

    now: float
    heals: float | None
    alerts: float | None

    @classmethod
    def keep(cls, now: float, *, heals: float, alerts: float) -> Cutoffs:
        """Cutoffs that keep ``heals`` / ``alerts`` seconds before ``now`` (0: forever)."""
        return cls(now, now - heals if heals > 0 else None, now - alerts if alerts > 0 else None)

    @property
    def circuits(self) -> float | None:
        """Closed circuits closed before this may go (with the heals' window)."""
        if self.heals is None:
            return None
        return min(self.heals, self.now - KEEP_CLOSED_CIRCUITS)


@dataclass(frozen=True, slots=True)
class JournalStats:
    """What ``healer journal stats`` shows: rows and oldest entry (epoch seconds, None:
    empty) per table, and the bytes the store takes on disk (SQLite: the file and its
    write-ahead log; PostgreSQL: ``pg_total_relation_size`` of its tables) and, on
    SQLite, how many of them are free pages waiting for reuse."""

    store: str
    rows: dict[str, int]
    oldest: dict[str, float | None]
    bytes: int
    free_bytes: int | None


def no_rows() -> dict[str, int]:
    """A prune's counts before it removed anything."""
    return dict.fromkeys(PRUNED_TABLES, 0)
