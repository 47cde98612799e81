"""Fixtures of the whole-loop tests (the component fixtures are in tests/conftest.py).

make_loop   function  make_loop(**start_loop kwargs) -> Loop: a busybox service,
                      Prometheus, Alertmanager and `healer serve`, wired together
browser     function  a headless chromium under Selenium (tests/support/servers/browser.py)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver

from tests.support.scenarios.loop import Loop, start_loop
from tests.support.servers.browser import chromium


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


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    with chromium(tmp_path / "browser") as driver:
        yield driver
