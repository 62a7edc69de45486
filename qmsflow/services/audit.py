"""Internal audit use cases (SOP-AUD-001): plan, start (checklist and sample), record items, conclude,
the signed report, the re-check of a finding, and the deadline ladder.

An audit is a generic QMS record of kind ``audit`` (status = stage, owner = the auditor, process = the
process audited, due date = the planned date). A minor or major nonconformity is a record of kind
``finding`` (owner = the auditee, due date = its re-check) and opens a CAPA linked both ways, which
cannot close until the finding's re-check says effective. Refusals are recorded in the trail on
``audit:ID`` or ``audit-plan:PROCESS`` (refs of no record table: notes).
"""

from __future__ import annotations

import secrets
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select

from ..domain import audit as rules
from ..domain import limits
from ..domain.approvals import Signature
from ..domain.capabilities import declare
from ..domain.deadlines import Notice
from ..domain.errors import DomainError
from ..domain.organisation import QmsConfig
from ..domain.records import CLOSED_STATUSES, kind_of
from ..domain.refs import Ref
from ..store.tables import (
    ApprovalRequestRow,
    DocumentRow,
    DocumentVersionRow,
    PersonRow,
    RecordRow,
    SignatureRow,
)
from ..store.uow import UnitOfWork
from . import capa, contents, queries, readiness
from .approvals import notify, open_request
from .common import row_values
from .deadlines import climb
from .reactions import on_decided
from .records import NotFound, create_record, update_record
from .review_inputs import Figure, provides

CHECKLIST_FILE = Path(__file__).resolve().parent.parent / "data" / "audit-checklist.yaml"
HTML = "text/html; charset=utf-8"
REPORT_TEMPLATE = "reports/internal_audit.html.j2"


