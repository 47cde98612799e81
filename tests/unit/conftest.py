"""Fixtures for unit tests: a no-op handler plugin that records its calls.

    noop        a fresh ``Noop`` instance: ``.checks`` / ``.acts`` list the params it
                was called with; set ``.gate`` to an ``asyncio.Event`` to hold ``act``,
                ``.check_gate`` to hold ``check`` (after it is recorded in ``.checks``),
                ``.notes`` to timeline kinds ``act`` adds with ``ctx.record_soon``
    handlers    a ``HandlerRegistry`` from the real entry points plus ``noop``
                registered as ``test.noop``

Nothing here fakes Docker or PostgreSQL: the no-op handler never touches either.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar

import pytest
from pydantic import Field

from healer.api import ActResult, CheckResult, HandlerParams, HealContext, Target
from healer.plugins import HandlerRegistry


class NoopParams(HandlerParams):
    target: str = Field(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$")
    # Which step raises ("check" or "act"), to exercise the engine's failure path. A plain
    # string so that a rule may take it from a label template.
    explode_in: str = Field(default="", max_length=16)


class Noop:
    """Names one target (``test:<target>``) and changes nothing."""

    name: ClassVar[str] = "test.noop"
    Params: ClassVar[type[HandlerParams]] = NoopParams
    requires: ClassVar[frozenset[str]] = frozenset()

    def __init__(self) -> None:
        self.checks: list[NoopParams] = []
        self.acts: list[NoopParams] = []
        self.gate: asyncio.Event | None = None
        self.check_gate: asyncio.Event | None = None
        self.notes: list[str] = []

    async def check(self, ctx: HealContext, params: NoopParams) -> CheckResult:
        self.checks.append(params)
        if self.check_gate is not None:
            await self.check_gate.wait()
        if params.explode_in == "check":
            raise RuntimeError(f"boom while checking {params.target}")
        return CheckResult(
            targets=[Target(kind="test", name=params.target)], evidence={"target": params.target}
        )

    async def act(self, ctx: HealContext, params: NoopParams, check: CheckResult) -> ActResult:
        self.acts.append(params)
        for kind in self.notes:
            ctx.record_soon(kind, {"target": params.target})
        if self.gate is not None:
            await self.gate.wait()
        if params.explode_in == "act":
            raise RuntimeError(f"boom while acting on {params.target}")
        return ActResult(summary=f"poked {params.target}")


@pytest.fixture
def noop() -> Noop:
    return Noop()


@pytest.fixture
def handlers(noop: Noop) -> HandlerRegistry:
    return HandlerRegistry.from_entry_points(("test.noop", noop))
