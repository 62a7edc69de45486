from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from qmsflow.domain.documents import DocStatus, DocumentVersion, add_months, next_version, review_due, review_state
from qmsflow.domain.errors import InvalidTransition


def version(**kw) -> DocumentVersion:
    base = dict(
        document_id="SOP-DOC-001",
        version="1.0",
        path="p.md",
        content_sha256="a" * 64,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    return DocumentVersion(**{**base, **kw})


def test_lifecycle_draft_review_effective_obsolete() -> None:
    v = version()
    v.transition(DocStatus.IN_REVIEW)
    v.make_effective(date(2026, 1, 31), 12)
    assert v.status is DocStatus.EFFECTIVE
    assert v.next_review_date == date(2027, 1, 31)
    v.transition(DocStatus.OBSOLETE)
    with pytest.raises(InvalidTransition, match="obsolete: cannot move to effective"):
        v.transition(DocStatus.EFFECTIVE)


def test_rejected_review_goes_back_to_draft() -> None:
    v = version(status=DocStatus.IN_REVIEW)
    v.transition(DocStatus.DRAFT)
    assert v.status is DocStatus.DRAFT


def test_draft_cannot_become_effective_without_review() -> None:
    with pytest.raises(InvalidTransition, match=r"allowed: in_review"):
        version().make_effective(date(2026, 1, 1), 12)


@pytest.mark.parametrize(
    ("day", "months", "expected"),
    [
        (date(2026, 1, 31), 1, date(2026, 2, 28)),
        (date(2024, 1, 31), 1, date(2024, 2, 29)),
        (date(2026, 11, 15), 3, date(2027, 2, 15)),
        (date(2026, 3, 1), 120, date(2036, 3, 1)),
        (date(2026, 3, 31), -1, date(2026, 2, 28)),
    ],
)
def test_add_months_clamps_to_month_end(day: date, months: int, expected: date) -> None:
    assert add_months(day, months) == expected


def test_review_state_window() -> None:
    today = date(2026, 11, 26)
    assert review_state(date(2026, 11, 25), today) == "overdue"
    assert review_state(date(2026, 11, 26), today) == "due-soon"
    assert review_state(date(2026, 12, 26), today) == "due-soon"
    assert review_state(date(2026, 12, 27), today) is None
    assert review_due(None, date(2026, 11, 26)) == date(2026, 11, 26)  # never approved: due since registered
    assert review_due(date(2027, 1, 1), date(2026, 11, 26)) == date(2027, 1, 1)


def test_versions_count_up() -> None:
    assert next_version(None, major=False) == "1.0"
    assert next_version("1.0", major=False) == "1.1"
    assert next_version("1.7", major=True) == "2.0"
    with pytest.raises(ValueError, match="MAJOR.MINOR"):
        next_version("v1", major=True)