@lru_cache(maxsize=4)
def checklist(path: str = str(CHECKLIST_FILE)) -> rules.Checklist:
    """The versioned checklist data file, checked (an error names the file and the field)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise rules.AuditError(f"{path}: cannot read the audit checklist ({exc})") from None
    return rules.Checklist.parse(data, path)


def _refuse(uow: UnitOfWork, action: str, ref: str, error: Exception, details: dict[str, Any]) -> None:
    """Undo what the use case did, record the refusal and commit it; the caller raises the error."""
    uow.rollback()
    uow.record(action, ref, None, {**details, "refused": str(error)})
    uow.commit()


def load(uow: UnitOfWork, audit_id: str) -> RecordRow:
    row = uow.session.get(RecordRow, audit_id)
    if row is None or row.kind != "audit":
        raise NotFound(f"no audit {audit_id} (see 'qms audit programme')")
    return row


def load_finding(uow: UnitOfWork, finding_id: str) -> RecordRow:
    row = uow.session.get(RecordRow, finding_id)
    if row is None or row.kind != "finding":
        raise NotFound(f"no audit finding {finding_id}")
    return row


def _process(config: QmsConfig, key: str):  # noqa: ANN202
    try:
        return config.process(key)
    except StopIteration:
        raise DomainError(
            f"{key!r} is not a QMS process (processes: {', '.join(p.key for p in config.processes)})"
        ) from None


def _quality_leads(config: QmsConfig) -> list[str]:
    return [p.id for p in config.people if "quality-lead" in p.roles]


def external_organisation(config: QmsConfig, person: str) -> str | None:
    return next((e.organisation for e in config.audit.external_auditors if e.person == person), None)


# ------------------------------------------------------------------ impartiality


def process_documents(config: QmsConfig, key: str) -> list[str]:
    """The controlled documents of a process: its procedure."""
    return [config.process(key).procedure]


def document_activity(uow: UnitOfWork, documents: list[str], since: date) -> list[rules.DocumentActivity]:
    """Who authored (submitted or wrote the change) and who approved versions of ``documents`` since ``since``,
    from the approval requests of their versions and the signatures on them."""
    out: list[rules.DocumentActivity] = []
    start = datetime.combine(since, time.min, tzinfo=UTC)
    for doc in documents:
        requests = uow.session.scalars(
            select(ApprovalRequestRow).where(
                ApprovalRequestRow.subject.like(f"document-version:{doc}@%"), ApprovalRequestRow.created_at >= start
            )
        ).all()
        for request in requests:
            version = Ref.parse(request.subject).version or "?"
            for person in dict.fromkeys([*([request.author] if request.author else []), *(request.authors or [])]):
                out.append(rules.DocumentActivity(person, doc, version, "authored", request.created_at.date()))
            for signature in uow.session.scalars(
                select(SignatureRow).where(SignatureRow.request_id == request.id, SignatureRow.decision == "approve")
            ):
                out.append(rules.DocumentActivity(signature.signer, doc, version, "approved", signature.at.date()))
    return out


def conflicts(uow: UnitOfWork, config: QmsConfig, auditor: str, key: str, on: date) -> list[str]:
    process = _process(config, key)
    docs = process_documents(config, key)
    return rules.conflicts(
        auditor,
        key,
        owner=process.owner,
        members=process.members,
        documents=docs,
        activity=document_activity(uow, docs, on - timedelta(days=rules.LOOKBACK_DAYS)),
        on=on,
    )


# ------------------------------------------------------------------ plan


def plan(uow: UnitOfWork, config: QmsConfig, process_key: str, auditor: str, on: date, planned_by: str) -> RecordRow:
    """Plan an audit of ``process_key`` by ``auditor`` on ``on``; an auditor who is not impartial is refused
    (``Conflict``, naming each conflict) and the refusal recorded. Notifies the auditor and the auditee."""
    process = _process(config, process_key)
    people = {p.id for p in config.people}
    if auditor not in people:
        raise DomainError(f"auditor {auditor!r} is not a person of qms.yaml (people: {', '.join(sorted(people))})")
    reasons = conflicts(uow, config, auditor, process_key, on)
    if reasons:
        error = rules.Conflict(auditor, process_key, reasons)
        _refuse(
            uow,
            "audit.plan-refused",
            f"audit-plan:{process_key}",
            error,
            {"process": process_key, "auditor": auditor, "date": on.isoformat(), "conflicts": reasons},
        )
        raise error
    external = external_organisation(config, auditor)
    row, created = create_record(
        uow,
        "audit",
        f"Internal audit of {process.title}",
        key=f"audit:{process_key}:{on.isoformat()}:{auditor}",
        owner=auditor,
        process=process_key,
        due_date=on,
        status="planned",
        data={
            "auditor": auditor,
            "auditee": process.owner,
            "planned_by": planned_by,
            "planned_date": on.isoformat(),
            "external": external,
            "aspects": list(process.aspects),
            "scope": f"{process.title} ({process_key}): procedure {process.procedure}, its records of the last 12 months",
            "impartiality": "checked: not the owner, not a member, no authored or approved document in 12 months",
            "stages": {},
        },
        links=[f"process:{process_key}"],
    )
    if created:
        link = f"{config.web.base_url.rstrip('/')}/audits/{row.id}"
        for person, role in ((auditor, "auditor"), (process.owner, "auditee")):
            notify(
                uow,
                config,
                person,
                f"slack:{row.id}:planned:{person}",
                f"audit:{row.id}:{person}",
                "notice",
                text=f"{row.id}: internal audit of {process.title} planned for {on.isoformat()}; you are the {role}.",
                link=link,
            )
    uow.commit()
    return row


def cancel(uow: UnitOfWork, config: QmsConfig, audit_id: str, reason: str, by: str) -> RecordRow:
    row = load(uow, audit_id)
    data = rules.MACHINE.check(audit_id, row.status, "cancelled", {"reason": reason})
    update_record(uow, row, "cancelled", status="cancelled", data={**row.data, "cancelled": {**data, "by": by}})
    uow.commit()
    return row


# ------------------------------------------------------------------ the checklist and its sample


def populations(uow: UnitOfWork, config: QmsConfig, audit: RecordRow, on: date) -> dict[str, list[str]]:
    """The records each evidence kind offers for an audit of the process on ``on`` (the 12 months before)."""
    key = audit.process
    start = datetime.combine(on - timedelta(days=rules.LOOKBACK_DAYS), time.min, tzinfo=UTC)
    end = datetime.combine(on, time.max, tzinfo=UTC)

    def records(kind: str, of_process: bool = True) -> list[str]:
        query = select(RecordRow.id).where(
            RecordRow.kind == kind, RecordRow.created_at >= start, RecordRow.created_at <= end
        )
        if of_process:
            query = query.where(RecordRow.process == key)
        return [rid for rid in uow.session.scalars(query) if rid != audit.id]

    doc_requests: list[str] = []
    for doc in process_documents(config, key):
        doc_requests += uow.session.scalars(
            select(ApprovalRequestRow.id).where(
                ApprovalRequestRow.subject.like(f"document-version:{doc}@%"),
                ApprovalRequestRow.created_at >= start,
                ApprovalRequestRow.created_at <= end,
            )
        ).all()
    return {
        "document-approvals": sorted(doc_requests),
        "capas": sorted(records("capa")),
        "release-validations": sorted(records("release")),
        # an audit of the audit process samples the audits and findings of every process
        "audits": sorted(records("audit", of_process=False)),
        "findings": sorted(records("finding", of_process=False)),
        "approvals": sorted(
            uow.session.scalars(
                select(ApprovalRequestRow.id).where(
                    ApprovalRequestRow.process == key,
                    ApprovalRequestRow.created_at >= start,
                    ApprovalRequestRow.created_at <= end,
                )
            ).all()
        ),
    }


def start(uow: UnitOfWork, config: QmsConfig, audit_id: str, flow_run_id: str | None = None) -> dict[str, Any]:
    """Build the checklist of a planned audit and draw its sample: the seed is recorded in the trail
    (``audit.seed-recorded`` on ``audit:ID``, with the checklist version and every population) before the
    draw. Idempotent: an audit already started is returned as it is."""
    row = load(uow, audit_id)
    if row.status != "planned":
        if flow_run_id and not row.data.get("flow_run_id") and row.status != "cancelled":
            _attach_run(uow, row, flow_run_id)
            uow.commit()
        return summary(row)
    book = checklist()
    today = uow.now().date()
    seed = rules.seed_for(audit_id, secrets.token_hex(16))
    found = populations(uow, config, row, today)
    uow.record(
        "audit.seed-recorded",
        f"audit:{audit_id}",
        None,
        {"seed": seed, "checklist_version": book.version, "drawn_on": today.isoformat(), "populations": found},
    )
    uow.trail.flush()  # the seed is in the trail before the draw
    papers = rules.build_checklist(book, row.process, row.data.get("aspects", []), found, seed)
    fields = rules.MACHINE.check(audit_id, row.status, "in_progress", {"checklist_version": book.version, "seed": seed})
    update_record(
        uow,
        row,
        "started",
        status="in_progress",
        data={
            **row.data,
            "stages": {**row.data.get("stages", {}), "in_progress": {**fields, "started_on": today.isoformat()}},
            "items": [p.model_dump(mode="json") for p in papers],
            **({"flow_run_id": flow_run_id} if flow_run_id else {}),
        },
    )
    uow.commit()
    return summary(row)


def _attach_run(uow: UnitOfWork, row: RecordRow, flow_run_id: str) -> None:
    """A run for an audit started without one (``qms audit start`` before its date): the run, and the report's
    pending approval request, now name it, so that the conclusion and the signatures resume it."""
    update_record(uow, row, "run-attached", data={**row.data, "flow_run_id": flow_run_id})
    pending = (row.data.get("pending") or {}).get("request")
    request = uow.session.get(ApprovalRequestRow, pending) if pending else None
    if request is not None and request.flow_run_id is None:
        before = row_values(request)
        request.flow_run_id = flow_run_id
        uow.record("approval.run-attached", f"approval:{request.id}", before, row_values(request))


def redraw(population: list[str], size: int, seed: str, item: int) -> list[str]:
    """Anyone can draw the same sample again from the seed in the trail."""
    return rules.draw(population, size, seed, item)


# ------------------------------------------------------------------ evidence


def resolve(uow: UnitOfWork, reference: str) -> str:
    """The reference as a ``kind:id`` of something that exists (a record, an approval request, a document or
    one of its versions, a trail event); ``DomainError`` naming the reference otherwise."""
    text = reference.strip()
    limits.check_text("evidence", text, limits.KEY)
    session = uow.session
    if ":" not in text:
        if "@" in text:
            text = f"document-version:{text}"
        elif kind_of(text) == "approval":
            text = f"approval:{text}"
        elif kind_of(text) is not None:
            text = f"record:{text}"
        else:
            text = f"document:{text}"
    try:
        ref = Ref.parse(text)
    except ValueError as exc:
        raise DomainError(f"evidence {reference!r}: {exc}") from None
    found = False
    if ref.kind == "approval":
        found = session.get(ApprovalRequestRow, ref.id) is not None
    elif ref.kind == "document":
        found = session.get(DocumentRow, ref.id) is not None
    elif ref.kind == "document-version":
        found = (
            session.scalar(
                select(DocumentVersionRow.id).where(
                    DocumentVersionRow.document_id == ref.id, DocumentVersionRow.version == (ref.version or "")
                )
            )
            is not None
        )
    elif ref.kind == "trail" and ref.id.isdigit():
        from ..store.tables import TrailEventRow

        found = session.get(TrailEventRow, int(ref.id)) is not None
    else:  # record:ID, or capa:ID, finding:ID, audit:ID …
        row = session.get(RecordRow, ref.id)
        found = row is not None and (ref.kind == "record" or row.kind == ref.kind)
        if found:
            ref = Ref(row.kind, row.id)
    if not found:
        raise DomainError(
            f"evidence {reference!r} does not resolve to an existing record or document (give e.g. "
            "CAPA-2026-0001, APR-2026-0003, SOP-DOC-001@1.0, document:SOP-DOC-001 or trail:42)"
        )
    return str(ref)


# ------------------------------------------------------------------ recording items


# SOP-AUD-001 4.5: record below (`qms audit record`), rules in domain.audit.record_item
RECORD_ITEMS = declare(
    "audit.record_items",
    "qmsflow records each checklist item of an audit (`qms audit record`) as a workpaper: objective, "
    "procedure, population, sample, result (conform, observation, improvement, minor or major), evidence, "
    "preparer (the auditor) and reviewer (the quality lead who approves the report). It refuses an entry by "
    "anyone but the audit's auditor, an evidence reference that does not name an existing record, approval, "
    "document, document version or trail event, a result other than conform without a note, and a "
    "nonconformity without evidence; each refused entry is recorded in the audit trail.",
    proved_by=(
        "tests/integration/test_audit.py::test_the_audit_end_to_end_with_a_major_finding_its_capa_and_the_signed_report",
        "tests/unit/test_audit_domain.py::test_recording_an_item_checks_result_note_evidence_and_stage",
        "tests/integration/test_audit.py::test_cli_plan_refusal_exits_1_and_record_names_the_item",
    ),
    module=__name__,
)


# SOP-AUD-001 4.7: _raise_finding, called by record
FINDING_OPENS_CAPA = declare(
    "audit.finding_opens_capa",
    "For each minor or major nonconformity recorded in an audit, qmsflow records a finding and opens a CAPA "
    "at once (source audit, owned by the auditee, severity medium for a minor and high for a major "
    "nonconformity), linked both ways, and mirrored to Jira when Jira is switched on.",
    proved_by=(
        "tests/integration/test_audit.py::test_the_audit_end_to_end_with_a_major_finding_its_capa_and_the_signed_report",
        "tests/integration/test_audit.py::test_a_nonconformity_opens_a_capa_mirrored_to_jira",
    ),
    module=__name__,
)


def record(
    uow: UnitOfWork,
    config: QmsConfig,
    audit_id: str,
    item: int,
    result: str,
    evidence: list[str],
    note: str,
    by: str,
) -> dict[str, Any]:
    """The auditor records one checklist item (a workpaper): result, evidence (each must resolve), note. A
    minor or major nonconformity becomes a finding and opens a CAPA (source audit, linked both ways, mirrored
    to Jira when it is on). A refusal is recorded on ``audit:ID``."""
    limits.check_text("note", note, limits.TEXT, multiline=True)
    row = load(uow, audit_id)
    try:
        if by != row.owner:
            raise DomainError(f"only the auditor of {audit_id} ({row.owner}) records its items, not {by}")
        resolved = [resolve(uow, ref) for ref in evidence]
        paper = rules.record_item(audit_id, row.status, row.data.get("items", []), item, result, resolved, note, by)
    except DomainError as error:
        _refuse(
            uow,
            "audit.record-refused",
            f"audit:{audit_id}",
            error,
            {"item": item, "result": result, "evidence": list(evidence), "by": by},
        )
        raise
    now = uow.now()
    paper["recorded_at"] = now.isoformat()
    data = {**row.data}
    links = list(row.links)
    if result in rules.NONCONFORMITIES:
        finding, capa_row = _raise_finding(uow, config, row, paper)
        paper["finding"], paper["capa"] = finding.id, capa_row.id
        data["findings"] = [*data.get("findings", []), finding.id]
        links += [f"finding:{finding.id}", f"capa:{capa_row.id}"]
    items = [paper if p["n"] == item else p for p in data.get("items", [])]
    update_record(uow, row, "item-recorded", data={**data, "items": items}, links=list(dict.fromkeys(links)))
    uow.commit()
    return paper


def _raise_finding(
    uow: UnitOfWork, config: QmsConfig, audit: RecordRow, paper: dict[str, Any]
) -> tuple[RecordRow, RecordRow]:
    today = uow.now().date()
    result = paper["result"]
    recheck = today + timedelta(days=config.audit.recheck_days)
    title = f"{result} nonconformity in {audit.process}: {paper['objective']}"[: limits.RECORD_TITLE]
    finding, _ = create_record(
        uow,
        "finding",
        title,
        key=f"audit:{audit.id}:item:{paper['n']}",
        owner=audit.data.get("auditee"),
        process=audit.process,
        due_date=recheck,
        status="open",
        data={
            "audit": audit.id,
            "item": paper["n"],
            "result": result,
            "criteria": paper["criteria"],
            "note": paper["note"],
            "evidence": paper["evidence"],
            "auditor": audit.owner,
            "rechecks": [],
        },
        links=[f"audit:{audit.id}"],
    )
    corrective = capa.create_capa(
        uow,
        config,
        title=f"{finding.id}: {title}"[: limits.RECORD_TITLE],
        source="audit",
        owner=audit.data.get("auditee"),
        process=audit.process,
        severity=rules.CAPA_SEVERITY[result],
        description=f"Audit {audit.id} item {paper['n']} ({paper['criteria']['ai_act']}): {paper['note']}",
        key=f"finding:{finding.id}:capa",
        links=[f"finding:{finding.id}", f"audit:{audit.id}"],
        closure_gate={"ref": f"finding:{finding.id}", "why": f"the re-check of {finding.id} says effective"},
    )
    update_record(
        uow,
        finding,
        "capa-opened",
        data={**finding.data, "capa": corrective.id},
        links=[*finding.links, f"capa:{corrective.id}"],
    )
    return finding, corrective


# ------------------------------------------------------------------ conclusion and the signed report


# SOP-AUD-001 4.6: conclude, the report request and its decision, write_report
SIGNED_REPORT = declare(
    "audit.signed_report",
    "qmsflow refuses to conclude an audit (`qms audit conclude`) before every checklist item is recorded, and "
    "records the refusal. It then renders the report from the audit record (scope, criteria, auditor, "
    "auditee, dates, the sampled records, every item's result and evidence, the findings and the "
    "conclusion) and asks the auditor and a quality lead other than the auditor and the auditee to sign it "
    "through the shared approval step. Both sign the exact report, kept in the content store under its "
    "SHA-256, and `qms verify` reports any later change to the audit record. A report rejected or sent back "
    "returns the audit to recording. Once signed, qmsflow writes the report as HTML, and as PDF where "
    "WeasyPrint is installed.",
    proved_by=(
        "tests/integration/test_audit.py::test_the_audit_end_to_end_with_a_major_finding_its_capa_and_the_signed_report",
        "tests/integration/test_audit.py::test_a_tampered_signed_report_fails_qms_verify",
        "tests/integration/test_audit.py::test_a_report_sent_back_returns_the_audit_to_in_progress",
    ),
    module=__name__,
)


def conclude(uow: UnitOfWork, config: QmsConfig, audit_id: str, conclusion: str, by: str) -> dict[str, Any]:
    """The auditor concludes (every item recorded): the audit moves to reporting, the report is rendered from
    the record and kept in the content store, and one approval request asks the auditor to sign it and a
    quality lead to approve it (the shared approval step)."""
    limits.check_text("conclusion", conclusion, limits.TEXT, multiline=True)
    row = load(uow, audit_id)
    try:
        if by != row.owner:
            raise DomainError(f"only the auditor of {audit_id} ({row.owner}) concludes it, not {by}")
        fields = rules.MACHINE.check(
            audit_id, row.status, "reporting", {"conclusion": conclusion, "items": row.data.get("items", [])}
        )
        approvers = [row.owner, *[q for q in _quality_leads(config) if q not in (row.owner, row.data.get("auditee"))]]
        if len(approvers) < 2:
            raise DomainError(f"{audit_id}: no quality lead other than the auditor and auditee to approve the report")
    except DomainError as error:
        _refuse(uow, "audit.conclude-refused", f"audit:{audit_id}", error, {"by": by})
        raise
    today = uow.now().date()
    stages = {**row.data.get("stages", {}), "reporting": {**fields, "concluded_on": today.isoformat()}}
    update_record(uow, row, "concluded", status="reporting", data={**row.data, "stages": stages})
    request = _request_report(uow, config, row, approvers[:2])
    uow.commit()
    return {**summary(row), "awaiting": request.id}


def report_context(uow: UnitOfWork, config: QmsConfig, row: RecordRow) -> dict[str, Any]:
    names = dict(uow.session.execute(select(PersonRow.id, PersonRow.name)).all())
    data = row.data
    items = data.get("items", [])
    counts = {r: sum(1 for i in items if i.get("result") == r) for r in rules.RESULTS}
    return {
        "organisation": config.organisation.name,
        "audit": {
            "id": row.id,
            "title": row.title,
            "process": row.process,
            "scope": data.get("scope", ""),
            "auditor": names.get(row.owner, row.owner),
            "external": data.get("external"),
            "auditee": names.get(data.get("auditee"), data.get("auditee")),
            "planned_date": data.get("planned_date"),
            "started_on": data.get("stages", {}).get("in_progress", {}).get("started_on"),
            "concluded_on": data.get("stages", {}).get("reporting", {}).get("concluded_on"),
            "checklist_version": data.get("stages", {}).get("in_progress", {}).get("checklist_version"),
            "seed": data.get("stages", {}).get("in_progress", {}).get("seed"),
            "conclusion": data.get("stages", {}).get("reporting", {}).get("conclusion", ""),
            "findings": data.get("findings", []),
        },
        "items": items,
        "counts": counts,
    }


def render_report(context: dict[str, Any], signatures: list[dict[str, Any]] | None = None, signed: str = "") -> str:
    from ..adapters.render import html_environment

    template = html_environment().get_template(REPORT_TEMPLATE)
    return template.render(**context, signatures=signatures or [], signed_sha256=signed)


def _request_report(uow: UnitOfWork, config: QmsConfig, row: RecordRow, approvers: list[str]) -> ApprovalRequestRow:
    html = render_report(report_context(uow, config, row))
    sha = contents.store(uow, html.encode("utf-8"), HTML)
    attempt = len(row.data.get("requests", []))
    request, _ = open_request(
        uow,
        config,
        key=f"audit:{row.id}:report:{attempt}",
        subject=str(Ref("audit", row.id, "closed")),
        title=f"{row.id} {row.title}: report",
        what=f"the internal audit report {row.id}",
        content_sha256=sha,
        approvers=approvers,
        required="all",
        author=None,
        meaning=f"signs (auditor) or approves (quality lead) the internal audit report {row.id}",
        data={"audit": row.id, "report_sha256": sha},
        process="internal-audit" if any(p.key == "internal-audit" for p in config.processes) else None,
        flow_run_id=row.data.get("flow_run_id"),
    )
    update_record(
        uow,
        row,
        "report-requested",
        data={
            **row.data,
            "pending": {"request": request.id, "report_sha256": sha},
            "requests": [*row.data.get("requests", []), request.id],
        },
    )
    return request


@on_decided("audit")
def on_report_decided(uow: UnitOfWork, config: QmsConfig, request: ApprovalRequestRow, signature: Signature) -> None:
    """Approved: the audit is closed and every workpaper names its reviewer (the approving quality lead).
    Rejected or changes requested: back to in progress, the auditor is told. In the signature's transaction."""
    row = load(uow, request.data["audit"])
    pending = row.data.get("pending")
    if not pending or pending.get("request") != request.id:
        return
    data = {k: v for k, v in row.data.items() if k != "pending"}
    if request.status == "approved":
        signers = list(
            uow.session.scalars(
                select(SignatureRow.signer).where(
                    SignatureRow.request_id == request.id, SignatureRow.decision == "approve"
                )
            )
        )
        reviewer = next((s for s in signers if s != row.owner), signature.signer)
        data["items"] = [{**p, "reviewer": reviewer} for p in data.get("items", [])]
        data["stages"] = {
            **data.get("stages", {}),
            "closed": {"report_sha256": pending["report_sha256"], "approval": request.id, "signed_by": signers},
        }
        update_record(uow, row, "closed", status="closed", data=data)  # findings stay open until re-checked
        return
    data["sent_back"] = [*data.get("sent_back", []), {"request": request.id, "status": request.status}]
    update_record(uow, row, "sent-back", status="in_progress", data=data)
    notify(
        uow,
        config,
        row.owner,
        f"slack:{request.id}:audit-sent-back",
        f"audit:{row.id}:{row.owner}",
        "notice",
        text=f"{row.id}: the report was {request.status.replace('_', ' ')} ({request.id}); conclude it again.",
        link=None,
    )


