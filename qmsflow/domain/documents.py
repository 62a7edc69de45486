"""Controlled documents: versions, their state machine, and review dates (ISO 9001 7.5)."""

from __future__ import annotations

import calendar
import re
from datetime import date, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from .capabilities import declare
from .records import is_overdue
from .stages import Move, Stage, StageMachine

REVIEW_WINDOW_DAYS = 30


class DocStatus(StrEnum):
    DRAFT = "draft"
    IN_REVIEW = "in_review"
    EFFECTIVE = "effective"
    OBSOLETE = "obsolete"


# Document control (SOP-DOC-001 section 4) as a table: a version's statuses and the moves between them.
MACHINE = StageMachine(
    kind="document-version",
    stages=(
        Stage(DocStatus.DRAFT.value, "Draft"),
        Stage(DocStatus.IN_REVIEW.value, "In review"),
        Stage(DocStatus.EFFECTIVE.value, "Effective"),
        Stage(DocStatus.OBSOLETE.value, "Obsolete", final=True),
    ),
    moves=(
        Move(DocStatus.DRAFT.value, DocStatus.IN_REVIEW.value, label="submitted for review"),
        Move(DocStatus.IN_REVIEW.value, DocStatus.EFFECTIVE.value, signed=True, label="approved"),
        Move(DocStatus.IN_REVIEW.value, DocStatus.DRAFT.value, signed=True, label="rejected or changes requested"),
        Move(DocStatus.EFFECTIVE.value, DocStatus.OBSOLETE.value, label="superseded"),
    ),
)

_VERSION = re.compile(r"^(\d+)\.(\d+)$")


class DocumentVersion(BaseModel):
    """One version of a controlled document as the records store keeps it."""

    model_config = ConfigDict(validate_assignment=True)

    document_id: str
    version: str = Field(pattern=_VERSION.pattern)
    status: DocStatus = DocStatus.DRAFT
    path: str
    content_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    git_commit: str | None = Field(default=None, pattern=r"^[0-9a-f]{7,64}$")
    effective_date: date | None = None
    next_review_date: date | None = None
    comment: str | None = None
    created_at: datetime

    def transition(self, target: DocStatus) -> None:
        """Move to ``target`` or raise ``InvalidTransition`` naming what is allowed."""
        MACHINE.move(f"document {self.document_id} version {self.version}", self.status.value, target.value)
        self.status = target

    def make_effective(self, on: date, interval_months: int) -> None:
        self.transition(DocStatus.EFFECTIVE)
        self.effective_date = on
        self.next_review_date = add_months(on, interval_months)


def parse_version(version: str) -> tuple[int, int]:
    match = _VERSION.match(version)
    if not match:
        raise ValueError(f"{version!r} is not a version (MAJOR.MINOR, e.g. 1.0)")
    return int(match.group(1)), int(match.group(2))


def next_version(current: str | None, major: bool) -> str:
    """The version after ``current``: 1.0 first, then 1.1 (minor) or 2.0 (major)."""
    if current is None:
        return "1.0"
    maj, minor = parse_version(current)
    return f"{maj + 1}.0" if major else f"{maj}.{minor + 1}"


def add_months(day: date, months: int) -> date:
    """``day`` plus whole months, clamped to the month's last day (31 Jan + 1 month = 28/29 Feb)."""
    month_index = day.month - 1 + months
    year = day.year + month_index // 12
    month = month_index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def review_due(next_review: date | None, registered_on: date) -> date:
    """When a document's review is due: its effective version's next review date; a document never
    approved has been due for approval since it was registered."""
    return next_review if next_review is not None else registered_on


def review_state(due: date, today: date, window_days: int = REVIEW_WINDOW_DAYS) -> str | None:
    """``"overdue"`` (the due date has passed: the one definition of overdue, ``records.is_overdue``),
    ``"due-soon"`` (due within ``window_days``, today included) or ``None`` (not due yet)."""
    if is_overdue(due, today):
        return "overdue"
    if (due - today).days <= window_days:
        return "due-soon"
    return None


# the document lifecycle above, as the procedures may state it (services.review keeps the text and signatures)
CONTROLLED_VERSIONS = declare(
    "document.controlled_versions",
    "qmsflow keeps the exact text of every version submitted for approval in its records store, under its "
    "SHA-256, with the signatures that approved it; a version becomes effective when its approvals are "
    "complete, and the version it replaces becomes obsolete.",
    proved_by=(
        "tests/integration/test_signed_content.py::test_the_signed_text_is_kept_shown_and_rendered_from_the_store",
        "tests/e2e/test_document_review.py::test_signed_click_resumes_the_flow_to_an_effective_version",
        "tests/unit/test_documents_domain.py::test_lifecycle_draft_review_effective_obsolete",
    ),
    module=__name__,
)
