"""Backend-neutral pieces of the stores: what a delivery's alerts are (new, repeated,
resolved, stale, unmatched, started) given the rows already stored, and how stored rows
become the typed rows callers see (:mod:`healer.store.types`, one builder per row
type). Both :mod:`healer.store.sqlite` and :mod:`healer.store.postgres` call these,
so the two backends cannot drift apart in meaning; each keeps its own SQL and its own
way of running it (sync sqlite3, asyncpg).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from healer.store.types import (
    ApprovalRow,
    ApprovalVerdict,
    CircuitRow,
    Disposition,
    FollowUpHeal,
    HealDetail,
    HealPlan,
    HealRow,
    PauseRow,
    ReceivedAlert,
    Replica,
    StepRow,
    TakenHeal,
    alert_key_time,
    dumps,
)

# (fingerprint, starts_at, status) of one stored alert row.
AlertRowKey = tuple[str, str, str]
# That key -> (disposition, heal_id) of every stored row a delivery may repeat.
Known = dict[AlertRowKey, tuple[str, str | None]]
Kind = Literal["resolved", "stale", "ignored", "started"]
NO_RULE = "no rule matches"


def key_alerts(alerts: Sequence[ReceivedAlert]) -> list[tuple[ReceivedAlert, str]]:
    """Each alert with its startsAt as stored (formatted once per distinct time)."""
    starts_cache: dict[datetime, str] = {}
    keyed = []
    for alert in alerts:
        starts = starts_cache.get(alert.starts_at)
        if starts is None:
            starts = starts_cache[alert.starts_at] = alert_key_time(alert.starts_at)
        keyed.append((alert, starts))
    return keyed


def only_noise(alerts: Sequence[ReceivedAlert], plans: Sequence[HealPlan | None]) -> bool:
    """Whether no alert of a post keeps a row: every one firing, and no rule matches any
    (see :func:`all_ignored`)."""
    return all(plan is None for plan in plans) and all(a.status == "firing" for a in alerts)


def row_copies(
    keyed: Sequence[tuple[ReceivedAlert, str]], wanted: set[tuple[str, str]]
) -> dict[AlertRowKey, int]:
    """How many copies of each row key a delivery carries, for the alerts it looks up."""
    copies: dict[AlertRowKey, int] = {}
    for alert, starts in keyed:
        if (alert.fingerprint, starts) in wanted:
            key = (alert.fingerprint, starts, alert.status)
            copies[key] = copies.get(key, 0) + 1
    return copies


def looked_up(
    keyed: Sequence[tuple[ReceivedAlert, str]], plans: Sequence[HealPlan | None]
) -> set[tuple[str, str]]:
    """The (fingerprint, startsAt) whose stored rows an ingest reads: the alerts a rule
    matches, and resolved ones (a rule matched the alert while it fired, maybe). A firing
    alert no rule matches keeps no row and is never looked up: most of what Alertmanager
    sends is such noise, and its body is all the journal keeps of it."""
    return {
        (alert.fingerprint, starts)
        for (alert, starts), plan in zip(keyed, plans, strict=True)
        if plan is not None or alert.status == "resolved"
    }


class IngestBatch:
    """One delivery's bookkeeping: the rows to insert, the repeats to count and the
    dispositions to answer, decided from ``known`` (the rows stored before) and from
    the rows this batch inserts. The backend runs the side effects (noting a resolved
    alert on its open heals, inserting a heal) and the SQL.

    Rows are kept only for alerts a rule matches and for the resolved notice of an alert
    that has one; every other alert is answered ``ignored`` and lives only in the
    delivery's body (``alert_log`` reads it from there), so a re-sent unmatched alert is
    ``ignored`` again rather than a ``duplicate``."""

    def __init__(self, known: Known, now: float) -> None:
        self.known = known
        self.now = now
        self.inserts: dict[AlertRowKey, list[Any]] = {}
        self.repeats: dict[AlertRowKey, int] = {}
        self.out: list[Disposition] = []
        self.unmatched = 0
        # Rows whose receipts the backend counted before deciding (the PostgreSQL
        # store's _count_repeats): answered as duplicates, not counted again.
        self.counted: set[AlertRowKey] = set()

    def ignore_unmatched(self, alert: ReceivedAlert, starts: str, plan: HealPlan | None) -> bool:
        """Answer the alert ``ignored`` without a row if no rule matches it and no row of
        its identity is stored (or inserted by this batch); False: it keeps a row."""
        if plan is not None:
            return False
        fingerprint = alert.fingerprint
        for status in ("firing", "resolved"):
            key = (fingerprint, starts, status)
            if key in self.known or key in self.inserts:
                return False
        self.unmatched += 1
        self.out.append(Disposition(fingerprint, "ignored", reason=NO_RULE))
        return True

    def keeps_body(self, fresh_unmatched: bool) -> bool:
        """Whether the delivery row is written: it brings new alert rows, or unmatched
        alerts in a body not kept lately (``fresh_unmatched``, see :class:`RecentBodies`)."""
        return bool(self.inserts) or (self.unmatched > 0 and fresh_unmatched)

    def repeat(self, alert: ReceivedAlert, starts: str) -> bool:
        """Count and answer the alert as a duplicate if it was received before (in an
        earlier delivery or earlier in this one); False: it is new."""
        key = (alert.fingerprint, starts, alert.status)
        seen = self.known.get(key)
        if seen is None and key not in self.inserts:
            return False
        if seen is None:
            row = self.inserts[key]
            row[7] += 1  # times_seen of a row this batch inserts
            disposition, heal_id = row[8], row[9]
        else:
            if key not in self.counted:
                self.repeats[key] = self.repeats.get(key, 0) + 1
            disposition, heal_id = seen
        self.out.append(
            Disposition(
                alert.fingerprint, "duplicate", heal_id, reason=f"already received ({disposition})"
            )
        )
        return True

    def kind(self, alert: ReceivedAlert, starts: str, plan: HealPlan | None) -> Kind:
        """What a new alert is: resolved, stale (a late re-send, by a slow HA peer or a
        retry, of an alert already seen resolved), ignored (no rule) or started."""
        resolved_key = (alert.fingerprint, starts, "resolved")
        if alert.status == "resolved":
            return "resolved"
        if resolved_key in self.known or resolved_key in self.inserts:
            return "stale"
        return "ignored" if plan is None else "started"

    def add(
        self,
        idx: int,
        alert: ReceivedAlert,
        starts: str,
        kind: Kind,
        plan: HealPlan | None,
        heal_id: str | None,
    ) -> None:
        """Record a new alert's row and answer it."""
        if kind == "resolved":
            result = Disposition(alert.fingerprint, "resolved")
        elif kind == "stale":
            result = Disposition(
                alert.fingerprint, "ignored", reason="stale: this alert was already resolved"
            )
        elif kind == "ignored" or plan is None:
            result = Disposition(alert.fingerprint, "ignored", reason=NO_RULE)
        else:
            result = Disposition(alert.fingerprint, "started", heal_id, plan.rule, plan=plan)
        self.inserts[(alert.fingerprint, starts, alert.status)] = [
            alert.fingerprint,
            starts,
            alert.status,
            alert.name,
            idx,
            self.now,
            self.now,
            1,
            kind,
            heal_id,
        ]
        self.out.append(result)

    def insert_rows(self, delivery: Any) -> list[tuple[Any, ...]]:
        """The new alert rows, in the column order of ``alerts`` (delivery_id last)."""
        return [(*row, delivery) for row in self.inserts.values()]

    def repeat_rows(self) -> list[tuple[Any, ...]]:
        """(times more, last_seen, fingerprint, starts_at, status) per repeated row."""
        return [(n, self.now, *key) for key, n in self.repeats.items()]