def signatures_of(uow: UnitOfWork, request_id: str) -> list[dict[str, Any]]:
    return [
        {
            "name": s.printed_name,
            "meaning": s.meaning,
            "decision": s.decision,
            "at": f"{s.at:%Y-%m-%d %H:%M:%S} UTC",
            "method": s.method,
            "content_sha256": s.content_sha256,
        }
        for s in uow.session.scalars(
            select(SignatureRow).where(SignatureRow.request_id == request_id).order_by(SignatureRow.id)
        )
    ]


def write_report(uow: UnitOfWork, config: QmsConfig, audit_id: str, out_dir: Path) -> dict[str, Any]:
    """Write the signed report (HTML, and PDF when WeasyPrint is installed) of a closed audit: the signed
    content as kept in the store, followed by its signatures. Idempotent."""
    from ..adapters.render import RenderError, html_to_pdf

    row = load(uow, audit_id)
    closed = row.data.get("stages", {}).get("closed")
    if row.status != "closed" or not closed:
        return {}
    stored = contents.load(uow.session, closed["report_sha256"])
    if stored is None:
        raise DomainError(f"{audit_id}: the signed report {closed['report_sha256'][:16]}… is missing from the store")
    html = render_report(
        report_context(uow, config, row) | {"items": row.data.get("items", [])},
        signatures_of(uow, closed["approval"]),
        closed["report_sha256"],
    )
    target = Path(out_dir) / "audits" / audit_id
    target.mkdir(parents=True, exist_ok=True)
    signed_path = target / f"{audit_id}-signed-content.html"
    signed_path.write_bytes(stored.body)
    html_path = target / f"{audit_id}.html"
    html_path.write_text(html, encoding="utf-8")
    out = {"html": str(html_path), "signed": str(signed_path)}
    try:
        pdf = target / f"{audit_id}.pdf"
        pdf.write_bytes(html_to_pdf(html, base_url=str(target)))
        out["pdf"] = str(pdf)
    except RenderError as exc:
        out["pdf_error"] = str(exc)
    return out


