"""End-to-end tests run the real ``cdb`` command as processes; all are marked e2e."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.e2e)


def cdb(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``cdb ARGS`` as a user would (``python -m cdb``) and capture its output."""
    full_env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "cdb", *args], capture_output=True, text=True, env=full_env,
        cwd=cwd, timeout=timeout, check=False,
    )
