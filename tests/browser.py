"""A real headless Chromium for tests, driven by Selenium.

Debian's ``chromium`` and ``chromium-driver`` (scripts/test.sh installs them). Two ways
in:

- ``with chrome() as driver:`` a plain Selenium ``WebDriver`` (console logs captured),
  with ``artifact_dir(name)`` for screenshots;
- the ``browser`` fixture (import it into a test module or conftest): a ``Browser``
  with ``open(path_or_url)``, ``console_errors()``, ``js(...)``, ``wait_for(...)`` and
  ``screenshot(name)`` (saved under the test's tmp dir, its path printed, so a failed
  CI run leaves something to look at).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def _binary(names: tuple[str, ...], what: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    # Not a skip: the test command installs the browser, so its absence is a broken setup.
    raise RuntimeError(f"no {what} on PATH ({', '.join(names)}); run scripts/test.sh, or "
                       "apt-get install chromium chromium-driver")


def new_driver(width: int = 1400, height: int = 1000) -> webdriver.Chrome:
    """A headless Chromium WebDriver that keeps the page's console log."""
    options = webdriver.ChromeOptions()
    options.binary_location = _binary(CHROMIUM_CANDIDATES, "Chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--disable-gpu", f"--window-size={width},{height}",
                "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(_binary(("chromedriver",), "chromedriver"))
    return webdriver.Chrome(options=options, service=service)


@contextmanager
def chrome(width: int = 1400, height: int = 1000) -> Iterator[webdriver.Chrome]:
    """A headless Chromium for the block; quit at its end."""
    driver = new_driver(width, height)
    try:
        yield driver
    finally:
        driver.quit()


def artifact_dir(name: str) -> Path:
    """Where tests keep screenshots of ``name`` (``$CDB_TEST_ARTIFACTS``, default
    ``<tmp>/cdb-test-artifacts``), created."""
    root = Path(os.environ.get("CDB_TEST_ARTIFACTS")
                or Path(tempfile.gettempdir()) / "cdb-test-artifacts")
    path = root / name
    path.mkdir(parents=True, exist_ok=True)
    return path


class Browser:
    """One headless Chromium session with console capture and screenshots."""

    def __init__(self, artifacts: Path, width: int = 1400, height: int = 1000) -> None:
        self.driver = new_driver(width, height)
        self.artifacts = artifacts
        self._logs: list[dict[str, Any]] = []

    def open(self, target: str | Path) -> None:
        """Load a URL, or a local file by path."""
        url = target.resolve().as_uri() if isinstance(target, Path) else target
        self.driver.get(url)

    def js(self, script: str, *args: object) -> Any:
        """The value of ``script`` (a function body: ``return ...``) in the page."""
        return self.driver.execute_script(script, *args)

    def wait_for(self, condition: Callable[[], object], timeout: float = 10.0) -> Any:
        """Poll ``condition`` until it is truthy; its value, or AssertionError."""
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"browser condition not met within {timeout} s")
            time.sleep(0.05)

    def console(self) -> list[dict[str, Any]]:
        """Every console entry so far (each call adds what came since the last)."""
        self._logs.extend(self.driver.get_log("browser"))
        return list(self._logs)

    def console_errors(self) -> list[str]:
        """Console entries of level SEVERE (errors, uncaught exceptions, failed loads)."""
        return [e["message"] for e in self.console() if e.get("level") == "SEVERE"]

    def screenshot(self, name: str) -> Path:
        """Save a PNG of the page under the test's artifacts dir and print its path."""
        self.artifacts.mkdir(parents=True, exist_ok=True)
        path = self.artifacts / f"{name}.png"
        # The whole page, not just the window: resize to the document's height first.
        height = int(self.js("return document.documentElement.scrollHeight") or 1000)
        width = int(self.js("return document.documentElement.scrollWidth") or 1400)
        self.driver.set_window_size(max(width, 1400), min(max(height, 800), 16000))
        self.driver.save_screenshot(str(path))
        print(f"screenshot: {path}")  # the artifact's path, for people
        return path

    def close(self) -> None:
        self.driver.quit()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    """A headless Chromium; screenshots go to ``tmp_path / "artifacts"``."""
    session = Browser(tmp_path / "artifacts")
    try:
        yield session
    finally:
        session.close()
