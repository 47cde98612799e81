"""Where an alert is matched: the first rule whose matchers accept the alert's
labels decides which handler runs, with which params and how it is verified.

Usage::

    rules = RuleSet(config)
    plan = rules.plan_for(alert)           # HealPlan | None
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from healer.config import HealerConfig, RuleConfig
from healer.store import HealPlan, ReceivedAlert


class RuleSet:
    def __init__(self, config: HealerConfig) -> None:
        self._config = config

    def match(self, labels: Mapping[str, str]) -> RuleConfig | None:
        """Rules are tried in file order, like Alertmanager routes without ``continue``."""
        return next((r for r in self._config.rules if r.match.matches(labels)), None)

    def get(self, name: str) -> RuleConfig | None:
        return self._config.rule(name)

    def verify_spec(
        self, rule: RuleConfig | None, override: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The rule's verify settings with the global defaults filled in."""
        defaults = self._config.verify
        spec = rule.verify if rule is not None else None
        out: dict[str, Any] = {
            "query": spec.query if spec else None,
            "stable_for": spec.stable_for
            if spec and spec.stable_for is not None
            else defaults.stable_for,
            "timeout": spec.timeout if spec and spec.timeout is not None else defaults.timeout,
            "interval": spec.interval if spec else None,
        }
        out.update({k: v for k, v in (override or {}).items() if v is not None})
        if rule is not None and rule.engine is not None:
            # Journaled with the heal (HealJob.engine): a resumed heal keeps its engine.
            out["engine"] = rule.engine
        return out

    def plan(self, rule: RuleConfig, *, dry_run: bool = False) -> HealPlan:
        return HealPlan(
            rule=rule.name,
            handler=rule.handler,
            params=dict(rule.params),
            verify=self.verify_spec(rule),
            dry_run=dry_run or rule.dry_run or self._config.dry_run,
        )

    def plan_for(self, alert: ReceivedAlert) -> HealPlan | None:
        rule = self.match(alert.labels)
        return self.plan(rule) if rule is not None else None