class RecentBodies:
    """The bodies of unmatched alerts this process journaled lately, by their hash (a
    keyed SipHash: not predictable from outside), at most ``size``, the oldest forgotten
    first. Alertmanager re-sends every firing group each ``group_interval``, the same
    body as long as the group is unchanged: a post whose body was kept lately keeps no
    second copy (one with a new alert row still does), so noise costs the journal one
    body per group state, not one per re-send. Per process and forgotten on restart: a
    re-send then keeps its body once more, which loses nothing."""

    def __init__(self, size: int = 16_384) -> None:
        self._size = size
        self._kept: dict[tuple[int, int], None] = {}

    @staticmethod
    def key(body: str) -> tuple[int, int]:
        return hash(body), len(body)

    def kept(self, key: tuple[int, int]) -> bool:
        return key in self._kept

    def add(self, key: tuple[int, int]) -> None:
        """Remember a body, once its delivery committed."""
        self._kept[key] = None
        if len(self._kept) > self._size:
            del self._kept[next(iter(self._kept))]


def all_ignored(alerts: Sequence[ReceivedAlert]) -> list[Disposition]:
    """The answer to a post of which no alert keeps a row (no rule matches any, none is
    resolved): the common case of noise, answered without the per-alert bookkeeping."""
    return [Disposition(a.fingerprint, "ignored", reason=NO_RULE) for a in alerts]


