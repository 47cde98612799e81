"""The life of one heal: phases it moves through and the outcome it ends with.

Usage::

    state = HealState()
    state.advance(Phase.CHECKING)
    state.advance(Phase.ACTING)
    state.advance(Phase.VERIFYING)
    state.finish(Outcome.RECOVERED)

Only the transitions below are legal; anything else raises ``ValueError`` so a
bug in the executor can never record, say, ``recovered`` for a heal that never
acted.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from typing import Any

RecordStep = Callable[[str, dict[str, Any]], Awaitable[None]]
"""Writes one entry of a heal's timeline: ``await record("verify_query", {...})``."""


class Phase(enum.StrEnum):
    PENDING = "pending"  # journaled, not started yet
    CHECKING = "checking"  # handler.check gathering evidence
    ACTING = "acting"  # handler.act changing the world
    VERIFYING = "verifying"  # re-querying Prometheus
    AWAITING_APPROVAL = "awaiting_approval"  # checked; a human approves or rejects (mode: approve)
    DONE = "done"


class Outcome(enum.StrEnum):
    RECOVERED = "recovered"
    NOT_RECOVERED = "not_recovered"
    UNVERIFIED = "unverified"
    FAILED = "failed"
    NO_ACTION = "no_action"
    DRY_RUN = "dry_run"
    SUPPRESSED = "suppressed"
    REFUSED = "refused"
    INTERRUPTED = "interrupted"
    ESCALATED = "escalated"
    SUGGESTED = "suggested"  # mode: suggest: checked, told, nothing acts
    REJECTED = "rejected"  # mode: approve: a human said no
    EXPIRED = "expired"  # mode: approve: nobody decided within approval.timeout


_NEXT: dict[Phase, frozenset[Phase]] = {
    Phase.PENDING: frozenset({Phase.CHECKING, Phase.DONE}),
    Phase.CHECKING: frozenset({Phase.ACTING, Phase.AWAITING_APPROVAL, Phase.DONE}),
    # approved: check runs again (the world may have changed) before acting
    Phase.AWAITING_APPROVAL: frozenset({Phase.CHECKING, Phase.DONE}),
    Phase.ACTING: frozenset({Phase.VERIFYING, Phase.DONE}),
    Phase.VERIFYING: frozenset({Phase.DONE}),
    Phase.DONE: frozenset(),
}

# Which outcomes each phase may end in. Verification outcomes need a completed
# action; "no_action"/"refused"/"dry_run" are decided before acting ("no_action" also
# before checking: an alert resolved while its heal was pending leaves nothing to do).
_ENDS: dict[Phase, frozenset[Outcome]] = {
    Phase.PENDING: frozenset(
        {
            Outcome.NO_ACTION,
            Outcome.SUPPRESSED,
            Outcome.REFUSED,
            Outcome.INTERRUPTED,
            Outcome.FAILED,
        }
    ),
    Phase.CHECKING: frozenset(
        {
            Outcome.NO_ACTION,
            Outcome.DRY_RUN,
            Outcome.SUPPRESSED,
            Outcome.REFUSED,
            Outcome.FAILED,
            Outcome.INTERRUPTED,
            Outcome.ESCALATED,
            Outcome.SUGGESTED,
        }
    ),
    Phase.AWAITING_APPROVAL: frozenset(
        {
            Outcome.REJECTED,
            Outcome.EXPIRED,
            Outcome.NO_ACTION,
            Outcome.INTERRUPTED,
            Outcome.FAILED,
        }
    ),
    Phase.ACTING: frozenset({Outcome.FAILED, Outcome.INTERRUPTED}),
    Phase.VERIFYING: frozenset(
        {
            Outcome.RECOVERED,
            Outcome.NOT_RECOVERED,
            Outcome.UNVERIFIED,
            Outcome.INTERRUPTED,
            Outcome.FAILED,
        }
    ),
    Phase.DONE: frozenset(),
}


def allowed_outcomes(phase: Phase) -> frozenset[Outcome]:
    """The outcomes a heal currently in ``phase`` may end with."""
    return _ENDS[phase]


class HealState:
    """Phase tracker that refuses illegal transitions."""

    __slots__ = ("outcome", "phase")

    def __init__(self, phase: Phase = Phase.PENDING) -> None:
        self.phase = phase
        self.outcome: Outcome | None = None

    def advance(self, to: Phase) -> None:
        if to is Phase.DONE:
            raise ValueError("use finish(outcome) to end a heal")
        if to not in _NEXT[self.phase]:
            raise ValueError(f"illegal transition {self.phase} -> {to}")
        self.phase = to

    def finish(self, outcome: Outcome) -> None:
        if outcome not in _ENDS[self.phase]:
            raise ValueError(f"a heal in phase {self.phase} cannot end {outcome}")
        self.phase = Phase.DONE
        self.outcome = outcome

    @property
    def done(self) -> bool:
        return self.phase is Phase.DONE
