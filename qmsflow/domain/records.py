"""The generic QMS record that procedures extend (CAPA, review due, audit finding, ...)."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, Field

# record kind -> prefix of its human id (CAPA-2026-0007)
KIND_PREFIXES: dict[str, str] = {
    "capa": "CAPA",
    "deviation": "DEV",
    "ai-system": "SYS",  # an AI system's lifecycle dates and legal hold (services/retention.py)
    "document-review-due": "DRD",
    "approval": "APR",
    "audit": "AUD",
    "finding": "FND",
    "incident": "INC",
    "management-review": "MRV",
    "mr-action": "MRA",
    "watch-entry": "RWE",
    "release": "REL",
    "risk": "RSK",
    "submission": "SUB",
}

CLOSED_STATUSES = frozenset({"closed", "cancelled", "done", "superseded"})

_HUMAN_ID = re.compile(r"^([A-Z]+)-(\d{4})-(\d{4,})$")


def is_overdue(due: date | None, today: date, status: str | None = None) -> bool:
    """The one definition of overdue, for every surface (CLI, dashboard, status, scans, export): an open
    item whose due date has passed; due today is not overdue yet."""
    return due is not None and due < today and (status is None or status not in CLOSED_STATUSES)


def prefix_for(kind: str) -> str:
    try:
        return KIND_PREFIXES[kind]
    except KeyError:
        raise ValueError(f"unknown record kind {kind!r} (kinds: {', '.join(sorted(KIND_PREFIXES))})") from None


def kind_of(record_id: str) -> str | None:
    """The kind of a record from its human id (``CAPA-2026-0007`` -> ``capa``), or None."""
    prefix = record_id.split("-", 1)[0]
    return next((kind for kind, known in KIND_PREFIXES.items() if known == prefix), None)


def human_id(kind: str, year: int, number: int) -> str:
    return f"{prefix_for(kind)}-{year:04d}-{number:04d}"


def parse_human_id(value: str) -> tuple[str, int, int]:
    match = _HUMAN_ID.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a record id (like CAPA-2026-0007)")
    return match.group(1), int(match.group(2)), int(match.group(3))


class QmsRecord(BaseModel):
    id: str
    kind: str
    key: str | None = None
    title: str
    status: str = "open"
    owner: str | None = None
    process: str | None = None
    due_date: date | None = None
    systems: list[str] = Field(default_factory=list)
    data: dict[str, Any] = Field(default_factory=dict)
    links: list[str] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime

    @property
    def is_open(self) -> bool:
        return self.status not in CLOSED_STATUSES

    def is_overdue(self, today: date) -> bool:
        return is_overdue(self.due_date, today, self.status)
