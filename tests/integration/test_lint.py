"""The code base passes ruff (pyflakes, pycodestyle, import order) as configured in pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ruff_check() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "qmsflow", "flows", "tasks", "deployments", "tests", "bench"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
