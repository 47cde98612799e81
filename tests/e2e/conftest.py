"""Fixtures of the whole-loop tests (the component fixtures are in tests/conftest.py).

make_loop   function  make_loop(**start_loop kwargs) -> Loop: a busybox service,
                      Prometheus, Alertmanager and `healer serve`, wired together
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.scenarios.loop import Loop, start_loop


@pytest.fixture
def make_loop(tmp_path: Path, containers, prometheus, alertmanager, healer_process):
    def make(**kwargs) -> Loop:
        service = containers.run_service()
        return start_loop(
            workdir=tmp_path,
            service=service,
            prometheus=prometheus,
            alertmanager=alertmanager,
            healer=healer_process,
            **kwargs,
        )

    return make
