"""Read models: every list, count and page the CLI, the dashboard and ``qms status`` show, in one place.

One definition of each rule (overdue: ``domain.records.is_overdue``; open: ``store.tables.record_is_open``),
so every surface shows the same numbers (tests/integration/test_overdue_everywhere.py). Every query pages or aggregates
in SQL and uses an index; the entry points never build SQL themselves.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, union_all
from sqlalchemy.orm import Session

from ..domain.approvals import RequestStatus
from ..domain.capa import AGE_BUCKETS, STAGES
from ..domain.documents import review_due, review_state
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
    VerificationRow,
    record_is_open,
    version_is_effective,
)

PAGE = 50


@dataclass(frozen=True)
class Page:
    rows: list[Any]
    page: int
    has_next: bool


def paged(session: Session, query, page: int, size: int = PAGE) -> Page:  # noqa: ANN001
    page = max(page, 1)
    rows = list(session.execute(query.limit(size + 1).offset((page - 1) * size)).all())
    return Page(rows[:size], page, len(rows) > size)


def names(session: Session) -> dict[str, str]:
    return dict(session.execute(select(PersonRow.id, PersonRow.name)).all())


def last_verification(session: Session) -> VerificationRow | None:
    return session.scalar(select(VerificationRow).order_by(VerificationRow.id.desc()).limit(1))


def inbox(session: Session, person: str) -> list[ApprovalRequestRow]:
    """Pending requests this person may still sign (not the author, not signed yet)."""
    rows = session.scalars(
        select(ApprovalRequestRow)
        .where(ApprovalRequestRow.status == RequestStatus.PENDING.value)
        .order_by(ApprovalRequestRow.created_at)
        .limit(500)
    ).all()
    mine = [r for r in rows if person in r.approvers and person not in (r.authors or []) and r.author != person]
    if not mine:
        return []
    signed = set(
        session.scalars(
            select(SignatureRow.request_id).where(
                SignatureRow.signer == person, SignatureRow.request_id.in_([r.id for r in mine])
            )
        )
    )
    return [r for r in mine if r.id not in signed]


def pending_count(session: Session) -> int:
    return session.scalar(
        select(func.count()).select_from(ApprovalRequestRow).where(ApprovalRequestRow.status == "pending")
    )


def registered_on(session: Session, doc_ids: list[str]) -> dict[str, date]:
    """When each document was registered (its first version): a document never approved is due since."""
    if not doc_ids:
        return {}
    rows = session.execute(
        select(DocumentVersionRow.document_id, func.min(DocumentVersionRow.created_at))
        .where(DocumentVersionRow.document_id.in_(doc_ids))
        .group_by(DocumentVersionRow.document_id)
    ).all()
    return {doc: (first.date() if hasattr(first, "date") else first) for doc, first in rows if first is not None}


def documents(session: Session, today: date, page: int) -> tuple[Page, dict[str, DocumentVersionRow]]:
    docs = paged(session, select(DocumentRow).where(DocumentRow.active.is_(True)).order_by(DocumentRow.id), page)
    ids = [d[0].id for d in docs.rows]
    current: dict[str, DocumentVersionRow] = {}
    for version in session.scalars(
        select(DocumentVersionRow).where(DocumentVersionRow.document_id.in_(ids), version_is_effective())
    ):
        current[version.document_id] = version
    for version in session.scalars(
        select(DocumentVersionRow)
        .where(DocumentVersionRow.document_id.in_([i for i in ids if i not in current]))
        .order_by(DocumentVersionRow.id.desc())
    ):
        current.setdefault(version.document_id, version)
    return docs, current


def effective(session: Session, doc_id: str) -> DocumentVersionRow | None:
    return session.scalar(
        select(DocumentVersionRow).where(DocumentVersionRow.document_id == doc_id, version_is_effective())
    )


def review_flag(version: DocumentVersionRow | None, registered: date | None, today: date) -> str | None:
    """The review state the register shows: the same rule as the due scan (``domain.documents``)."""
    effective = version.next_review_date if version is not None and version.status == "effective" else None
    return review_state(review_due(effective, registered or today), today)


def document_history(session: Session, doc_id: str, page: int) -> tuple[Page, dict[str, list[SignatureRow]]]:
    versions = paged(
        session,
        select(DocumentVersionRow)
        .where(DocumentVersionRow.document_id == doc_id)
        .order_by(DocumentVersionRow.id.desc()),
        page,
    )
    subjects = [f"document-version:{doc_id}@{v[0].version}" for v in versions.rows]
    signatures: dict[str, list[SignatureRow]] = {}
    if subjects:
        for request, signature in session.execute(
            select(ApprovalRequestRow, SignatureRow)
            .join(SignatureRow, SignatureRow.request_id == ApprovalRequestRow.id)
            .where(ApprovalRequestRow.subject.in_(subjects))
            .order_by(SignatureRow.id)
        ):
            signatures.setdefault(request.subject.rsplit("@", 1)[1], []).append(signature)
    return versions, signatures


def capa_board(session: Session, limit_per_stage: int = 12) -> dict[str, tuple[int, list[Any]]]:
    """Each stage's count and its oldest items. The open stages are counted and listed from the partial
    index on open records; only the closed count reads the (covering) kind/status index."""
    open_counts = dict(
        session.execute(
            select(RecordRow.status, func.count())
            .where(RecordRow.kind == "capa", record_is_open())
            .group_by(RecordRow.status)
        ).all()
    )
    shown = [stage for stage in STAGES if stage not in CLOSED_STATUSES]
    oldest = [
        select(*CARD)
        .where(RecordRow.kind == "capa", record_is_open(), RecordRow.status == stage)
        .order_by(RecordRow.created_at)
        .limit(limit_per_stage)
        .subquery()
        for stage in shown
    ]
    items: dict[str, list[Any]] = {stage: [] for stage in shown}
    if oldest:  # one statement for every stage's oldest cards
        for row in session.execute(union_all(*(select(sub) for sub in oldest))):
            items[row.status].append(row)
    board = {}
    for stage in STAGES:
        if stage in CLOSED_STATUSES:
            board[stage] = (closed_count(session, "capa", stage), [])
        else:
            board[stage] = (open_counts.get(stage, 0), items[stage])
    return board


CLOSED_COUNT_SECONDS = 60.0
_closed_counts: dict[tuple[str, str, str], tuple[float, int]] = {}


def closed_count(session: Session, kind: str, status: str) -> int:
    """How many records of ``kind`` are in the closed ``status``: counting ten years of closed CAPAs reads
    ~100,000 index entries (~25 ms on SQLite), so the count is kept for CLOSED_COUNT_SECONDS per store, as
    the charts are; the open stages are always counted afresh."""
    key = (str(session.get_bind().url), kind, status)
    now = time.monotonic()
    cached = _closed_counts.get(key)
    if cached is not None and now - cached[0] < CLOSED_COUNT_SECONDS:
        return cached[1]
    count = session.scalar(
        select(func.count()).select_from(RecordRow).where(RecordRow.kind == kind, RecordRow.status == status)
    )
    _closed_counts[key] = (now, count or 0)
    return count or 0


# what a card or a line of a list shows: never the record's data (a CAPA's stages, JSON of kilobytes)
CARD = (RecordRow.id, RecordRow.kind, RecordRow.title, RecordRow.owner, RecordRow.status, RecordRow.due_date)


def _in_order(session: Session, ids: list[str]) -> list[Any]:
    """The cards of ``ids``, in that order: the ids come from an index alone, the cards by primary key."""
    if not ids:
        return []
    rows = {r.id: r for r in session.execute(select(*CARD).where(RecordRow.id.in_(ids)))}
    return [rows[i] for i in ids if i in rows]


def overdue(session: Session, today: date, page: int, kind: str | None = None) -> Page:
    """Open items past their due date (domain.records.is_overdue), oldest due first, paged: the page's ids
    from the partial index on open records, then only those rows."""
    page = max(page, 1)
    query = select(RecordRow.id).where(record_is_open(), RecordRow.due_date < today)
    if kind:
        query = query.where(RecordRow.kind == kind)
    query = query.order_by(RecordRow.due_date, RecordRow.id).limit(PAGE + 1).offset((page - 1) * PAGE)
    ids = list(session.scalars(query))
    rows = _in_order(session, ids[:PAGE])
    return Page([(row,) for row in rows], page, len(ids) > PAGE)


def capa_ageing(session: Session, now: datetime) -> list[tuple[str, int]]:
    out = []
    for label, low, high in AGE_BUCKETS:
        conditions = [RecordRow.kind == "capa", record_is_open()]
        conditions.append(RecordRow.created_at <= now - timedelta(days=low))
        if high is not None:
            conditions.append(RecordRow.created_at > now - timedelta(days=high + 1))
        out.append((label, session.scalar(select(func.count()).select_from(RecordRow).where(*conditions))))
    return out


def overdue_by_month(session: Session, today: date, months: int = 12) -> list[tuple[str, int]]:
    """Items that fell due in each of the last months and were not closed in time (still open, or
    closed after their due date)."""
    out = []
    first = date(today.year, today.month, 1)
    for back in range(months - 1, -1, -1):
        year, month = divmod(first.year * 12 + first.month - 1 - back, 12)
        start = date(year, month + 1, 1)
        end = date(start.year + (start.month == 12), start.month % 12 + 1, 1)
        late = or_(
            RecordRow.status.not_in(CLOSED_STATUSES),
            RecordRow.updated_at > func.coalesce(RecordRow.due_date, RecordRow.updated_at),
        )
        count = session.scalar(
            select(func.count())
            .select_from(RecordRow)
            .where(RecordRow.due_date >= start, RecordRow.due_date < min(end, today + timedelta(days=1)), late)
        )
        out.append((start.strftime("%Y-%m"), count))
    return out


def approval_lead_times(session: Session, now: datetime, days: int = 365) -> list[float]:
    rows = session.execute(
        select(ApprovalRequestRow.created_at, ApprovalRequestRow.decided_at)
        .where(ApprovalRequestRow.decided_at.is_not(None), ApprovalRequestRow.decided_at >= now - timedelta(days=days))
        .order_by(ApprovalRequestRow.decided_at.desc())
        .limit(5000)
    ).all()
    return [(decided - created).total_seconds() / 86400 for created, decided in rows]


def trail_search(
    session: Session,
    record: str | None,
    actor: str | None,
    since: datetime | None,
    until: datetime | None,
    before_seq: int | None,
    size: int = PAGE,
) -> list[TrailEventRow]:
    """Newest first, keyset-paged by seq (constant time at any depth of a million events)."""
    conditions = []
    if record:
        conditions.append(TrailEventRow.record == record)
    if actor:
        conditions.append(TrailEventRow.actor == actor)
    if since:
        conditions.append(TrailEventRow.ts >= since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    if until:
        conditions.append(TrailEventRow.ts < until.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    if before_seq:
        conditions.append(TrailEventRow.seq < before_seq)
    query = select(TrailEventRow).where(and_(*conditions)) if conditions else select(TrailEventRow)
    return list(session.scalars(query.order_by(TrailEventRow.seq.desc()).limit(size)))


def trail_head(session: Session) -> tuple[int, str]:
    row = session.execute(
        select(TrailEventRow.seq, TrailEventRow.hash).order_by(TrailEventRow.seq.desc()).limit(1)
    ).first()
    return (row[0], row[1]) if row else (0, "0" * 64)


# ------------------------------------------------------------------ the command line


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


def releases(session: Session, page: int, system: str | None = None) -> Page:
    """Release validations, newest first, paged (the dashboard's releases page)."""
    query = select(RecordRow).where(RecordRow.kind == "release")
    if system:
        query = query.where(RecordRow.title.startswith(f"{system} ", autoescape=True))
    return paged(session, query.order_by(RecordRow.created_at.desc(), RecordRow.id.desc()), page)


# ------------------------------------------------------------------ internal audit


def _audit_facts(session: Session) -> list[Any]:
    from ..domain.audit import AuditFact

    facts = []
    for row in session.scalars(select(RecordRow).where(RecordRow.kind == "audit").order_by(RecordRow.id)):
        concluded = (row.data or {}).get("stages", {}).get("reporting", {}).get("concluded_on")
        if row.due_date is None or row.process is None:
            continue
        facts.append(
            AuditFact(
                row.id, row.process, row.due_date, row.status, date.fromisoformat(concluded) if concluded else None
            )
        )
    return facts


def audit_risk_signals(session: Session, today: date) -> list[Any]:
    """Why a process comes due sooner: its open major findings and its overdue CAPAs."""
    from ..domain.audit import RiskSignal

    signals = []
    for row in session.scalars(
        select(RecordRow).where(RecordRow.kind == "finding", record_is_open()).order_by(RecordRow.id)
    ):
        if (row.data or {}).get("result") == "major" and row.process:
            signals.append(RiskSignal(row.process, f"finding:{row.id}", "open major finding"))
    for row in session.scalars(
        select(RecordRow)
        .where(RecordRow.kind == "capa", record_is_open(), RecordRow.due_date < today)
        .order_by(RecordRow.id)
    ):
        if row.process:
            signals.append(RiskSignal(row.process, f"capa:{row.id}", f"CAPA overdue since {row.due_date.isoformat()}"))
    return signals


@dataclass(frozen=True)
class ProgrammeLine:
    process: str
    title: str
    every_months: int
    due: date
    overdue: bool
    pulled_in: bool
    reasons: list[str]
    quarters: dict[int, list[dict[str, str]]]
    nc_counts: dict[int, int]  # quarter -> minor and major findings raised in it


def audit_programme(session: Session, config: Any, year: int, today: date) -> list[ProgrammeLine]:  # noqa: ANN401
    """The audit programme of ``year``: process x quarter (planned / done / overdue audits, nonconformities),
    each process's due date and why (frequency, risk-based pull-in)."""
    from ..domain.audit import programme, quarter_of

    keys = [p.key for p in config.processes]
    months = {k: config.audit.every_months.get(k, config.audit.default_every_months) for k in keys}
    facts = _audit_facts(session)
    entries = programme(year, keys, months, facts, audit_risk_signals(session, today), today, config.audit.pull_in_days)
    nc: dict[str, dict[int, int]] = {}
    start = datetime(year, 1, 1, tzinfo=UTC)
    end = datetime(year + 1, 1, 1, tzinfo=UTC)
    for process, created in session.execute(
        select(RecordRow.process, RecordRow.created_at).where(
            RecordRow.kind == "finding", RecordRow.created_at >= start, RecordRow.created_at < end
        )
    ):
        counts = nc.setdefault(process, {})
        q = quarter_of(created.date())
        counts[q] = counts.get(q, 0) + 1
    titles = {p.key: p.title for p in config.processes}
    return [
        ProgrammeLine(
            e.process,
            titles[e.process],
            e.every_months,
            e.due,
            e.overdue(today),
            e.pulled_in,
            e.reasons,
            e.cells,
            nc.get(e.process, {}),
        )
        for e in entries
    ]


def audits(session: Session, process: str | None = None, limit: int = 100) -> list[RecordRow]:
    query = select(RecordRow).where(RecordRow.kind == "audit")
    if process:
        query = query.where(RecordRow.process == process)
    return list(session.scalars(query.order_by(RecordRow.due_date.desc(), RecordRow.id).limit(limit)))


def audit(session: Session, audit_id: str) -> RecordRow | None:
    row = session.get(RecordRow, audit_id)
    return row if row is not None and row.kind == "audit" else None


def audit_results(session: Session, since: date, until: date) -> dict[str, Any]:
    """For the management review (ISO 9001 §9.3.2(c)(6)): the audits that took place in the period with
    their results, nonconformity counts by process, and the findings still open (any date)."""
    from ..domain.audit import RESULTS

    done = []
    nc: dict[str, dict[str, int]] = {}
    for fact in _audit_facts(session):
        if fact.done_on is None or not since <= fact.done_on <= until:
            continue
        row = session.get(RecordRow, fact.id)
        items = (row.data or {}).get("items", [])
        counts = {r: sum(1 for i in items if i.get("result") == r) for r in RESULTS}
        done.append({"id": row.id, "process": row.process, "stage": row.status, "done_on": fact.done_on, **counts})
        per = nc.setdefault(row.process, {"minor": 0, "major": 0})
        per["minor"] += counts["minor"]
        per["major"] += counts["major"]
    open_findings = [
        {
            "id": r.id,
            "process": r.process,
            "result": (r.data or {}).get("result"),
            "capa": (r.data or {}).get("capa"),
            "recheck_due": r.due_date,
            "overdue": is_overdue(r.due_date, until, r.status),
        }
        for r in session.scalars(
            select(RecordRow).where(RecordRow.kind == "finding", record_is_open()).order_by(RecordRow.id)
        )
    ]
    return {"audits": done, "nc_counts": nc, "open_findings": open_findings}
