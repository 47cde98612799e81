"""Telling people about heals (``notify_on``): one :class:`HealNotice` per event of a heal,
handed to :class:`HealNotices`, which renders it for each notifier (Mattermost, Slack,
webhook), groups a storm into summaries and delivers in the background.

Usage (the app factory builds it; the executor and the approval flow call it)::

    notices = HealNotices(config, notifiers, journal=store, metrics=metrics)
    notices.check_found(heal_id, evidence=..., targets=[...])  # remembered, not sent
    notices.notice(HealNotice(event="acted", heal_id=..., rule=..., ...))  # never blocks
    await notices.aclose()

``notice`` never raises and never waits on the network: a heal is never slowed or failed
by a notification. Delivery failures are retried as escalations are (each notifier's
``retries``/``backoff``) and written to the heal's timeline (``notify`` entries).

Which events are told: the rule's ``notify_on``, else ``notifications.notify_on``
(:func:`tells`). Approval requests and their ends (``awaiting_approval``, ``rejected``,
``no_action`` of a heal that awaited approval) are always told, and so is ``suggested``
for ``mode: suggest``: they are what those modes are for. ``expired`` is told by the
heal's escalation (``approval_expired``), not again by a notice.

What one message says: what fired (alertname, key labels), what check found (the
evidence, a few lines, truncated), what was done to which targets, the outcome with the
time to recovery, and a link to the heal (``{public_url}/api/v1/heals/{id}``). Earlier
facts of the same heal (:meth:`HealNotices.check_found`, an ``acted`` notice) are merged
into later notices, so a rule told only ``recovered`` still says what was done.

A storm is not a flood: once a rule has had ``notifications.group.after`` notices within
``group.window``, its further notices are folded into one summary per
``group.interval`` ("37 heals: 35 recovered, 2 failed"), until the rule is quiet for a
window. Approval requests are never folded (each needs its buttons). A summary's
deliveries are recorded on the timeline of the last heal it counts.

Told once: a ``not_recovered`` notice is sent once per alert (fingerprint + startsAt), and
when it is configured, healer/followup.py's ``not_recovered`` escalation of that alert is
not sent again (:func:`tells`).

Metrics: ``healer_notices_total{event, result}``: ``sent`` (every notifier reached),
``failed`` (some notifier not), ``grouped`` (folded into a summary), ``told_before`` (a
``not_recovered`` of an alert already told), ``dropped`` (the queue was full); summaries
count as event ``summary``.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, get_args

import structlog

import healer
from healer.redact import redact_data, redact_dsn
from healer.timefmt import format_seconds

if TYPE_CHECKING:
    from healer.config import HealerConfig
    from healer.metrics import Metrics
    from healer.notify import Delivery, Notifier, Notifiers
    from healer.store import Store

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

EVENTS: tuple[str, ...] = get_args(NoticeEvent)
APPROVAL_EVENTS = frozenset({"awaiting_approval", "rejected", "expired", "no_action"})
"""Always told: a heal in ``mode: approve`` asks, and people see how the ask ended."""

# The outcomes the executor tells of when a heal ends (the rest end silently, or are the
# approval flow's own events).
OUTCOME_EVENTS = frozenset({"recovered", "not_recovered", "failed", "refused", "escalated"})

# Ends of heals that never acted: their targets are what healer would have acted on.
_NOTHING_DONE = frozenset({"suggested", "rejected", "expired", "no_action"})
_EVIDENCE_LINES = 6
_LINE_MAX = 200
_TEXT_MAX = 2800  # below Slack's 3000 characters per section
_LABELS_SHOWN = 6
_REMEMBERED = 2_000  # heals whose facts are kept for their later notices (running ones)
_TOLD_ONCE = 10_000  # alerts told not_recovered


def tells(config: HealerConfig, rule: str | None, event: str) -> bool:
    """Whether ``event`` of a heal of ``rule`` is told (before grouping): approval events
    always, ``suggested`` for ``mode: suggest``, the rest per ``notify_on`` (the rule's,
    else ``notifications.notify_on``)."""
    conf = config.rule(rule) if rule else None
    if event == "expired":
        # Told once: the heal's approval_expired escalation (SafetyGates.escalate_expired)
        # already tells every notifier.
        return False
    if event in APPROVAL_EVENTS:
        return conf is None or conf.mode == "approve" or event != "no_action"
    if event == "suggested" and conf is not None and conf.mode == "suggest":
        return True
    notify_on = conf.notify_on if conf is not None and conf.notify_on is not None else None
    if notify_on is None:
        notify_on = config.notifications.notify_on
    return event in notify_on


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
    # the alert's identity (fingerprint, startsAt): a not_recovered is told once per alert
    alert_key: tuple[str, str] | None = None


# ---- rendering -----------------------------------------------------------------------------

_TITLES: dict[str, str] = {
    "started": "heal started",
    "acted": "acted",
    "recovered": "recovered",
    "not_recovered": "did NOT recover",
    "failed": "heal failed",
    "refused": "refused to act",
    "escalated": "escalated",
    "suggested": "suggests an action (mode: suggest, nothing was done)",
    "awaiting_approval": "asks for approval",
    "rejected": "rejected",
    "expired": "approval expired, nothing was done",
    "no_action": "no action",
}
_COLORS: dict[str, str] = {
    "recovered": "#2eb886",
    "acted": "#2eb886",
    "not_recovered": "#d00000",
    "failed": "#d00000",
    "refused": "#d00000",
    "escalated": "#d00000",
    "expired": "#d00000",
    "awaiting_approval": "#daa038",
    "suggested": "#daa038",
}


def _plain(value: Any, limit: int = _LINE_MAX) -> str:
    """One line of untrusted text: no newlines, bounded."""
    text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
    text = text.replace("\r", " ").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _code(value: Any, *, slack: bool) -> str:
    """Untrusted text inside a code span: no backticks, and for Slack no control
    sequences (``<!channel>``), so an alert cannot format or ping."""
    text = _plain(value).replace("`", "'")
    if slack:
        text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return f"`{text}`" if text else "``"


def key_labels(labels: Mapping[str, str]) -> list[tuple[str, str]]:
    """The labels a reader needs besides the alertname (a few, sorted)."""
    return sorted((k, v) for k, v in labels.items() if k != "alertname")[:_LABELS_SHOWN]


def evidence_lines(evidence: Mapping[str, Any]) -> list[str]:
    """What check found, a few ``key: value`` lines (values on one line, truncated)."""
    items = sorted(evidence.items())
    lines = [f"{_plain(k, 60)}: {_plain(v)}" for k, v in items[:_EVIDENCE_LINES]]
    if len(items) > _EVIDENCE_LINES:
        lines.append(f"… and {len(items) - _EVIDENCE_LINES} more")
    return lines


def heal_url(public_url: str, heal_id: str) -> str:
    return f"{public_url.rstrip('/')}/api/v1/heals/{heal_id}"


def _chat_lines(n: HealNotice, *, slack: bool) -> list[str]:
    """The facts of ``n`` as chat lines (Markdown, or Slack mrkdwn)."""
    bold = "*" if slack else "**"

    def c(value: Any) -> str:
        return _code(value, slack=slack)

    lines: list[str] = []
    fired = c(n.alertname or n.labels.get("alertname", "") or "-")
    labels = ", ".join(f"{c(k)}={c(v)}" for k, v in key_labels(n.labels))
    lines.append(f"{bold}Fired:{bold} {fired}" + (f" ({labels})" if labels else ""))
    if n.evidence:
        lines.append(f"{bold}Check found:{bold}")
        lines += [f"> {c(line)}" for line in evidence_lines(n.evidence)]
    targets = ", ".join(c(t) for t in n.targets)
    if n.event in _NOTHING_DONE:
        lines.append(f"{bold}Would act on:{bold} {targets or '-'} (nothing was done)")
    elif n.event == "awaiting_approval":
        asked = n.approval.targets if n.approval and n.approval.targets else n.targets
        lines.append(f"{bold}Would act on:{bold} {', '.join(c(t) for t in asked) or '-'}")
        if n.approval is not None:
            left = max(0.0, n.approval.expires_at - time.time())
            lines.append(
                f"Approve or reject within {format_seconds(left)}; healer re-runs its check "
                "before acting."
            )
    elif n.summary or n.targets:
        lines.append(f"{bold}Done:{bold} {c(n.summary) if n.summary else '-'} on {targets or '-'}")
    if n.outcome or n.event in OUTCOME_EVENTS:
        outcome = f"{bold}Outcome:{bold} {c(n.outcome or n.event)}"
        if n.time_to_recovery is not None:
            outcome += f" after {format_seconds(n.time_to_recovery)} (from the alert's start)"
        lines.append(outcome)
    if n.reason:
        lines.append(c(n.reason))
    if n.decided_by:
        lines.append(f"{bold}Decided by:{bold} {c(n.decided_by)}")
    return lines


def _headline(n: HealNotice, *, slack: bool) -> str:
    bold = "*" if slack else "**"
    return (
        f"{bold}healer{bold}: rule {_code(n.rule, slack=slack)} "
        f"({_code(n.handler, slack=slack)}) {_TITLES.get(n.event, n.event)}"
    )


def _bounded(text: str) -> str:
    return text if len(text) <= _TEXT_MAX else text[: _TEXT_MAX - 1] + "…"


def redacted(n: HealNotice) -> HealNotice:
    """``n`` with passwords masked wherever a handler or an error may have put one (text
    leaving the process: healer/redact.py)."""
    return replace(
        n,
        evidence=redact_data(dict(n.evidence)),
        summary=redact_dsn(n.summary),
        reason=redact_dsn(n.reason),
    )


def render(kind: str, n: HealNotice, public_url: str) -> dict[str, Any]:
    """The body one notifier of ``kind`` is sent for ``n`` (passwords masked)."""
    n = redacted(n)
    url = heal_url(public_url, n.heal_id)
    if kind == "slack":
        headline = _headline(n, slack=True)
        body = _bounded("\n".join([headline, *_chat_lines(n, slack=True)]))
        blocks: list[dict[str, Any]] = [
            {"type": "section", "text": {"type": "mrkdwn", "text": body}},
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"<{url}|heal {n.heal_id}>"}],
            },
        ]
        if n.event == "awaiting_approval":
            blocks.append(slack_actions(n.heal_id))
        return {"text": _bounded(f"{headline} (heal {n.heal_id})"), "blocks": blocks}
    if kind == "mattermost":
        headline = _headline(n, slack=False)
        attachment: dict[str, Any] = {
            "fallback": f"healer: rule {_plain(n.rule)} {_TITLES.get(n.event, n.event)}",
            "color": _COLORS.get(n.event, "#888888"),
            "title": f"heal {n.heal_id}",
            "title_link": url,
            "text": _bounded("\n".join(_chat_lines(n, slack=False))),
        }
        if n.event == "awaiting_approval" and n.approval is not None:
            attachment["actions"] = mattermost_actions(n.heal_id, n.approval.token, public_url)
        return {"text": headline, "attachments": [attachment]}
    return webhook_json(n, url)


def slack_actions(heal_id: str) -> dict[str, Any]:
    """The approve/reject buttons of a Slack message: ``action_id`` says the decision,
    ``value`` carries ``{"heal_id": ..., "decision": ...}`` as JSON (Slack signs the
    callback; no token rides in the message)."""

    def button(decision: str, label: str, style: str) -> dict[str, Any]:
        return {
            "type": "button",
            "action_id": f"healer_{decision}",
            "text": {"type": "plain_text", "text": label},
            "style": style,
            "value": json.dumps({"heal_id": heal_id, "decision": decision}),
        }

    return {
        "type": "actions",
        "block_id": f"healer_approval:{heal_id}",
        "elements": [
            button("approve", "Approve", "primary"),
            button("reject", "Reject", "danger"),
        ],
    }


def mattermost_actions(heal_id: str, token: str, public_url: str) -> list[dict[str, Any]]:
    """Mattermost interactive buttons: each posts its ``context`` (the heal, its
    single-use token, the decision) to healer's Mattermost callback."""
    url = f"{public_url.rstrip('/')}/api/v1/integrations/mattermost"

    def button(decision: str, label: str, style: str) -> dict[str, Any]:
        return {
            "id": decision,  # Mattermost wants alphanumeric ids
            "name": label,
            "style": style,
            "integration": {
                "url": url,
                "context": {"heal_id": heal_id, "token": token, "decision": decision},
            },
        }

    return [button("approve", "Approve", "primary"), button("reject", "Reject", "danger")]