# ------------------------------------------------------------------ re-check of a finding (follow-up)


# SOP-AUD-001 4.7: follow_up below (`qms audit follow-up`), and the CAPA closure gate in services.capa
RECHECK = declare(
    "audit.recheck",
    "A CAPA opened from an audit finding cannot close until the finding is re-checked as effective "
    "(`qms audit follow-up`). qmsflow refuses a re-check by the CAPA owner or without evidence and records "
    "each refusal in the audit trail; an ineffective re-check keeps the finding open. The re-check is due "
    "`audit.recheck_days` (60 by default) after the finding's CAPA was opened.",
    proved_by=(
        "tests/integration/test_audit.py::test_the_audit_end_to_end_with_a_major_finding_its_capa_and_the_signed_report",
        "tests/integration/test_audit.py::test_a_finding_past_its_recheck_date_reminds_the_auditee_then_their_manager",
    ),
    module=__name__,
)


def follow_up(
    uow: UnitOfWork,
    config: QmsConfig,
    finding_id: str,
    result: str,
    evidence: list[str],
    note: str,
    by: str,
) -> dict[str, Any]:
    """Re-check a finding once its CAPA's actions are implemented (CAPA in effectiveness_check). The checker
    must be impartial for the process and not the CAPA owner. Effective: the finding closes and its CAPA may
    close; ineffective: the re-check is due again in ``audit.recheck_days``."""
    limits.check_text("note", note, limits.TEXT, multiline=True)
    row = load_finding(uow, finding_id)
    try:
        if result not in rules.FOLLOW_UP_RESULTS:
            raise DomainError(f"result {result!r} is not allowed (allowed: {', '.join(rules.FOLLOW_UP_RESULTS)})")
        if row.status in CLOSED_STATUSES:
            raise DomainError(f"{finding_id} is {row.status}: its re-check said effective already")
        capa_row = uow.session.get(RecordRow, row.data.get("capa") or "")
        if capa_row is None:
            raise DomainError(f"{finding_id} has no CAPA yet")
        if capa_row.status != "effectiveness_check":
            raise DomainError(
                f"{finding_id}: its CAPA {capa_row.id} is in {capa_row.status}; re-check once it is in effectiveness_check"
            )
        if by == capa_row.owner:
            raise DomainError(f"{by} owns {capa_row.id} and may not re-check its finding")
        reasons = conflicts(uow, config, by, row.process, uow.now().date())
        if reasons:
            raise rules.Conflict(by, row.process, reasons)
        if not note.strip():
            raise DomainError(f"{finding_id}: a re-check needs a note (what was checked)")
        resolved = [resolve(uow, ref) for ref in evidence]
        if not resolved:
            raise DomainError(f"{finding_id}: a re-check needs evidence (--evidence)")
    except DomainError as error:
        _refuse(
            uow, "audit.follow-up-refused", f"audit:{row.data.get('audit')}", error, {"finding": finding_id, "by": by}
        )
        raise
    today = uow.now().date()
    check = {"result": result, "evidence": resolved, "note": note, "by": by, "on": today.isoformat()}
    data = {**row.data, "rechecks": [*row.data.get("rechecks", []), check]}
    if result == "effective":
        update_record(uow, row, "verified", status="closed", due_date=None, data=data)
        capa.satisfy_closure_gate(uow, capa_row, f"finding:{finding_id}", by)
    else:
        update_record(
            uow, row, "recheck-ineffective", due_date=today + timedelta(days=config.audit.recheck_days), data=data
        )
    uow.commit()
    return {"finding": finding_id, "status": row.status, "capa": capa_row.id}


