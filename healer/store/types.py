"""The values that cross the store contract (:mod:`healer.store.contract`), whatever the
backend: what ingest reads of an alert, what a heal runs, what happened to each alert,
the rows it reads back (heals and their timelines, circuits, the pause), what the safety
gates decide, what a follow-up claim decided.

The rows are TypedDicts, not classes: the HTTP API answers them as they are (JSON) and
callers index them by column name. :mod:`healer.store.rows` builds each from a stored
row, the same way for both backends."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, NotRequired, Protocol, TypedDict

from healer.replica import Replica as Replica  # the store's writer: re-exported

if TYPE_CHECKING:
    from healer.api import Alert


class ReceivedAlert(Protocol):
    """What ingest reads of an alert: :class:`healer.api.Alert`, or the webhook's parsed
    alert itself (the receiver builds an ``Alert`` only for the alerts that start a heal)."""

    @property
    def fingerprint(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def labels(self) -> Mapping[str, str]: ...
    @property
    def annotations(self) -> Mapping[str, str]: ...
    @property
    def starts_at(self) -> datetime: ...
    @property
    def ends_at(self) -> datetime | None: ...
    @property
    def name(self) -> str: ...


@dataclass(frozen=True, slots=True)
class HealPlan:
    """What a matched alert (or a manual trigger) should run."""

    rule: str | None
    handler: str
    params: dict[str, Any]
    verify: dict[str, Any]
    dry_run: bool


class Disposition(NamedTuple):
    """What happened to one alert of a webhook POST (a tuple: one is made per alert)."""

    fingerprint: str
    status: str  # started | duplicate | ignored | resolved
    heal_id: str | None = None
    rule: str | None = None
    reason: str = ""
    plan: HealPlan | None = None


AlertKey = tuple[str, str]  # (fingerprint, startsAt as alert_key_time)


# ---- rows read back --------------------------------------------------------------------


class HealRow(TypedDict):
    """A heal as the history and resume read it: the ``heals`` row, JSON columns decoded,
    without the holder's lease token (who holds the lease is ``owner``)."""

    id: str
    created_at: float  # unique and increasing: the history's page cursor
    updated_at: float
    source: str  # alert | manual | retry
    rule: str | None  # None: a manual heal by handler
    handler: str
    fingerprint: str | None  # None: manual
    alert_starts_at: str | None  # the alert's startsAt (ISO 8601), None: manual
    labels: dict[str, str]
    annotations: dict[str, str]
    params: dict[str, Any]
    verify: dict[str, Any]
    dry_run: bool
    targets: list[str]
    phase: str  # an outcomes.Phase value
    outcome: str | None  # an outcomes.Outcome value; None while running
    reason: str | None
    finished_at: float | None
    durations: dict[str, float]
    owner: str | None  # the replica holding the lease (None: never leased)
    lease_until: float | None


class StepRow(TypedDict):
    """One timeline entry of a heal."""

    seq: int  # 1, 2, ... per heal
    at: float
    phase: str
    kind: str
    data: dict[str, Any]  # what the step recorded (passwords redacted)
    replica: str | None  # who wrote it (None: written before replicas)


class HealDetail(HealRow):
    """One heal with its timeline (:meth:`Store.get_heal`)."""

    timeline: list[StepRow]  # in seq order


class TakenHeal(HealRow):
    """A heal :meth:`Store.take_over` just leased to its caller."""

    taken_from: str | None  # the owner it had (None: never leased)


class FollowUpHeal(TypedDict):
    """The columns of a heal a follow-up claim reads and escalates with: a heal of an
    alert by a rule (a re-send never follows up any other)."""

    id: str
    rule: str
    fingerprint: str
    alert_starts_at: str
    labels: dict[str, str]
    annotations: dict[str, str]
    targets: list[str]
    phase: str
    outcome: str | None
    reason: str | None
    finished_at: float | None


class CircuitRow(TypedDict):
    """A circuit: one rule on one target, open (the budget was spent) or closed."""

    rule: str
    target: str
    state: str  # open | closed
    opened_at: float
    opened_by: str  # the heal that spent the budget
    reason: str
    last_alert_at: float  # the quiet period counts from here
    suppressed: int  # heals suppressed while open
    escalated_by: str | None  # the heal that tells (told) a human
    escalation: list[dict[str, Any]] | None  # its deliveries, once recorded
    closed_at: float | None
    closed_by: str | None  # who closed it: "api", "quiet period"
    # Not stored: what the gates show of an open circuit, when its quiet period would
    # close it (healer.gates.SafetyGates.circuits).
    closes_at: NotRequired[float]


class PauseRow(TypedDict):
    """The pause (maintenance mode): every heal is suppressed ``since`` .. ``until``."""

    since: float
    until: float
    reason: str


Match = Callable[[ReceivedAlert], HealPlan | None]


def alert_key_time(moment: datetime) -> str:
    """``startsAt`` as part of an alert's identity, in whole UTC seconds.

    Alertmanager 0.25 sends a firing alert's startsAt with nanoseconds and the
    same alert's resolved notification truncated to seconds (see the shared
    fixtures); a firing alert cannot resolve and fire again within one second.
    """
    return moment.astimezone(UTC).replace(microsecond=0).isoformat()


