"""``healer serve`` leaves its start-up heap out of later garbage collections
(healer.server.freeze_heap): a full collection walking every module, route and model
stalled all requests for tens of milliseconds under load. Run in a child process, so that
this test process's own collector is left alone."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import gc
import healer.app
from healer.server import freeze_heap
before = gc.get_freeze_count()
freeze_heap()
print(before, gc.get_freeze_count(), len(gc.get_objects()))
"""


def test_start_up_objects_are_frozen_out_of_garbage_collection() -> None:
    """After freeze_heap, the objects start-up made (the app's modules: tens of
    thousands) are in the permanent generation, and none is left for the collector."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    before, frozen, tracked = (int(x) for x in out)
    assert before == 0
    assert frozen > 10_000
    assert tracked < frozen // 100