# ------------------------------------------------------------------ deadlines


# SOP-AUD-001 4.7: escalate_overdue below, run by the daily audit scan (flows/internal_audit.audit_scan)
LADDER = declare(
    "audit.ladder",
    "qmsflow's daily audit scan reminds the auditor of an audit past its planned date and not yet reported, "
    "and the auditee of a finding past its re-check date or without a CAPA, then their manager "
    "(`audit.remind_after_days`, `audit.escalate_after_days`, optionally `audit.escalate_further_after_days` "
    "in qms.yaml); each step is sent once and recorded in the audit trail.",
    proved_by=(
        "tests/integration/test_audit.py::test_the_ladder_reminds_the_auditor_of_an_overdue_audit_once_then_the_manager",
        "tests/integration/test_audit.py::test_a_finding_past_its_recheck_date_reminds_the_auditee_then_their_manager",
    ),
    module=__name__,
)


def escalate_overdue(uow: UnitOfWork, config: QmsConfig, today: date) -> list[tuple[str, str, str]]:
    """The deadline ladder (``audit`` in qms.yaml): an audit past its planned date and not yet reported (the
    auditor), a finding past its re-check date or without a CAPA (the auditee); each rung once, recorded."""
    ladder = config.audit.ladder()
    managers = {p.id: p.manager for p in config.people}
    now = datetime.combine(today, time.min, tzinfo=UTC)
    done: list[tuple[str, str, str]] = []
    rows = uow.session.scalars(
        select(RecordRow)
        .where(RecordRow.kind.in_(("audit", "finding")), RecordRow.status.in_(("planned", "in_progress", "open")))
        .order_by(RecordRow.id)
    ).all()
    link = f"{config.web.base_url.rstrip('/')}/audits"
    for row in rows:
        if not row.owner:
            continue
        if row.kind == "finding" and not row.data.get("capa"):
            since, why = row.created_at, "has no CAPA"
        elif row.due_date is not None and row.due_date < today:
            since = datetime.combine(row.due_date, time.min, tzinfo=UTC)
            why = "is overdue against its planned date" if row.kind == "audit" else "is past its re-check date"
        else:
            continue
        sent = list(row.data.get("escalations", []))

        def text(notice: Notice, row: RecordRow = row, why: str = why) -> str:
            return f"{row.id} ({row.title}) {why}" + ("" if notice.level.value == "remind" else f"; {row.owner}") + "."

        fired = climb(
            uow,
            config,
            ref=f"record:{row.id}",
            waiting_for=[row.owner],
            since=since,
            now=now,
            ladder=ladder,
            managers=managers,
            sent=sent,
            event=lambda level, kind=row.kind: f"{kind}.escalated",
            text=text,
            link=link,
            stage=row.status,
            details={"due": row.due_date.isoformat() if row.due_date else None, "why": why},
            stream=f"audit:{row.id}",
        )
        for notice in fired:
            done.append((row.id, notice.level.value, notice.to))
        if fired:
            update_record(uow, row, "escalations-recorded", data={**row.data, "escalations": sent})
    uow.commit()
    return done


