"""A real browser for the console's tests: Debian's chromium, headless, driven by
Selenium through Debian's chromedriver (scripts/test installs both).

    with chromium(tmp_path) as driver:
        driver.get(url)
    shots = Screenshots(tmp_path / "shots")      # also into $HEALER_SCREENSHOTS if set
    shots.take(driver, "heals")                  # console-heals.png

Missing binaries skip the test locally and fail it under CI=true (require_service).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service

from tests.support.env import require_service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WINDOW = (1280, 900)


@contextmanager
def chromium(workdir: Path) -> Iterator[webdriver.Chrome]:
    """A headless chromium with a private profile under ``workdir``; quit on exit."""
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not Path(binary).exists():
            require_service(
                "chromium", f"{binary} not found (apt-get install chromium chromium-driver)"
            )
    profile = workdir / "chromium-profile"
    profile.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",  # tests run as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        f"--user-data-dir={profile}",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(flag)
    service = Service(executable_path=CHROMEDRIVER, log_output=str(workdir / "chromedriver.log"))
    try:
        driver = webdriver.Chrome(options=options, service=service)
    except WebDriverException as exc:
        require_service("chromium", f"chromedriver could not start chromium: {exc.msg}")
    try:
        driver.set_page_load_timeout(30)
        yield driver
    finally:
        driver.quit()


class Screenshots:
    """PNG screenshots ``console-<name>.png`` in ``folder`` and, when the environment
    variable HEALER_SCREENSHOTS names a folder, a copy there (docs/images is taken so)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        extra = os.environ.get("HEALER_SCREENSHOTS")
        self.extra = Path(extra) if extra else None

    def take(self, driver: webdriver.Chrome, name: str) -> Path:
        path = self.folder / f"console-{name}.png"
        assert driver.save_screenshot(str(path)), f"no screenshot of {name}"
        if self.extra is not None:
            self.extra.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, self.extra / path.name)
        return path
