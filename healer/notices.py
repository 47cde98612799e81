"""Telling people about heals (``notify_on``): one :class:`HealNotice` per event of a heal,
handed to :class:`HealNotices`, which renders it for each notifier (Mattermost, Slack,
webhook), groups a storm into summaries and delivers in the background.

Usage (the app factory builds it; the executor and the approval flow call it)::

    notices = HealNotices(config, notifiers)        # owns a background sender
    notices.notice(HealNotice(event="acted", heal_id=..., rule=..., ...))  # never blocks
    await notices.aclose()

``notice`` never raises and never waits on the network: a heal is never slowed or failed
by a notification. Delivery failures are retried as escalations are and written to the
heal's timeline (``notify`` entries).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

NoticeEvent = Literal[
    "started",  # the heal began checking
    "acted",  # act returned: what was done to which targets
    "recovered",
    "not_recovered",
    "failed",
    "refused",
    "escalated",
    "suggested",  # mode: suggest: what healer would do; nothing acts
    "awaiting_approval",  # mode: approve: asks for approval (buttons where the chat has them)
    "rejected",
    "expired",
    "no_action",  # e.g. resolved while awaiting approval: updates the approval message
]
"""Every event a notice may be about; ``notify_on`` selects among the first seven (plus
``suggested``; approval requests and their ends are always sent for ``mode: approve``)."""


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """What an approval message needs to offer approve/reject buttons.

    ``token`` is the heal's single-use, unguessable token (Mattermost's action context
    carries it back); ``expires_at`` is when the heal ends ``expired``."""

    token: str
    expires_at: float
    targets: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class HealNotice:
    event: NoticeEvent
    heal_id: str
    rule: str
    handler: str
    alertname: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    # what check found, a few lines' worth (the engine passes the check's evidence)
    evidence: Mapping[str, Any] = field(default_factory=dict)
    targets: Sequence[str] = ()
    summary: str = ""  # act's summary, or the outcome's reason
    outcome: str | None = None
    reason: str = ""
    time_to_recovery: float | None = None  # seconds from the alert's startsAt, when recovered
    approval: ApprovalRequest | None = None
    decided_by: str | None = None  # approver/rejecter, as the API or the chat platform sent it


class HealNotices:
    """The notices of one running healer. This base does nothing (no notifier, or
    ``notify_on`` empty); :meth:`notice` is the one call the engine makes."""

    def notice(self, notice: HealNotice) -> None:
        """Queue ``notice`` for delivery; returns at once, never raises."""

    async def aclose(self) -> None:
        """Deliver what is queued (bounded by the notifiers' timeouts), then stop."""