def webhook_json(n: HealNotice, url: str) -> dict[str, Any]:
    """The generic webhook's JSON: the notice's fields, machine-readable. The approval
    token is not in it (the admin API approves, with its own token)."""
    out: dict[str, Any] = {
        "event": n.event,
        "heal_id": n.heal_id,
        "heal_url": url,
        "rule": n.rule,
        "handler": n.handler,
        "alertname": n.alertname or n.labels.get("alertname", ""),
        "labels": dict(n.labels),
        "evidence": evidence_lines(n.evidence),
        "targets": list(n.targets),
        "summary": n.summary,
        "outcome": n.outcome,
        "reason": n.reason,
        "time_to_recovery": n.time_to_recovery,
        "decided_by": n.decided_by,
        "healer_version": healer.__version__,
    }
    if n.approval is not None:
        out["approval"] = {
            "expires_at": n.approval.expires_at,
            "targets": list(n.approval.targets),
            "approve": f"POST {url}/approve",
            "reject": f"POST {url}/reject",
        }
    return out


@dataclass(slots=True)
class _Group:
    """One rule's notices folded since its last summary."""

    events: collections.Counter[str] = field(default_factory=collections.Counter)
    heals: set[str] = field(default_factory=set)
    last_heal: str = ""
    due: float = 0.0


