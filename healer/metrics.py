"""healer's own metrics, on a registry the app factory creates (never the default one).

Usage::

    metrics = Metrics(CollectorRegistry())
    metrics.heals.labels(rule="r", handler="docker.restart", outcome="recovered").inc()
    generate_latest(metrics.registry)   # what GET /metrics serves (healer/http/health.py)
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_PHASE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_RECOVERY_BUCKETS = (5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.alerts_received = Counter(
            "healer_alerts_received",
            "Alerts received by the webhook, by alert status.",
            ["status"],
            registry=registry,
        )
        self.heals = Counter(
            "healer_heals",
            "Heals ended, by rule, handler and outcome.",
            ["rule", "handler", "outcome"],
            registry=registry,
        )
        self.heal_duration = Histogram(
            "healer_heal_duration_seconds",
            "Time spent per heal phase.",
            ["rule", "handler", "phase"],
            buckets=_PHASE_BUCKETS,
            registry=registry,
        )
        self.time_to_recovery = Histogram(
            "healer_time_to_recovery_seconds",
            "From the alert's startsAt to verified recovery.",
            ["rule"],
            buckets=_RECOVERY_BUCKETS,
            registry=registry,
        )
        self.in_progress = Gauge(
            "healer_heals_in_progress", "Heals currently running.", registry=registry
        )
        self.awaiting_approval = Gauge(
            "healer_heals_awaiting_approval",
            "Heals of this process waiting for a human to approve or reject them "
            "(mode: approve), by rule.",
            ["rule"],
            registry=registry,
        )
        self.circuit_open = Gauge(
            "healer_circuit_open",
            "1 while a rule's action budget is spent.",
            ["rule"],
            registry=registry,
        )
        self.follow_ups = Counter(
            "healer_follow_ups",
            "What followed a not_recovered heal of an alert that kept "
            "firing (escalate, retry), by rule.",
            ["rule", "kind"],
            registry=registry,
        )
        self.notices = Counter(
            "healer_notices",
            "Heal notices (notify_on, approvals; healer/notices.py), by event and result: "
            "sent, failed (a notifier not reached), grouped (into a summary; event summary), "
            "told_before (not_recovered of an alert already told), dropped (queue full).",
            ["event", "result"],
            registry=registry,
        )
        self.chat_callbacks = Counter(
            "healer_chat_callbacks",
            "Approve/reject button callbacks from Slack and Mattermost, by platform and "
            "result (decided, refused, not_awaiting, invalid, unavailable).",
            ["platform", "result"],
            registry=registry,
        )
        self.webhook_requests = Counter(
            "healer_webhook_requests",
            "Webhook requests answered, by HTTP status code "
            "(499: the client left before its whole body arrived).",
            ["code"],
            registry=registry,
        )
        self.journal_pruned_rows = Counter(
            "healer_journal_pruned_rows",
            "Journal rows removed by retention (docs/operations.md#journal-size), by table.",
            ["table"],
            registry=registry,
        )
        self.journal_last_prune = Gauge(
            "healer_journal_last_prune_timestamp_seconds",
            "When this process last finished a prune round (0: not yet).",
            registry=registry,
        )
        # The webhook's children, looked up once instead of through labels() (a lock, a
        # label check and a dict lookup) on every request.
        self.alerts_by_status = {
            status: self.alerts_received.labels(status=status) for status in ("firing", "resolved")
        }
        self._webhook_codes: dict[int, Counter] = {}

    def webhook_answered(self, code: int) -> None:
        """Count one webhook request answered with ``code``."""
        child = self._webhook_codes.get(code)
        if child is None:
            child = self._webhook_codes[code] = self.webhook_requests.labels(code=str(code))
        child.inc()

    def start_series(self, rules: Iterable[tuple[str, str]], outcomes: Iterable[str]) -> None:
        """Export every configured rule's series at 0 from the start (``rules``: (name,
        handler) pairs): a series that first appears at 1 is invisible to ``rate()`` and
        ``increase()``, so a dashboard would miss each rule's first heal of each outcome
        and its first time to recovery. Manual heals' series start at their first heal."""
        outcomes = list(outcomes)
        for rule, handler in rules:
            for outcome in outcomes:
                self.heals.labels(rule=rule, handler=handler, outcome=outcome)
            self.time_to_recovery.labels(rule=rule)
            self.circuit_open.labels(rule=rule)
