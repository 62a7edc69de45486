"""Read models of the command line: the same queries and rules as the dashboard's (``services.dashboard``).

The CLI never builds SQL itself; what it lists comes from here, so `qms records list`, `qms capa list`,
`qms document list` and the dashboard agree (one definition of overdue: ``domain.records.is_overdue``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..domain.records import CLOSED_STATUSES, is_overdue
from ..domain.trail import TrailEvent
from ..store import trail
from ..store.tables import (
    ApprovalRequestRow,
    DocumentRow,
    DocumentVersionRow,
    PersonRow,
    RecordRow,
    SignatureRow,
    TrailEventRow,
    UserRow,
)
from .dashboard import registered_on, review_flag


def records(session: Session, kind: str | None, include_closed: bool, limit: int) -> list[RecordRow]:
    """Records newest first, open ones only unless ``include_closed``."""
    query = select(RecordRow).order_by(RecordRow.created_at.desc(), RecordRow.id.desc()).limit(limit)
    if kind:
        query = query.where(RecordRow.kind == kind)
    if not include_closed:
        query = query.where(RecordRow.status.not_in(CLOSED_STATUSES))
    return list(session.scalars(query))


def record_overdue(row: RecordRow, today: date) -> bool:
    return row.status not in CLOSED_STATUSES and row.due_date is not None and is_overdue(row.due_date, today)


def capas(session: Session, today: date, stage: str | None, overdue_only: bool, limit: int) -> list[RecordRow]:
    """CAPAs oldest first: of one stage, else the open ones; ``overdue_only`` keeps the overdue."""
    query = select(RecordRow).where(RecordRow.kind == "capa").order_by(RecordRow.created_at).limit(limit)
    query = query.where(RecordRow.status == stage) if stage else query.where(RecordRow.status.not_in(CLOSED_STATUSES))
    if overdue_only:
        query = query.where(RecordRow.status.not_in(CLOSED_STATUSES), RecordRow.due_date < today)
    return list(session.scalars(query))


@dataclass(frozen=True)
class RegisterLine:
    """One line of the documents register: the document, its current version, its review state."""

    document: DocumentRow
    current: DocumentVersionRow | None
    next_review: date | None
    state: str | None  # "overdue", "due-soon" or None (domain.documents.review_state)


def document_register(session: Session, today: date) -> list[RegisterLine]:
    """Every active document with its current version (the effective one, else the newest)."""
    docs = list(session.scalars(select(DocumentRow).where(DocumentRow.active.is_(True)).order_by(DocumentRow.id)))
    ids = [d.id for d in docs]
    current: dict[str, DocumentVersionRow] = {}
    for version in session.scalars(
        select(DocumentVersionRow)
        .where(DocumentVersionRow.document_id.in_(ids))
        .order_by(DocumentVersionRow.document_id, DocumentVersionRow.id.desc())
    ):
        held = current.get(version.document_id)
        if held is None or (version.status == "effective" and held.status != "effective"):
            current[version.document_id] = version
    registered = registered_on(session, ids)
    lines = []
    for doc in docs:
        version = current.get(doc.id)
        nxt = version.next_review_date if version is not None and version.status == "effective" else None
        lines.append(RegisterLine(doc, version, nxt, review_flag(version, registered.get(doc.id), today)))
    return lines


def approval_requests(session: Session, include_decided: bool, limit: int = 100) -> list[ApprovalRequestRow]:
    """Approval requests newest first, pending ones only unless ``include_decided``."""
    query = select(ApprovalRequestRow).order_by(ApprovalRequestRow.created_at.desc()).limit(limit)
    if not include_decided:
        query = query.where(ApprovalRequestRow.status == "pending")
    return list(session.scalars(query))


def trail_tail(session: Session, record: str | None, actor: str | None, limit: int) -> list[TrailEventRow]:
    """The last ``limit`` events of the trail (of one record or actor), oldest first."""
    query = select(TrailEventRow).order_by(TrailEventRow.seq.desc()).limit(limit)
    if record:
        query = query.where(TrailEventRow.record == record)
    if actor:
        query = query.where(TrailEventRow.actor == actor)
    return list(reversed(session.scalars(query).all()))


def person_with_roles(session: Session, person: str) -> tuple[PersonRow | None, list[str]]:
    """A person of the store and the roles of their enabled accounts."""
    row = session.get(PersonRow, person)
    roles = session.scalars(select(UserRow.role).where(UserRow.person == person, UserRow.disabled_at.is_(None))).all()
    return row, list(roles)


def trail_size(session: Session) -> int:
    """How many events the trail holds."""
    return trail.count(session)


def history(session: Session, ref: str) -> list[TrailEvent]:
    """Every event of one record (``record:CAPA-…``), oldest first."""
    return trail.events_for(session, ref)


def recent_requests(session: Session, limit: int = 20) -> list[ApprovalRequestRow]:
    return approval_requests(session, include_decided=True, limit=limit)


def request_with_signatures(session: Session, request_id: str) -> tuple[ApprovalRequestRow | None, list[SignatureRow]]:
    """An approval request and its signatures in the order they were given."""
    row = session.get(ApprovalRequestRow, request_id)
    if row is None:
        return None, []
    signatures = session.scalars(
        select(SignatureRow).where(SignatureRow.request_id == request_id).order_by(SignatureRow.id)
    ).all()
    return row, list(signatures)


def document(session: Session, doc_id: str) -> DocumentRow | None:
    return session.get(DocumentRow, doc_id)


def active_people(session: Session) -> list[PersonRow]:
    return list(session.scalars(select(PersonRow).where(PersonRow.active.is_(True))))
