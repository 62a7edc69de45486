"""Helpers shared by the services."""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import inspect


def row_values(row: Any, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """Column values of an ORM row as JSON-ready data (dates as ISO strings)."""
    values = {}
    for column in inspect(row).mapper.column_attrs:
        if column.key in exclude:
            continue
        value = getattr(row, column.key)
        if isinstance(value, (date, datetime)):
            value = value.isoformat()
        values[column.key] = value
    return values


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()
