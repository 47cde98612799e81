"""Heals waiting for their alert's ``min_firing``: one event-loop timer each, no task and
no polling, indexed by alert so that a resolved notification ends them at once.

Usage (the executor)::

    waits = FiringWaits[HealJob]()
    waits.add(job.heal_id, (fingerprint, starts_key), delay=42.0, item=job, due=start)
    # ... 42 s later: start(job) is called, from the event loop
    for job in waits.resolved((fingerprint, starts_key)): ...   # timers cancelled
    waits.clear()                     # shutdown: the heals stay pending in the journal

A timer is a ``loop.call_later`` handle: the event loop keeps them all in its one heap
and sleeps until the earliest is due, so thousands of waiting heals cost memory, not
CPU, and each holds no concurrency slot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
AlertKey = tuple[str, str]


class FiringWaits(Generic[T]):
    def __init__(self) -> None:
        self._timers: dict[str, tuple[AlertKey, asyncio.TimerHandle, T]] = {}
        self._by_alert: dict[AlertKey, set[str]] = {}

    def __len__(self) -> int:
        return len(self._timers)

    def __contains__(self, heal_id: object) -> bool:
        return heal_id in self._timers

    def ids(self) -> list[str]:
        """The heals waiting."""
        return list(self._timers)

    def add(
        self, heal_id: str, alert: AlertKey, *, delay: float, item: T, due: Callable[[T], None]
    ) -> None:
        """Call ``due(item)`` after ``delay`` seconds unless the alert resolves first."""
        self.cancel(heal_id)
        handle = asyncio.get_running_loop().call_later(max(delay, 0.0), self._fire, heal_id, due)
        self._timers[heal_id] = (alert, handle, item)
        self._by_alert.setdefault(alert, set()).add(heal_id)

    def resolved(self, alert: AlertKey) -> list[T]:
        """The alert resolved: cancel its heals' timers; their items, to be ended."""
        return [
            item
            for heal_id in sorted(self._by_alert.get(alert, ()))
            if (item := self.cancel(heal_id)) is not None
        ]

    def cancel(self, heal_id: str) -> T | None:
        entry = self._timers.pop(heal_id, None)
        if entry is None:
            return None
        alert, handle, item = entry
        handle.cancel()
        heals = self._by_alert.get(alert)
        if heals is not None:
            heals.discard(heal_id)
            if not heals:
                del self._by_alert[alert]
        return item

    def clear(self) -> None:
        for heal_id in list(self._timers):
            self.cancel(heal_id)

    def _fire(self, heal_id: str, due: Callable[[T], None]) -> None:
        item = self.cancel(heal_id)
        if item is not None:
            due(item)