def summary_text(rule: str, group: _Group, interval: float, *, slack: bool) -> str:
    """E.g. "rule `db` (last 1m): 37 heals: 35 recovered, 2 failed"."""
    counts = ", ".join(
        f"{group.events[e]} {e.replace('_', ' ')}" for e in EVENTS if group.events.get(e)
    )
    bold = "*" if slack else "**"
    heals = len(group.heals)
    return (
        f"{bold}healer{bold}: rule {_code(rule, slack=slack)} (last {format_seconds(interval)}):"
        f" {heals} heal{'s' if heals != 1 else ''}: {counts} (grouped: too many to tell one by"
        " one)"
    )


def render_summary(
    kind: str, rule: str, group: _Group, interval: float, public_url: str
) -> dict[str, Any]:
    history = f"{public_url.rstrip('/')}/api/v1/heals?rule={rule}"
    if kind == "slack":
        text = summary_text(rule, group, interval, slack=True)
        return {
            "text": text,
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": text}},
                {"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{history}|heals>"}]},
            ],
        }
    if kind == "mattermost":
        return {"text": f"{summary_text(rule, group, interval, slack=False)}\n{history}"}
    return {
        "event": "summary",
        "rule": rule,
        "heals": len(group.heals),
        "events": dict(group.events),
        "interval": interval,
        "history_url": history,
        "healer_version": healer.__version__,
    }


