"""Do-no-harm gates the executor passes before acting: the target allowlist and
per-target locks (two alerts on one container never act on it at once).

Usage::

    allow = Allowlist(config.allow)
    if (why := allow.refusal(target)) is not None: ...      # -> refused
    async with locks.hold(["docker:web-1"]) as held:
        if not held: ...                                     # -> suppressed (in flight)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from fnmatch import fnmatchcase

from healer.api import Target


class Allowlist:
    """Each entry maps target fields to glob patterns; a target is allowed when
    every field of at least one entry matches (a field it lacks never matches)."""

    def __init__(self, entries: Iterable[Mapping[str, str]]) -> None:
        self._entries = [dict(e) for e in entries]

    def refusal(self, target: Target) -> str | None:
        fields = target.fields()
        for entry in self._entries:
            if all(k in fields and fnmatchcase(fields[k], pattern) for k, pattern in entry.items()):
                return None
        if not self._entries:
            return f"{target.key} refused: the allowlist is empty"
        return f"{target.key} is outside the allowlist"


class TargetLocks:
    """Non-blocking per-target locks: a heal that finds its target busy is
    suppressed rather than queued, so a burst of alerts never becomes a burst
    of actions."""

    def __init__(self) -> None:
        self._held: set[str] = set()

    @asynccontextmanager
    async def hold(self, keys: Iterable[str]) -> AsyncIterator[bool]:
        wanted = sorted(set(keys))
        if any(k in self._held for k in wanted):
            yield False
            return
        # Single event loop: check-and-take above and below happen without an await between.
        self._held.update(wanted)
        try:
            yield True
        finally:
            self._held.difference_update(wanted)
            await asyncio.sleep(0)

    def busy(self, key: str) -> bool:
        return key in self._held
