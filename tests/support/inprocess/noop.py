"""The no-op handler of tests: bench/noop.py's ``Noop`` registered as ``test.noop``
(naming ``test:<target>`` targets) and recording its calls.

    noop = recording_noop()
    handlers = HandlerRegistry.from_entry_points((NAME, noop))
"""

from __future__ import annotations

from typing import ClassVar

from bench.noop import Noop

NAME = "test.noop"


class NoopForTests(Noop):
    """``Noop`` as the tests register it: ``test.noop``, naming ``test:<target>``."""

    name: ClassVar[str] = NAME
    kind: ClassVar[str] = "test"


def recording_noop() -> Noop:
    """A fresh ``test.noop``: ``.checks`` / ``.acts`` list the params it was called with."""
    return NoopForTests(record=True)
