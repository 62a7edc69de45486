"""Controlled documents: current versions and the review-due scan."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..domain.capabilities import declare
from ..domain.documents import REVIEW_WINDOW_DAYS, DocStatus, DocumentVersion, review_due, review_state
from ..domain.organisation import QmsConfig
from ..store.tables import DocumentRow, DocumentVersionRow, RecordRow
from ..store.uow import UnitOfWork
from .common import row_values
from .records import create_record, update_record
from .review_inputs import Figure, Window, provides

REVIEW_DUE = "document-review-due"

REGISTER = declare(
    "document.register",
    "qmsflow keeps the register of the controlled documents that qms.yaml declares, brought in line with it "
    "by `qms sync`: for each document its identifier, title, file, owner, approvers, review interval and "
    "the AI systems it concerns, and each of its versions with its status (draft, in review, effective or obsolete), "
    "effective date and next review date. `qms document list` and the dashboard's Documents page show "
    "the register, and flag a document whose review is due within 30 days or overdue.",
    proved_by=(
        "tests/integration/test_store.py::test_sync_is_idempotent_and_trailed",
        "tests/integration/test_web.py::test_page_contents",
        "tests/unit/test_documents_domain.py::test_review_state_window",
    ),
    module=__name__,
)


@dataclass(frozen=True)
class DueReview:
    record_id: str
    document_id: str
    state: str  # overdue | due-soon
    due: date
    created: bool


def effective_version(uow: UnitOfWork, doc_id: str) -> DocumentVersionRow | None:
    return uow.session.scalar(
        select(DocumentVersionRow).where(
            DocumentVersionRow.document_id == doc_id, DocumentVersionRow.status == DocStatus.EFFECTIVE.value
        )
    )


def latest_version(uow: UnitOfWork, doc_id: str) -> DocumentVersionRow | None:
    return uow.session.scalar(
        select(DocumentVersionRow)
        .where(DocumentVersionRow.document_id == doc_id)
        .order_by(DocumentVersionRow.id.desc())
        .limit(1)
    )


def transition_version(
    uow: UnitOfWork,
    row: DocumentVersionRow,
    target: DocStatus,
    *,
    on: date | None = None,
    interval_months: int | None = None,
    comment: str | None = None,
) -> None:
    """Apply the document state machine to a stored version and record the change."""
    model = DocumentVersion.model_validate(row_values(row, exclude=("id",)))
    before = row_values(row, exclude=("id",))
    if target is DocStatus.EFFECTIVE:
        model.make_effective(on or uow.now().date(), interval_months or 12)
        row.effective_date, row.next_review_date = model.effective_date, model.next_review_date
    else:
        model.transition(target)
    row.status = model.status.value
    if comment is not None:
        row.comment = comment
    uow.record(
        f"document-version.{target.value}",
        f"document-version:{row.document_id}@{row.version}",
        before,
        row_values(row, exclude=("id",)),
    )


REVIEW_SCAN = declare(
    "document.review_scan",
    "Daily (or on the schedule qms.yaml sets for the document-control process), qmsflow's document-review-due "
    "scan records each controlled document whose periodic review "
    "is due within 30 days or overdue (a document-review-due record, DRD-…, once per document and due "
    'date, owned by the document owner), and starts a periodic ("still valid") review of each one whose '
    "file is unchanged since its effective version: its approvers are asked to confirm it. A document "
    "changed since its effective version waits for its owner to submit the change.",
    proved_by=(
        "tests/integration/test_store.py::test_due_scan_records_each_document_once",
        "tests/integration/test_flows_in_process.py::test_document_review_due_scan_records_due_documents_and_its_run",
        "tests/integration/test_document_control.py::"
        "test_a_periodic_review_confirmed_still_valid_sets_the_next_review_and_closes_the_due_record",
    ),
    module=__name__,
)


def scan_due_reviews(
    uow: UnitOfWork, today: date, process: str | None = None, window_days: int = REVIEW_WINDOW_DAYS
) -> list[DueReview]:
    """Record every active document whose review is due within ``window_days`` or overdue.

    One record per document and due date (idempotent: the key is ``review-due:DOC:DATE``); a
    due-soon record turns overdue when the date passes; records of an older due date are closed
    as superseded once the document got a new review date.
    """
    found: list[DueReview] = []
    docs = uow.session.scalars(select(DocumentRow).where(DocumentRow.active.is_(True)).order_by(DocumentRow.id)).all()
    for doc in docs:
        current = effective_version(uow, doc.id)
        next_review = current.next_review_date if current else None
        due = review_due(next_review, next_review or _registered_on(uow, doc.id, today))
        state = review_state(due, today, window_days)
        key = f"review-due:{doc.id}:{next_review.isoformat() if next_review else 'never-approved'}"
        _close_superseded(uow, doc.id, key)
        if state is None:
            continue
        title = (
            f"Review of {doc.id} {doc.title} due {due.isoformat()}"
            if current
            else f"{doc.id} {doc.title} has no approved version"
        )
        data = {
            "document_id": doc.id,
            "version": current.version if current else None,
            "next_review_date": next_review.isoformat() if next_review else None,
            "state": state,
        }
        row, created = create_record(
            uow,
            REVIEW_DUE,
            title,
            key=key,
            owner=doc.owner,
            process=process,
            due_date=due,
            systems=list(doc.systems),
            data=data,
        )
        if not created and row.data.get("state") != state:
            update_record(uow, row, "state-changed", data={**row.data, "state": state})
        found.append(DueReview(row.id, doc.id, state, due, created))
    uow.commit()
    return found


def _registered_on(uow: UnitOfWork, doc_id: str, default: date) -> date:
    """A document never approved has been due for approval since its first version was registered."""
    first = uow.session.scalar(
        select(DocumentVersionRow.created_at)
        .where(DocumentVersionRow.document_id == doc_id)
        .order_by(DocumentVersionRow.id)
        .limit(1)
    )
    return first.date() if first else default


def _close_superseded(uow: UnitOfWork, doc_id: str, current_key: str) -> None:
    stale = uow.session.scalars(
        select(RecordRow).where(
            RecordRow.kind == REVIEW_DUE,
            RecordRow.status == "open",
            RecordRow.key.startswith(f"review-due:{doc_id}:", autoescape=True),
            RecordRow.key != current_key,
        )
    ).all()
    for row in stale:
        update_record(uow, row, "superseded", status="superseded")


OVERDUE_REVIEWS_INPUT = declare(
    "review.overdue_document_reviews",
    "qmsflow counts, in the input pack of each management review, the controlled documents whose periodic "
    "review is overdue on the day the inputs are gathered, naming each one.",
    proved_by=(
        "tests/integration/test_document_control.py::test_overdue_periodic_reviews_are_an_input_of_the_management_review",
    ),
    module=__name__,
)


@provides("c.document-reviews", "document-control")
def review_overdue_documents(session: Session, config: QmsConfig, window: Window) -> list[Figure]:
    """Controlled documents whose periodic review is overdue as of the gathering (the register's rule)."""
    from .queries import document_register

    today = window.as_of.date()
    overdue = [f"document:{line.document.id}" for line in document_register(session, today) if line.state == "overdue"]
    return [Figure(f"document reviews overdue on {today.isoformat()}", len(overdue), overdue)]