def resume_run(ctx: Any, audit_id: str) -> bool:  # noqa: ANN401 - a QmsContext
    """Resume the flow run of an audit that waits for its items to be recorded (after ``conclude``). A resume
    that fails is logged: the audit is concluded either way; the run's own wait re-reads the record."""
    import logging

    from ..adapters import prefect_api

    with ctx.db.read() as session:
        row = session.get(RecordRow, audit_id)
        run_id = (row.data or {}).get("flow_run_id") if row is not None else None
        stage = row.status if row is not None else None
    if not run_id:
        return False
    try:
        return prefect_api.resume(
            prefect_api.locate(ctx.loaded.state_dir), run_id, {"audit_id": audit_id, "stage": stage}, within=30
        )
    except prefect_api.PrefectUnavailable as exc:
        logging.getLogger("qmsflow.audit").warning(
            "%s (the run goes on when the report's signatures resume it, or the hourly follow-up does)", exc
        )
        return False


def summary(row: RecordRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "stage": row.status,
        "process": row.process,
        "auditor": row.owner,
        "planned": row.due_date.isoformat() if row.due_date else None,
        "items": len(row.data.get("items", [])),
        "open_items": [i["n"] for i in row.data.get("items", []) if not i.get("result")],
        "pending": (row.data.get("pending") or {}).get("request"),
        "requests": len(row.data.get("requests", [])),
    }


