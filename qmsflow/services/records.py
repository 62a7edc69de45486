"""Creating, updating and deleting generic QMS records (retention enforced)."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import select

from ..domain.capabilities import declare
from ..domain.errors import DomainError, RetentionError
from ..domain.organisation import QmsConfig
from ..domain.records import human_id, prefix_for
from ..domain.retention import check_deletable
from ..store.tables import DocumentVersionRow, IdCounterRow, RecordRow
from ..store.uow import UnitOfWork
from .common import row_values


class NotFound(DomainError):
    """No record with that id."""


def next_id(uow: UnitOfWork, kind: str, year: int) -> str:
    prefix = prefix_for(kind)
    uow.trail.lock()
    counter = uow.session.get(IdCounterRow, (prefix, year))
    if counter is None:
        counter = IdCounterRow(prefix=prefix, year=year, last=0)
        uow.session.add(counter)
    counter.last += 1
    return human_id(kind, year, counter.last)


def find_by_key(uow: UnitOfWork, key: str) -> RecordRow | None:
    return uow.session.scalar(select(RecordRow).where(RecordRow.key == key))


def create_record(
    uow: UnitOfWork,
    kind: str,
    title: str,
    *,
    key: str | None = None,
    owner: str | None = None,
    process: str | None = None,
    due_date: date | None = None,
    systems: list[str] | None = None,
    data: dict[str, Any] | None = None,
    links: list[str] | None = None,
    status: str = "open",
) -> tuple[RecordRow, bool]:
    """Create a record, or return the existing one with the same idempotency ``key``.

    Returns (row, created).
    """
    if key is not None:
        existing = find_by_key(uow, key)
        if existing is not None:
            return existing, False
    now = uow.now()
    row = RecordRow(
        id=next_id(uow, kind, now.year),
        kind=kind,
        key=key,
        title=title,
        status=status,
        owner=owner,
        process=process,
        due_date=due_date,
        systems=list(systems or []),
        data=dict(data or {}),
        links=list(links or []),
        created_at=now,
        updated_at=now,
    )
    uow.session.add(row)
    uow.record(f"{kind}.created", f"record:{row.id}", None, row_values(row))
    return row, True


def update_record(uow: UnitOfWork, row: RecordRow, action: str, **changes: Any) -> bool:
    """Apply ``changes``; append one trail event with before/after. False when nothing changed."""
    before = row_values(row)
    if all(before.get(k) == (v.isoformat() if isinstance(v, date) else v) for k, v in changes.items()):
        return False
    for k, v in changes.items():
        setattr(row, k, v)
    row.updated_at = uow.now()
    uow.record(f"{row.kind}.{action}", f"record:{row.id}", before, row_values(row))
    return True


def _refuse(uow: UnitOfWork, action: str, ref: str, error: RetentionError) -> None:
    uow.rollback()
    uow.record(action, ref, None, {"refused": str(error)})
    uow.commit()


DELETION_GUARD = declare(
    "retention.deletion_guard",
    "qmsflow deletes a record or a document version (`qms records delete`, `qms document delete-version`) "
    "only after its retention end, computed from the dates on which the AI systems it concerns were placed "
    "on the market or put into service and `retention.years` of qms.yaml (at least 10), and only when no "
    "legal hold covers it (`qms retention hold`, set only by an admin or a quality lead). It refuses any "
    "other deletion, and records both the refusal and each deletion it allows in the audit trail.",
    proved_by=(
        "tests/integration/test_store.py::test_document_version_deletion_is_refused_under_retention",
        "tests/integration/test_store.py::test_record_past_retention_can_be_deleted_and_the_deletion_is_trailed",
        "tests/integration/test_retention.py::test_legal_hold_blocks_deletion_whatever_the_date_and_only_a_quality_lead_or_admin_sets_it",
    ),
    module=__name__,
)


def delete_record(uow: UnitOfWork, config: QmsConfig, record_id: str, today: date) -> None:
    """Delete a record after its retention end (services/retention.py) and when no legal hold covers it;
    otherwise refuse and record the attempt."""
    from .retention import record_period

    row = uow.session.get(RecordRow, record_id)
    if row is None:
        raise NotFound(f"no record {record_id}")
    ref = f"record:{record_id}"
    try:
        check_deletable(f"record {record_id}", record_period(uow, config, row), today)
    except RetentionError as error:
        _refuse(uow, f"{row.kind}.delete-refused", ref, error)
        raise
    before = row_values(row)
    uow.session.delete(row)
    uow.record(f"{row.kind}.deleted", ref, before, None)
    uow.commit()


def delete_document_version(uow: UnitOfWork, config: QmsConfig, doc_id: str, version: str, today: date) -> None:
    row = uow.session.scalar(
        select(DocumentVersionRow).where(
            DocumentVersionRow.document_id == doc_id, DocumentVersionRow.version == version
        )
    )
    if row is None:
        raise NotFound(f"no version {version} of document {doc_id}")
    from .retention import version_period

    ref = f"document-version:{doc_id}@{version}"
    try:
        check_deletable(f"document {doc_id} version {version}", version_period(uow, config, row), today)
    except RetentionError as error:
        _refuse(uow, "document-version.delete-refused", ref, error)
        raise
    before = row_values(row, exclude=("id",))
    uow.session.delete(row)
    uow.record("document-version.deleted", ref, before, None)
    uow.commit()
