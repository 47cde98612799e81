"""The heal state machine (healer.outcomes): phases, legal transitions, allowed outcomes."""

from __future__ import annotations

import pytest

from healer.outcomes import HealState, Outcome, Phase, allowed_outcomes

ORDER = [Phase.PENDING, Phase.CHECKING, Phase.ACTING, Phase.VERIFYING]
LEGAL = {
    (Phase.PENDING, Phase.CHECKING),
    (Phase.CHECKING, Phase.ACTING),
    (Phase.ACTING, Phase.VERIFYING),
}


def at(phase: Phase) -> HealState:
    """A state walked legally up to ``phase``."""
    state = HealState()
    for step in ORDER[1 : ORDER.index(phase) + 1]:
        state.advance(step)
    return state


def test_vocabulary_is_the_spec() -> None:
    """The outcome names are the fixed vocabulary of the spec, nothing more (grown by
    suggested, rejected and expired for the humans in the loop)."""
    assert {str(o) for o in Outcome} == {
        "recovered",
        "not_recovered",
        "unverified",
        "failed",
        "no_action",
        "dry_run",
        "suppressed",
        "refused",
        "interrupted",
        "escalated",
        "suggested",
        "rejected",
        "expired",
    }


def test_the_legal_path_ends_recovered() -> None:
    """pending -> checking -> acting -> verifying -> done(recovered) is accepted."""
    state = HealState()
    assert state.phase is Phase.PENDING and not state.done
    state.advance(Phase.CHECKING)
    state.advance(Phase.ACTING)
    state.advance(Phase.VERIFYING)
    state.finish(Outcome.RECOVERED)
    assert state.done and state.phase is Phase.DONE and state.outcome is Outcome.RECOVERED


@pytest.mark.parametrize(
    ("start", "to"), [(a, b) for a in ORDER for b in ORDER if (a, b) not in LEGAL]
)
def test_every_illegal_transition_raises(start: Phase, to: Phase) -> None:
    """Skipping a phase, going back or staying put raises and leaves the phase alone."""
    state = at(start)
    with pytest.raises(ValueError, match="illegal transition"):
        state.advance(to)
    assert state.phase is start


@pytest.mark.parametrize("phase", ORDER)
def test_advance_cannot_end_a_heal(phase: Phase) -> None:
    """Reaching done needs an outcome: advance(DONE) is refused."""
    with pytest.raises(ValueError, match="finish"):
        at(phase).advance(Phase.DONE)


def test_nothing_follows_done() -> None:
    """A finished heal can neither advance nor finish again."""
    state = at(Phase.CHECKING)
    state.finish(Outcome.NO_ACTION)
    for phase in ORDER:
        with pytest.raises(ValueError):
            state.advance(phase)
    with pytest.raises(ValueError):
        state.finish(Outcome.FAILED)
    assert state.outcome is Outcome.NO_ACTION


@pytest.mark.parametrize("outcome", [Outcome.RECOVERED, Outcome.NOT_RECOVERED, Outcome.UNVERIFIED])
def test_verification_outcomes_only_from_verifying(outcome: Outcome) -> None:
    """recovered / not_recovered / unverified need a completed action: only verifying
    may end with them."""
    for phase in ORDER:
        assert (outcome in allowed_outcomes(phase)) == (phase is Phase.VERIFYING)


@pytest.mark.parametrize("phase", [Phase.PENDING, Phase.CHECKING, Phase.ACTING])
def test_recovered_is_refused_outside_verifying(phase: Phase) -> None:
    """finish(recovered) before verification raises and records nothing."""
    state = at(phase)
    with pytest.raises(ValueError, match="cannot end recovered"):
        state.finish(Outcome.RECOVERED)
    assert state.outcome is None and state.phase is phase


@pytest.mark.parametrize(
    "outcome",
    [Outcome.DRY_RUN, Outcome.NO_ACTION, Outcome.REFUSED, Outcome.SUPPRESSED, Outcome.ESCALATED],
)
def test_pre_action_outcomes_never_after_acting(outcome: Outcome) -> None:
    """dry_run, no_action, refused, suppressed and escalated are decided before acting:
    a heal that acted can never claim them."""
    for phase in (Phase.ACTING, Phase.VERIFYING):
        assert outcome not in allowed_outcomes(phase)
        with pytest.raises(ValueError):
            at(phase).finish(outcome)


@pytest.mark.parametrize(
    "outcome",
    [
        Outcome.DRY_RUN,
        Outcome.NO_ACTION,
        Outcome.REFUSED,
        Outcome.SUPPRESSED,
        Outcome.ESCALATED,
        Outcome.FAILED,
        Outcome.INTERRUPTED,
    ],
)
def test_checking_may_end_before_acting(outcome: Outcome) -> None:
    """Each pre-action outcome is reachable from checking."""
    state = at(Phase.CHECKING)
    state.finish(outcome)
    assert state.outcome is outcome


@pytest.mark.parametrize("phase", ORDER)
def test_failed_and_interrupted_are_possible_everywhere(phase: Phase) -> None:
    """A handler error or a shutdown can end a heal in any phase."""
    assert {Outcome.FAILED, Outcome.INTERRUPTED} <= allowed_outcomes(phase)


def test_acting_ends_only_failed_or_interrupted() -> None:
    """Leaving acting any other way than through verifying means something went wrong."""
    assert allowed_outcomes(Phase.ACTING) == {Outcome.FAILED, Outcome.INTERRUPTED}


def test_done_allows_no_outcome() -> None:
    """A finished heal has nothing left to end with."""
    assert allowed_outcomes(Phase.DONE) == frozenset()


def test_resuming_from_a_journaled_phase() -> None:
    """A state rebuilt from the journal's phase (restart) may end interrupted."""
    state = HealState(Phase.ACTING)
    state.finish(Outcome.INTERRUPTED)
    assert state.outcome is Outcome.INTERRUPTED
