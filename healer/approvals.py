"""Humans in the loop: ``mode: approve`` heals wait in ``awaiting_approval`` until a
person approves or rejects them (admin API, CLI, Slack or Mattermost buttons), or until
``approval.timeout`` ends them ``expired``.

Usage (HTTP routes and chat callbacks call it; the executor opens and awaits)::

    state = await decide(svc, heal_id, "approve", by="alice", via="api", comment="go")
    state = await decide(svc, heal_id, "reject", by="@bob", via="mattermost", token=tok)

Exactly once: the decision is one conditional write in the store, so two approvals (a
double click, two replicas, the API and a button together) decide once; the second
answers :class:`ApprovalError` with status 409. A Mattermost ``token`` is single-use and
bound to its heal: a wrong one is 403, a used one 409.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from healer.store.types import ApprovalRow, token_hash

if TYPE_CHECKING:
    from healer.services import Services
    from healer.store import Store

Decision = Literal["approve", "reject"]
Via = Literal["api", "cli", "console", "slack", "mattermost"]

_MAX_BY = 200
_MAX_COMMENT = 2000


class ApprovalError(Exception):
    """A decision that cannot be taken: ``status`` is the HTTP status to answer
    (404 unknown heal or one that never asked, 409 already decided, expired or ended,
    403 bad token)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def approval_state(approval: ApprovalRow) -> dict[str, Any]:
    """An approval as the API answers it."""
    return {
        "heal_id": approval["heal_id"],
        "decision": approval["decision"],
        "by": approval["decided_by"],
        "via": approval["via"],
        "comment": approval["comment"],
        "decided_at": approval["decided_at"],
        "opened_at": approval["opened_at"],
        "expires_at": approval["expires_at"],
        "targets": approval["targets"],
    }


async def decide_in(
    store: Store,
    heal_id: str,
    decision: Decision,
    *,
    by: str,
    via: Via,
    comment: str | None = None,
    token: str | None = None,
) -> dict[str, Any]:
    """:func:`decide` on a store alone (what decides; :func:`decide` also wakes the
    waiting heal at once when this process runs it)."""
    if decision not in ("approve", "reject"):
        raise ApprovalError(400, f"decision must be approve or reject, not {decision!r}")
    by = by.strip()[:_MAX_BY] or "unknown"
    comment = comment[:_MAX_COMMENT] if comment else None
    hashed = token_hash(token) if token is not None else None
    verdict = await store.decide_approval(
        heal_id, decision, by=by, via=via, comment=comment, token_hash=hashed
    )
    if verdict.status == "unknown":
        raise ApprovalError(404, f"heal {heal_id!r} is not awaiting approval")
    if verdict.status == "bad_token":
        raise ApprovalError(403, "this token does not approve or reject this heal")
    assert verdict.approval is not None
    if verdict.status == "done":
        closed = verdict.approval
        how = closed["decision"] or "ended"
        who = f" by {closed['decided_by']}" if closed["decided_by"] else ""
        raise ApprovalError(409, f"heal {heal_id!r} was already decided: {how}{who}")
    return approval_state(verdict.approval)


async def decide(
    svc: Services,
    heal_id: str,
    decision: Decision,
    *,
    by: str,
    via: Via,
    comment: str | None = None,
    token: str | None = None,
) -> dict[str, Any]:
    """Record ``decision`` on the awaiting heal ``heal_id``; returns the heal's approval
    state (``heal_id``, ``decision``, ``by``, ``via``, ``comment``, ``decided_at``, and
    ``opened_at``, ``expires_at``, ``targets``). The waiting heal (on any replica) sees it
    at its next look at the store; on this one at once."""
    state = await decide_in(
        svc.journal, heal_id, decision, by=by, via=via, comment=comment, token=token
    )
    svc.executor.approval_decided(heal_id)
    return state
