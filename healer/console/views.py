"""What the console's pages show, read from the services and redacted as the API does.

Usage::

    filters = HealFilters.parse(request.query_params)    # raises ValueError: bad filter
    heals, older = await heal_list(svc, filters, now=time.time())
    steps, samples = timeline(heal)
    rules = await rule_summaries(svc)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from healer.outcomes import Outcome, Phase
from healer.redact import redact_data
from healer.services import Services

PAGE = 50
# The time filter's choices: heals created in the last ...
SINCE = {"1h": 3600.0, "6h": 6 * 3600.0, "24h": 86400.0, "7d": 7 * 86400.0, "30d": 30 * 86400.0}
# Outcomes after which the heal acted: the rules page lists them as recent actions.
ACTED = {"recovered", "not_recovered", "unverified"}
# The step a timeline entry belongs to (anything else is a note).
STEPS = {
    "matched": "match",
    "manual_trigger": "match",
    "note": "note",
    "min_firing_wait": "gate",
    "min_firing_reached": "gate",
    "check": "check",
    "refused": "gate",
    "escalation": "gate",
    "suggested": "gate",
    "dry_run": "gate",
    "approval_requested": "approval",
    "approved": "approval",
    "rejected": "approval",
    "approval_expired": "approval",
    "not_approved": "approval",
    "act": "action",
    "verify_start": "verify",
    "verify_sample": "verify",
    "verification_resumed": "verify",
    "outcome": "outcome",
}


@dataclass(frozen=True, slots=True)
class HealFilters:
    rule: str | None = None
    outcome: str | None = None
    target: str | None = None
    since: str | None = None  # a key of SINCE
    awaiting: bool = False  # only heals awaiting approval
    before: float | None = None  # paging: created_at of the last heal shown

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> HealFilters:
        """The filters of a list URL (empty fields: no filter); ValueError names a bad one."""

        def text(name: str) -> str | None:
            value = (query.get(name) or "").strip()
            return value[:300] or None

        outcome, since, before = text("outcome"), text("since"), text("before")
        if outcome is not None and outcome not in {o.value for o in Outcome}:
            raise ValueError(f"unknown outcome {outcome[:40]!r}")
        if since is not None and since not in SINCE:
            raise ValueError(f"since: one of {', '.join(SINCE)}")
        try:
            cursor = float(before) if before is not None else None
        except ValueError:
            raise ValueError("before: a time in epoch seconds") from None
        return cls(
            rule=text("rule"),
            outcome=outcome,
            target=text("target"),
            since=since,
            awaiting=query.get("awaiting") == "1",
            before=cursor,
        )

    def query(self, **change: Any) -> str:
        """This filter's query string, with ``change`` applied (for the "older" link)."""
        fields = {
            "rule": self.rule,
            "outcome": self.outcome,
            "target": self.target,
            "since": self.since,
            "awaiting": "1" if self.awaiting else None,
            "before": self.before,
            **change,
        }
        return urlencode({k: v for k, v in fields.items() if v is not None})


async def heal_list(
    svc: Services, filters: HealFilters, *, now: float
) -> tuple[list[dict[str, Any]], str | None]:
    """Heals newest first as the filters ask, redacted; and the query of the next (older)
    page, None when this one is the last."""
    heals = await svc.journal.list_heals(
        rule=filters.rule,
        outcome=filters.outcome,
        target=filters.target,
        limit=PAGE,
        before=filters.before,
        phase=Phase.AWAITING_APPROVAL.value if filters.awaiting else None,
        since=now - SINCE[filters.since] if filters.since else None,
    )
    older = filters.query(before=heals[-1]["created_at"]) if len(heals) == PAGE else None
    return [dict(h) for h in redact_data(heals)], older


def timeline(heal: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The heal's timeline as steps (each entry with its ``step``), and its verify samples."""
    steps = [{**e, "step": STEPS.get(e["kind"], "note")} for e in heal["timeline"]]
    samples = [e for e in heal["timeline"] if e["kind"] == "verify_sample"]
    return steps, samples


async def rule_summaries(svc: Services, recent: int = 10) -> list[dict[str, Any]]:
    """Each configured rule with its recent outcomes, its circuits and its cooldown."""
    circuits = await svc.gates.circuits()
    out = []
    for rule in svc.config.rules:
        heals = await svc.journal.list_heals(rule=rule.name, limit=recent)
        limits = svc.gates.limits(rule.name)
        acted: dict[str, dict[str, Any]] = {}
        for heal in heals:  # newest first: the first heal per target is its last action
            if heal["outcome"] in ACTED:
                for target in heal["targets"]:
                    acted.setdefault(target, dict(heal))
        out.append(
            {
                "name": rule.name,
                "handler": rule.handler,
                "match": str(rule.match),
                "mode": rule.mode,
                "dry_run": rule.dry_run,
                "heals": redact_data(heals),
                "circuits": [c for c in circuits if c["rule"] == rule.name],
                "cooldown": limits.cooldown if limits is not None else None,
                "budget": limits,
                "acted": redact_data(acted),
            }
        )
    return out