def heal_row(row: Mapping[str, Any]) -> HealRow:
    """A stored heal row as callers see it (JSON columns decoded, no lease token)."""
    return {
        "id": row["id"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "source": row["source"],
        "rule": row["rule"],
        "handler": row["handler"],
        "fingerprint": row["fingerprint"],
        "alert_starts_at": row["alert_starts_at"],
        "labels": json.loads(row["labels"]),
        "annotations": json.loads(row["annotations"]),
        "params": json.loads(row["params"]),
        "verify": json.loads(row["verify"]),
        "dry_run": bool(row["dry_run"]),
        "targets": json.loads(row["targets"]),
        "phase": row["phase"],
        "outcome": row["outcome"],
        "reason": row["reason"],
        "finished_at": row["finished_at"],
        "durations": json.loads(row["durations"]),
        "owner": row["owner"],
        "lease_until": row["lease_until"],
    }


def step_row(e: Mapping[str, Any]) -> StepRow:
    """A stored event row as a timeline entry."""
    return {
        "seq": e["seq"],
        "at": e["at"],
        "phase": e["phase"],
        "kind": e["kind"],
        "data": json.loads(e["data"]),
        "replica": e["replica"],
    }


def heal_detail(row: Mapping[str, Any], events: Iterable[Mapping[str, Any]]) -> HealDetail:
    """A stored heal row with its event rows (in seq order) as its timeline."""
    return HealDetail(**heal_row(row), timeline=[step_row(e) for e in events])


def taken_heal(row: Mapping[str, Any], taken_from: str | None) -> TakenHeal:
    """A stored heal row just taken over from ``taken_from``."""
    return TakenHeal(**heal_row(row), taken_from=taken_from)


def follow_up_heal(row: Mapping[str, Any] | None) -> FollowUpHeal | None:
    """The columns of a heal a follow-up claim reads, JSON decoded (None: no heal, or a
    manual one: no alert, no rule)."""
    if row is None or row["fingerprint"] is None or row["rule"] is None:
        return None
    return {
        "id": row["id"],
        "rule": row["rule"],
        "fingerprint": row["fingerprint"],
        "alert_starts_at": row["alert_starts_at"],
        "labels": json.loads(row["labels"]),
        "annotations": json.loads(row["annotations"]),
        "targets": json.loads(row["targets"]),
        "phase": row["phase"],
        "outcome": row["outcome"],
        "reason": row["reason"],
        "finished_at": row["finished_at"],
    }


def circuit_row(row: Mapping[str, Any]) -> CircuitRow:
    """A stored circuit row as callers see it (its escalation decoded)."""
    return {
        "rule": row["rule"],
        "target": row["target"],
        "state": row["state"],
        "opened_at": row["opened_at"],
        "opened_by": row["opened_by"],
        "reason": row["reason"],
        "last_alert_at": row["last_alert_at"],
        "suppressed": row["suppressed"],
        "escalated_by": row["escalated_by"],
        "escalation": json.loads(row["escalation"]) if row["escalation"] else None,
        "closed_at": row["closed_at"],
        "closed_by": row["closed_by"],
    }


def pause_row(row: Mapping[str, Any] | None, now: float) -> PauseRow | None:
    """The stored pause if it is still active at ``now`` (an expired one is none)."""
    if row is None or row["until"] <= now:
        return None
    return {"since": row["since"], "until": row["until"], "reason": row["reason"]}


def approval_row(row: Mapping[str, Any] | None) -> ApprovalRow | None:
    """A stored approvals row (JSON targets decoded; never the token's hash)."""
    if row is None:
        return None
    return {
        "heal_id": row["heal_id"],
        "opened_at": row["opened_at"],
        "expires_at": row["expires_at"],
        "targets": json.loads(row["targets"]),
        "decision": row["decision"],
        "decided_by": row["decided_by"],
        "via": row["via"],
        "comment": row["comment"],
        "decided_at": row["decided_at"],
    }


def judge_decision(
    row: Mapping[str, Any] | None, heal_phase: str | None, token_hash: str | None, now: float
) -> ApprovalVerdict | None:
    """Why a decision on this stored approval must be refused, or None: it may be taken.
    Checked in this order, so that a wrong token learns nothing of the heal's state:
    unknown, bad token, closed (decided, expired, heal done)."""
    if row is None or heal_phase is None:
        return ApprovalVerdict("unknown")
    if token_hash is not None and not hmac.compare_digest(token_hash, row["token_hash"]):
        return ApprovalVerdict("bad_token")
    if row["decision"] is not None or heal_phase == "done" or row["expires_at"] <= now:
        return ApprovalVerdict("done", approval_row(row))
    return None


HEAL_COLUMNS = (
    "id", "created_at", "updated_at", "source", "rule", "handler", "fingerprint",
    "alert_starts_at", "labels", "annotations", "params", "verify", "dry_run", "phase",
    "owner", "lease_token", "lease_until",
)  # fmt: skip
"""The columns of a new heal row, in the order of :func:`new_heal_values`."""


def new_heal_values(
    heal_id: str,
    created: float,
    now: float,
    source: str,
    plan: HealPlan,
    alert: ReceivedAlert | None,
    labels: Mapping[str, str] | None,
    annotations: Mapping[str, str] | None,
    me: Replica,
) -> tuple[Any, ...]:
    """A new pending heal's row (:data:`HEAL_COLUMNS`), leased to ``me``: the same values
    for both stores, only the placeholders differ."""
    return (
        heal_id,
        created,
        now,
        source,
        plan.rule,
        plan.handler,
        alert.fingerprint if alert else None,
        alert.starts_at.isoformat() if alert else None,
        dumps(labels or {}),
        dumps(annotations or {}),
        dumps(plan.params),
        dumps(plan.verify),
        int(plan.dry_run),
        "pending",
        me.id,
        me.token,
        now + me.lease_ttl,
    )