# SOP-AUD-001 4.3: due_to_start (the daily audit scan) and start (`qms audit start`)
SCHEDULED_START = declare(
    "audit.scheduled_start",
    "On an audit's planned date qmsflow's daily audit scan starts the audit's run (deployment "
    "`internal-audit/on-demand`, one run per audit); `qms audit start` builds the checklist and draws the "
    "sample before that date, and the run then continues from where the audit stands.",
    proved_by=(
        "tests/integration/test_audit.py::test_an_audit_worked_before_its_run_gets_the_run_attached_to_it_and_its_report_request",
    ),
    module=__name__,
)


def due_to_start(uow: UnitOfWork, today: date) -> list[str]:
    """Audits whose date has come and that no flow run carries yet (the daily scan starts one each)."""
    rows = uow.session.scalars(
        select(RecordRow)
        .where(
            RecordRow.kind == "audit",
            RecordRow.status.in_(("planned", "in_progress", "reporting", "closed")),
            RecordRow.due_date <= today,
        )
        .order_by(RecordRow.due_date, RecordRow.id)
    ).all()
    return [r.id for r in rows if not r.data.get("flow_run_id")]


def show(uow: UnitOfWork, audit_id: str) -> dict[str, Any]:
    row = load(uow, audit_id)
    return {**row_values(row), "next": rules.MACHINE.next_stages(row.status)}


