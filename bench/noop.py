"""``bench.noop``: a handler that does nothing, so a benchmark measures the engine alone.

``check`` notes the wall-clock time it started (``evidence.check_started_at``: the end of
the dispatch path) and names one target from the alert; ``act`` returns at once. It is
registered the way any third-party plugin is, through the ``healer.handlers`` entry-point
group: :func:`plugin_path` writes a dist-info for it into a directory that the healer
process gets on its ``PYTHONPATH``. It is written in the one style of every handler
(docs/writing-handlers.md): a module-level ``Params`` model, and ``check``/``act``
annotated with it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from healer.api import ActResult, CheckResult, HandlerParams, HealContext, Target


class NoopParams(HandlerParams):
    target: str = "noop"


class Noop:
    name = "bench.noop"
    Params = NoopParams
    requires: frozenset[str] = frozenset()  # needs nothing

    async def check(self, ctx: HealContext, params: NoopParams) -> CheckResult:
        started = time.time()
        return CheckResult(
            targets=[Target(kind="bench", name=params.target)],
            evidence={"check_started_at": started},
        )

    async def act(self, ctx: HealContext, params: NoopParams, check: CheckResult) -> ActResult:
        return ActResult(summary=f"nothing done to {params.target}")


NAME = Noop.name


def noop_rule(name: str, alertname: str, target: str, **extra: Any) -> dict[str, Any]:
    """A rule running ``bench.noop`` on ``target`` for alerts named ``alertname``."""
    return {
        "name": name,
        "match": [f'alertname="{alertname}"'],
        "handler": NAME,
        "params": {"target": target},
        **extra,
    }


def noop_config(rules: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """healer config for benchmarks: ``rules``, bench targets allowed, and no cooldown
    or budget in the way of back-to-back heals."""
    return {
        "allow": [{"kind": "bench"}],
        "safety": {"cooldown": "0s", "budget": {"max_actions": 1000}},
        "rules": rules,
        **extra,
    }


def plugin_path(workdir: Path) -> Path:
    """A directory holding an installed-distribution record for ``bench.noop``."""
    root = workdir / "plugins"
    info = root / "healer_bench_noop-0.1.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: healer-bench-noop\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[healer.handlers]\n{NAME} = bench.noop:Noop\n")
    return root
