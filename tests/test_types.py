"""The strict type check: ``mypy --strict`` (the configuration in pyproject.toml) over both packages,
the plugin and the host contract, including the sandbox and the pytest fixture modules.

Runs mypy as a subprocess with its cache under the project's ``.mypy_cache`` so a second run only
re-checks what changed; the failure message is mypy's own output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(600)  # a cold cache on a loaded machine takes a minute or more
def test_both_packages_pass_mypy_strict() -> None:
    pytest.importorskip("mypy", reason="mypy is in the test extra")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
    assert "Success: no issues found" in result.stdout