@readiness.audit_source
def audits_of_year(session, year: int) -> dict[str, list[str]]:  # noqa: ANN001
    """Readiness (``qms readiness``): the audits of ``year`` per process that reached their report (concluded)."""
    found: dict[str, list[str]] = {}
    rows = session.scalars(
        select(RecordRow).where(RecordRow.kind == "audit", RecordRow.status.in_(("reporting", "closed")))
    )
    for row in rows:
        concluded = ((row.data or {}).get("stages", {}).get("reporting", {}) or {}).get("concluded_on")
        when = date.fromisoformat(concluded) if concluded else row.due_date
        if row.process and when is not None and when.year == year:
            found.setdefault(row.process, []).append(row.id)
    return found


@provides("c.internal-audit", "internal-audit")
def review_audit_figures(session, config, window) -> list[Figure]:  # noqa: ANN001
    """Internal audits concluded in the quarter, their nonconformities by process, and the findings still open."""
    last_day = (window.end - timedelta(microseconds=1)).date()
    results = queries.audit_results(session, window.start.date(), last_day)
    audits = [a["id"] for a in results["audits"]]
    figures = [Figure("internal audits concluded", len(audits), audits)] if audits else []
    for process, counts in sorted(results["nc_counts"].items()):
        ids = [a["id"] for a in results["audits"] if a["process"] == process]
        figures.append(
            Figure(f"{process}: nonconformities (minor / major)", f"{counts['minor']} / {counts['major']}", ids)
        )
    open_findings = [f["id"] for f in results["open_findings"]]
    if open_findings:
        figures.append(Figure("findings still open", len(open_findings), open_findings))
        overdue = [f["id"] for f in results["open_findings"] if f["overdue"]]
        figures.append(Figure("findings past their re-check date", len(overdue), overdue))
    return figures


@provides("f.improvement", "audit-improvements")
def review_audit_improvements(session, config, window) -> list[Figure]:  # noqa: ANN001
    """Opportunities for improvement the quarter's audits recorded (items graded 'improvement')."""
    last_day = (window.end - timedelta(microseconds=1)).date()
    results = queries.audit_results(session, window.start.date(), last_day)
    ids = [a["id"] for a in results["audits"] if a.get("improvement")]
    count = sum(a.get("improvement", 0) for a in results["audits"])
    return [Figure("audit opportunities for improvement", count, ids)] if count else []