def new_heal_id() -> str:
    return uuid.uuid4().hex[:16]


def dumps(value: Any) -> str:
    """JSON as stored: compact, anything unknown as its ``str``."""
    return json.dumps(value, default=str, separators=(",", ":"))


# A POST larger than this is matched against the rules on a worker thread.
_MATCH_INLINE_MAX = 64 * 1024


def _plans(alerts: Sequence[ReceivedAlert], match: Match) -> list[HealPlan | None]:
    """Each alert's plan, computed outside any transaction; a duplicate's plan is simply
    not used, and a resolved alert's plan starts nothing: it says that the alert keeps a
    row (its resolution is what a late firing re-send and the gates look for)."""
    return [match(a) for a in alerts]


async def prepare_ingest(
    alerts: Sequence[ReceivedAlert], match: Match, body: str | None
) -> tuple[str, list[HealPlan | None]]:
    """The body to keep (the POST as received, or what ``alert_log`` reads of each alert)
    and each alert's plan. Matching is done here, before any write is queued: inside a
    transaction one slow match would hold up every other post and heal write. A large
    POST is matched on a worker thread (RE2 releases the GIL), so the loop serves others."""
    if body is None:
        body = dumps(
            {
                "alerts": [
                    {
                        "fingerprint": a.fingerprint,
                        "status": a.status,
                        "startsAt": a.starts_at.isoformat(),
                        "labels": a.labels,
                        "annotations": a.annotations,
                    }
                    for a in alerts
                ]
            }
        )
    if len(body) > _MATCH_INLINE_MAX:
        return body, await asyncio.to_thread(_plans, alerts, match)
    return body, _plans(alerts, match)


# ---- safety gates ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limits:
    """One rule's gates, durations in seconds."""

    cooldown: float
    max_actions: int
    window: float
    quiet: float


@dataclass(frozen=True, slots=True)
class Decision:
    """What the gates say about one heal about to act.

    ``act``: go on (the action is already recorded); ``resolved``: the alert resolved
    before the heal acted, nothing is recorded (no_action); ``paused`` / ``cooldown`` /
    ``circuit_open``: suppress; ``escalate``: this heal is the one that tells a human
    (``deliver`` is False when a previous run of the same heal already did)."""

    kind: Literal["act", "resolved", "paused", "cooldown", "circuit_open", "escalate"]
    target: str | None = None
    left: float = 0.0  # cooldown / pause left
    actions: int = 0  # actions in the budget window (escalate)
    circuit: CircuitRow | None = None
    pause: PauseRow | None = None
    deliver: bool = True
    resolved_at: float = 0.0  # resolved: when the resolved notification arrived


# ---- follow-ups ------------------------------------------------------------------------

FollowUpKind = Literal["none", "wait", "escalate", "retry"]


@dataclass(frozen=True, slots=True)
class FollowUpPolicy:
    """What a follow-up claim asks of the configuration, per rule: ``mode`` (the rule's
    ``on_not_recovered``: escalate or retry), ``cooldown`` (seconds) and ``plan`` (what a
    retry runs; None once the rule is gone from the config)."""

    mode: Callable[[str], str]
    cooldown: Callable[[str], float]
    plan: Callable[[str], HealPlan | None]


@dataclass(frozen=True, slots=True)
class FollowUpClaim:
    """What one re-send decided. ``none``: nothing follows (not ``not_recovered``, already
    followed up, resolved, rule gone); ``wait``: retry, but the cooldown has ``left``;
    ``retry``: the pending heal ``retry_id`` of ``retry_plan`` (healing ``retry_alert``)
    was created."""

    kind: FollowUpKind
    heal: FollowUpHeal | None = None  # None: no heal a re-send follows
    left: float = 0.0
    settled: bool = True  # nothing will ever follow this heal again
    retry_id: str | None = None
    retry_plan: HealPlan | None = None
    retry_alert: Alert | None = None


# ---- approvals (mode: approve) ---------------------------------------------------------

ApprovalDecision = Literal["approve", "reject", "expire", "resolved"]
"""How an approval closed: a human approved or rejected it, nobody did within the
timeout (``expire``), or the alert resolved meanwhile (``resolved``)."""


class ApprovalRow(TypedDict):
    """One heal's approval: opened when the heal began waiting, closed once (decision)."""

    heal_id: str
    opened_at: float
    expires_at: float
    targets: list[str]  # what the heal asked to act on (only these may be acted on)
    decision: str | None  # an ApprovalDecision; None while open
    decided_by: str | None  # who, as the API or the chat platform named them
    via: str | None  # api | cli | console | slack | mattermost | healer (expire, resolved)
    comment: str | None
    decided_at: float | None


@dataclass(frozen=True, slots=True)
class ApprovalVerdict:
    """What :meth:`Store.decide_approval` did. ``decided``: this call closed the approval
    (``approval`` as it now is); ``unknown``: no such heal, or it never asked; ``done``:
    the approval was already closed (or the heal ended); ``bad_token``: the token is not
    the approval's."""

    status: Literal["decided", "unknown", "done", "bad_token"]
    approval: ApprovalRow | None = None


def token_hash(token: str) -> str:
    """What the store keeps of an approval token: its SHA-256, hex (the token itself is
    only in the approval message)."""
    return hashlib.sha256(token.encode()).hexdigest()
