"""Where the bundled Jinja templates live, in a source checkout and in an installed wheel."""

from __future__ import annotations

from functools import cache
from pathlib import Path

_HERE = Path(__file__).resolve().parent


@cache
def templates_dir() -> Path:
    for candidate in (_HERE / "_bundled" / "templates", _HERE.parent / "templates"):
        if (candidate / "documents").is_dir():
            return candidate
    raise RuntimeError("qmsflow templates are missing from this installation (reinstall qmsflow)")
