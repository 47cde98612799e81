"""The no-op handler: names one target and changes nothing, so a benchmark measures the
engine alone and a test drives the engine's paths (the one no-op handler of the repo).

``check`` notes the wall-clock time it started (``evidence.check_started_at``: the end of
the dispatch path) and names the target ``<kind>:<params.target>``; ``act`` returns at
once. As ``bench.noop`` (targets ``bench:<name>``) it is registered the way any
third-party plugin is, through the ``healer.handlers`` entry-point group:
:func:`plugin_path` writes a dist-info for it into a directory that the healer process
gets on its ``PYTHONPATH``. Tests register it as ``test.noop`` (tests/support/inprocess/noop.py)
with ``record=True``, and steer it through its attributes:

    checks / acts   the params each call got (only with ``record``: a benchmark's healer
                    must not grow with every heal)
    check_gate      an ``asyncio.Event`` ``check`` waits for (after noting the call)
    gate            an ``asyncio.Event`` ``act`` waits for (after noting the call)
    notes           timeline kinds ``act`` adds with ``ctx.record_soon``
    explode_in      (a param) "check" or "act": that step raises
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from healer.api import ActResult, CheckResult, HandlerParams, HealContext, Target

NAME = "bench.noop"


class NoopParams(HandlerParams):
    target: str = Field(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$")
    # Which step raises ("check" or "act"), to exercise the engine's failure path. A plain
    # string so that a rule may take it from a label template.
    explode_in: str = Field(default="", max_length=16)


class Noop:
    """Names one target (``<kind>:<target>``) and changes nothing."""

    name: ClassVar[str] = NAME
    Params = NoopParams
    requires: ClassVar[frozenset[str]] = frozenset()
    kind: ClassVar[str] = "bench"  # the kind of the target it names

    def __init__(self, *, record: bool = False) -> None:
        self.record = record
        self.checks: list[NoopParams] = []
        self.acts: list[NoopParams] = []
        self.check_gate: asyncio.Event | None = None
        self.gate: asyncio.Event | None = None
        self.notes: list[str] = []

    async def check(self, ctx: HealContext, params: NoopParams) -> CheckResult:
        started = time.time()
        if self.record:
            self.checks.append(params)
        if self.check_gate is not None:
            await self.check_gate.wait()
        if params.explode_in == "check":
            raise RuntimeError(f"boom while checking {params.target}")
        return CheckResult(
            targets=[Target(kind=self.kind, name=params.target)],
            evidence={"target": params.target, "check_started_at": started},
        )

    async def act(self, ctx: HealContext, params: NoopParams, check: CheckResult) -> ActResult:
        if self.record:
            self.acts.append(params)
        for kind in self.notes:
            ctx.record_soon(kind, {"target": params.target})
        if self.gate is not None:
            await self.gate.wait()
        if params.explode_in == "act":
            raise RuntimeError(f"boom while acting on {params.target}")
        return ActResult(summary=f"poked {params.target}")


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