# ---- delivery ------------------------------------------------------------------------------

_PHASES = {"started": "checking", "acted": "acting", "awaiting_approval": "awaiting_approval"}

_Item = tuple[Literal["notice"], HealNotice] | tuple[Literal["summary"], str, _Group]


class HealNotices:
    """The notices of one running healer. Without a config, notifiers or anything to tell,
    it does nothing; :meth:`notice` is the one call the engine makes."""

    # Class-level: a subclass that keeps notices itself (tests) and skips __init__ is
    # inactive, not broken.
    _config: HealerConfig | None = None
    _notifiers: Notifiers | None = None
    _closed = False

    def __init__(
        self,
        config: HealerConfig | None = None,
        notifiers: Notifiers | None = None,
        *,
        journal: Store | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_queue: int = 1000,
    ) -> None:
        self._config = config
        self._notifiers = notifiers
        self._journal = journal
        self._metrics = metrics
        self._clock = clock
        self._public_url = (
            (config.public_url or f"http://{config.listen}") if config is not None else ""
        )
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(max_queue)
        self._worker: asyncio.Task[None] | None = None
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._recent: dict[str, collections.deque[float]] = {}
        self._groups: dict[str, _Group] = {}
        self._facts: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self._told: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()
        self._closed = False
        self._log = structlog.get_logger("healer.notices")

    @property
    def active(self) -> bool:
        """Anything to deliver to: a config and at least one notifier."""
        return self._config is not None and bool(self._notifiers) and not self._closed

    def tells(self, rule: str | None, event: str) -> bool:
        return self.active and self._config is not None and tells(self._config, rule, event)

    def check_found(
        self,
        heal_id: str,
        *,
        evidence: Mapping[str, Any],
        targets: Sequence[str],
        rule: str | None = None,
    ) -> None:
        """Remember what check found, for the heal's later notices (nothing is sent), if
        the heal's ``rule`` tells anything at all."""
        if self.active and any(self.tells(rule, e) for e in EVENTS):
            self._remember(heal_id, {"evidence": dict(evidence), "targets": tuple(targets)})

    def notice(self, notice: HealNotice) -> None:
        """Queue ``notice`` for delivery; returns at once, never raises."""
        try:
            self._notice(notice)
        except Exception:  # a notification never fails a heal
            self._log.exception("could not queue a notice", heal_id=notice.heal_id)

    def _notice(self, n: HealNotice) -> None:
        if not self.active:
            return
        n = self._merged(n)
        if not self.tells(n.rule, n.event):
            return
        if n.event == "not_recovered" and n.alert_key is not None:
            if n.alert_key in self._told:
                self._count(n.event, "told_before")
                return
            self._told[n.alert_key] = None
            while len(self._told) > _TOLD_ONCE:
                self._told.popitem(last=False)
        if n.event != "awaiting_approval" and self._grouped(n):
            self._count(n.event, "grouped")
            return
        self._put(("notice", n), n.event)

    def _remember(self, heal_id: str, facts: dict[str, Any]) -> None:
        self._facts.setdefault(heal_id, {}).update(facts)
        self._facts.move_to_end(heal_id)
        while len(self._facts) > _REMEMBERED:
            self._facts.popitem(last=False)

    def _merged(self, n: HealNotice) -> HealNotice:
        """``n`` with what earlier notices of its heal knew and it does not."""
        known = self._facts.get(n.heal_id, {})
        fill = {k: v for k, v in known.items() if not getattr(n, k)}
        if fill:
            n = replace(n, **fill)
        if n.outcome is not None or n.event in OUTCOME_EVENTS or n.event in APPROVAL_EVENTS:
            if n.event != "awaiting_approval":
                self._facts.pop(n.heal_id, None)  # the heal's last notice
        else:
            facts = {k: getattr(n, k) for k in ("evidence", "targets", "summary") if getattr(n, k)}
            if facts:
                self._remember(n.heal_id, facts)
        return n

    def _grouped(self, n: HealNotice) -> bool:
        """Past ``group.after`` notices of the rule within ``group.window``: fold ``n``
        into the rule's next summary (scheduled ``group.interval`` after the first)."""
        assert self._config is not None
        conf = self._config.notifications.group
        now = self._clock()
        recent = self._recent.setdefault(n.rule, collections.deque(maxlen=conf.after))
        storm = len(recent) == conf.after and now - recent[0] < conf.window
        recent.append(now)
        if not storm:
            return False
        group = self._groups.get(n.rule)
        if group is None:
            group = self._groups[n.rule] = _Group(due=now + conf.interval)
            loop = asyncio.get_running_loop()
            self._timers[n.rule] = loop.call_later(conf.interval, self._flush, n.rule)
        group.events[n.event] += 1
        group.heals.add(n.heal_id)
        group.last_heal = n.heal_id
        return True

    def _flush(self, rule: str) -> None:
        self._timers.pop(rule, None)
        group = self._groups.pop(rule, None)
        if group is not None and group.events:
            self._put(("summary", rule, group), "summary")

    def _put(self, item: _Item, event: str) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self._count(event, "dropped")
            self._log.warning("notice queue full: dropped", notice_event=event)
            return
        if self._worker is None:
            self._worker = asyncio.create_task(self._deliver(), name="heal-notices")

    def _count(self, event: str, result: str) -> None:
        if self._metrics is not None:
            self._metrics.notices.labels(event=event, result=result).inc()

    async def _deliver(self) -> None:
        """The one sender: notices in the order they came, each to every notifier at once
        (with the notifiers' retries)."""
        while True:
            item = await self._queue.get()
            try:
                await self._send(item)
            except asyncio.CancelledError:
                raise
            except Exception:
                self._log.exception("notice delivery crashed")
            finally:
                self._queue.task_done()

    async def _send(self, item: _Item) -> None:
        assert self._notifiers is not None and self._config is not None
        interval = self._config.notifications.group.interval
        event: str
        if item[0] == "notice":
            n = item[1]
            event, heal_id, phase = n.event, n.heal_id, _PHASES.get(n.event, "done")

            def body(notifier: Notifier) -> Mapping[str, Any]:
                return render(notifier.kind, n, self._public_url)

            extra: dict[str, Any] = {}
        else:
            _, rule, group = item
            event, heal_id, phase = "summary", group.last_heal, "done"

            def body(notifier: Notifier) -> Mapping[str, Any]:
                return render_summary(notifier.kind, rule, group, interval, self._public_url)

            extra = {"heals": len(group.heals), "events": dict(group.events)}
        deliveries = await self._notifiers.send_rendered(body)
        ok = all(d.ok for d in deliveries)
        self._count(event, "sent" if ok else "failed")
        await self._record(heal_id, phase, event, deliveries, extra)

    async def _record(
        self,
        heal_id: str,
        phase: str,
        event: str,
        deliveries: list[Delivery],
        extra: dict[str, Any],
    ) -> None:
        for d in deliveries:
            self._log.info(
                "notice delivery",
                heal_id=heal_id,
                notice_event=event,
                notifier=d.notifier,
                ok=d.ok,
                error=d.error,
            )
        if self._journal is None or not heal_id:
            return
        for d in deliveries:
            try:
                await self._journal.add_event(
                    heal_id, phase, "notify", {"event": event, **d.as_dict(), **extra}
                )
            except asyncio.CancelledError:
                raise
            except Exception:  # the journal may be down: the log line above stays
                self._log.exception("could not journal a notice delivery", heal_id=heal_id)

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait (bounded) until every queued notice was delivered (tests; shutdown)."""
        if self._worker is None:
            return
        waiter = asyncio.ensure_future(self._queue.join())
        done, _ = await asyncio.wait({waiter}, timeout=timeout)
        if not done:
            waiter.cancel()

    def flush(self) -> None:
        """Send every rule's pending summary now (shutdown; tests)."""
        for rule in list(self._groups):
            timer = self._timers.pop(rule, None)
            if timer is not None:
                timer.cancel()
            self._flush(rule)

    async def aclose(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (bounded by ``timeout``), then stop."""
        if self._closed:
            return
        self.flush()
        await self.drain(timeout)
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.wait({self._worker}, timeout=5)
            self._worker = None
