"""Document review (SOP-DOC-001): snapshot a document, request signed approval, then conclude.

Every step is idempotent, keyed by the Prefect flow run id, because a suspended review re-runs its
flow from the top when it resumes (docs/adr/0002-flow-idempotency.md).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from sqlalchemy import select

from ..adapters import git
from ..domain.approvals import RequestStatus
from ..domain.documents import DocStatus, add_months, next_version
from ..domain.errors import DomainError
from ..domain.organisation import ControlledDocument, QmsConfig
from ..store.tables import ApprovalRequestRow, DocumentVersionRow, RecordRow, SignatureRow
from ..store.uow import UnitOfWork
from .approvals import load, notify, open_request
from .common import row_values, sha256_file
from .documents import REVIEW_DUE, effective_version, latest_version, transition_version
from .records import update_record


def summary(row: ApprovalRequestRow, signatures: int) -> dict[str, Any]:
    return {
        "id": row.id,
        "status": row.status,
        "signatures": signatures,
        "subject": row.subject,
        "flow_run_id": row.flow_run_id,
        **row.data,
    }


def request_summary(uow: UnitOfWork, request_id: str) -> dict[str, Any]:
    row, request = load(uow, request_id)
    return summary(row, len(request.signatures))


def open_review(
    uow: UnitOfWork,
    config: QmsConfig,
    root: Path,
    *,
    document_id: str,
    submitted_by: str,
    major: bool,
    still_valid: bool,
    comment: str | None,
    flow_run_id: str,
) -> dict[str, Any]:
    """Snapshot the document and request approval; returns the request summary (existing one on re-run)."""
    key = f"document-review:{flow_run_id}"
    existing = uow.session.scalar(select(ApprovalRequestRow).where(ApprovalRequestRow.key == key))
    if existing is not None:
        return request_summary(uow, existing.id)
    uow.trail.lock()
    doc, sha, effective = check_submission(uow, config, root, document_id, still_valid)
    commit = git.commit_of(root, doc.path)
    if still_valid:
        version = effective
        title = f"Periodic review of {doc.id} {doc.title} v{version.version}: still valid"
        meaning = f"reviewed {doc.id} v{version.version} and confirm it is still valid"
    else:
        label = next_version(effective.version if effective else None, major)
        latest = latest_version(uow, doc.id)
        if latest is not None and latest.status == DocStatus.DRAFT.value:
            version = latest
            before = row_values(version, exclude=("id",))
            version.version, version.content_sha256, version.git_commit, version.path = label, sha, commit, doc.path
            if before != row_values(version, exclude=("id",)):
                uow.record(
                    "document-version.snapshot",
                    f"document-version:{doc.id}@{label}",
                    before,
                    row_values(version, exclude=("id",)),
                )
        else:
            version = DocumentVersionRow(
                document_id=doc.id,
                version=label,
                status=DocStatus.DRAFT.value,
                path=doc.path,
                content_sha256=sha,
                git_commit=commit,
                created_at=uow.now(),
            )
            uow.session.add(version)
            uow.session.flush()
            uow.record(
                "document-version.snapshot",
                f"document-version:{doc.id}@{label}",
                None,
                row_values(version, exclude=("id",)),
            )
        transition_version(uow, version, DocStatus.IN_REVIEW, comment=comment)
        title = f"{doc.id} {doc.title} v{label}"
        meaning = f"approve {doc.id} v{label} for use"
    approvers = [p.id for p in config.approvers_of(doc)]
    row, _ = open_request(
        uow,
        config,
        key=key,
        subject=f"document-version:{doc.id}@{version.version}",
        title=title,
        content_sha256=version.content_sha256,
        approvers=approvers,
        meaning=meaning,
        author=None if still_valid else submitted_by,
        flow_run_id=flow_run_id,
        process=_control_process(config),
        comment=comment,
        data={
            "document_id": doc.id,
            "version": version.version,
            "still_valid": still_valid,
            "major": major,
            "submitted_by": submitted_by,
            "comment": comment,
            "path": doc.path,
            "git_commit": commit,
        },
    )
    uow.commit()
    return request_summary(uow, row.id)


def check_submission(
    uow: UnitOfWork, config: QmsConfig, root: Path, document_id: str, still_valid: bool
) -> tuple[ControlledDocument, str, DocumentVersionRow | None]:
    """Refuse a submission that cannot be reviewed; else (document, SHA-256 of its file, effective version).

    Run by ``qms document submit`` before it starts a review run, so the person submitting hears at
    once, and again by the run itself when it opens the request.
    """
    try:
        doc = config.document(document_id)
    except StopIteration:
        raise DomainError(
            f"{document_id!r} is not a registered document (documents: {', '.join(d.id for d in config.documents)})"
        ) from None
    file = root / doc.path
    if not file.is_file():
        raise DomainError(f"{doc.path} does not exist in {root}")
    sha = sha256_file(file)
    effective = effective_version(uow, doc.id)
    if still_valid:
        if effective is None:
            raise DomainError(
                f"{doc.id} has no effective version: submit it for approval first (without --still-valid)"
            )
        if effective.content_sha256 != sha:
            raise DomainError(
                f"{doc.path} changed since version {effective.version} became effective: "
                "submit the change as a new version instead of confirming it as still valid"
            )
        return doc, sha, effective
    if effective is not None and effective.content_sha256 == sha:
        raise DomainError(
            f"{doc.path} is unchanged since version {effective.version}: nothing to approve "
            "(for a periodic review use --still-valid)"
        )
    in_review = uow.session.scalar(
        select(DocumentVersionRow).where(
            DocumentVersionRow.document_id == doc.id, DocumentVersionRow.status == DocStatus.IN_REVIEW.value
        )
    )
    if in_review is not None:
        raise DomainError(f"{doc.id} version {in_review.version} is already in review")
    return doc, sha, effective


def _control_process(config: QmsConfig) -> str | None:
    """The process that document reviews belong to: `document-control` when qms.yaml declares it."""
    keys = {p.key for p in config.processes}
    return "document-control" if "document-control" in keys else None


def _approved_text(root: Path, path: str, sha: str, commit: str | None) -> str:
    """The exact approved content: the file if unchanged, else the committed blob, else refuse."""
    file = root / path
    if file.is_file() and sha256_file(file) == sha:
        return file.read_text(encoding="utf-8")
    if commit:
        shown = subprocess.run(["git", "-C", str(root), "show", f"{commit}:{path}"], capture_output=True)
        if shown.returncode == 0:
            import hashlib

            if hashlib.sha256(shown.stdout).hexdigest() == sha:
                return shown.stdout.decode("utf-8")
    raise DomainError(f"{path} no longer holds the approved content (SHA-256 {sha[:16]}…) and git has no copy of it")


def conclude_review(uow: UnitOfWork, config: QmsConfig, root: Path, request_id: str) -> dict[str, Any]:
    """Apply the decision and commit it: effective + obsolete, or back to draft; queue the owner's notice.

    The controlled copy is rendered afterwards by ``render_approved_copy``: the signed decision is the
    record and is committed first; the PDF is derived from it and can be rendered again at any time
    (docs/adr/0008-decision-before-rendering.md).
    """
    row, request = load(uow, request_id)
    data = row.data
    doc = config.document(data["document_id"])
    version = uow.session.scalar(
        select(DocumentVersionRow).where(
            DocumentVersionRow.document_id == doc.id, DocumentVersionRow.version == data["version"]
        )
    )
    today = uow.now().date()
    outcome: dict[str, Any] = {"request": row.id, "status": row.status, "document": doc.id, "version": version.version}
    last = request.signatures[-1] if request.signatures else None
    if request.status is RequestStatus.APPROVED:
        if data.get("still_valid"):
            new_review = add_months(today, doc.review_interval_months)
            if data.get("confirmed") is None:
                before = row_values(version, exclude=("id",))
                version.next_review_date = new_review
                uow.record(
                    "document-version.review-confirmed",
                    f"document-version:{doc.id}@{version.version}",
                    before,
                    row_values(version, exclude=("id",)),
                )
                before = row_values(row)
                row.data = {**data, "confirmed": today.isoformat()}
                uow.record("approval.review-confirmed", f"approval:{row.id}", before, row_values(row))
        elif version.status == DocStatus.IN_REVIEW.value:
            for old in uow.session.scalars(
                select(DocumentVersionRow).where(
                    DocumentVersionRow.document_id == doc.id, DocumentVersionRow.status == DocStatus.EFFECTIVE.value
                )
            ):
                transition_version(uow, old, DocStatus.OBSOLETE, comment=f"superseded by v{version.version}")
            transition_version(uow, version, DocStatus.EFFECTIVE, on=today, interval_months=doc.review_interval_months)
        for due in uow.session.scalars(
            select(RecordRow).where(
                RecordRow.kind == REVIEW_DUE,
                RecordRow.status == "open",
                RecordRow.key.startswith(f"review-due:{doc.id}:", autoescape=True),
            )
        ):
            update_record(uow, due, "closed", status="closed", data={**due.data, "closed_by": row.id})
        text = f"{doc.id} v{version.version} is effective ({row.id} approved by {last.printed_name if last else '-'})."
    else:
        if version.status == DocStatus.IN_REVIEW.value:
            transition_version(uow, version, DocStatus.DRAFT, comment=last.comment if last else None)
        text = (
            f"{doc.id} v{version.version}: {row.status.replace('_', ' ')} by {last.printed_name if last else '-'}"
            f"{': ' + last.comment if last and last.comment else ''}"
        )
    notify(
        uow,
        config,
        doc.owner,
        f"slack:{row.id}:outcome:{doc.owner}",
        f"approval:{row.id}:{doc.owner}",
        "notice",
        text=text,
        link=f"{config.web.base_url.rstrip('/')}/approvals/{row.id}",
    )
    outcome["effective_version"] = version.version if version.status == DocStatus.EFFECTIVE.value else None
    outcome["next_review_date"] = version.next_review_date.isoformat() if version.next_review_date else None
    uow.commit()
    return outcome


def render_approved_copy(uow: UnitOfWork, config: QmsConfig, root: Path, out_dir: Path, request_id: str) -> dict:
    """Render the controlled copy (HTML + PDF) of the version an approved review concluded; {} otherwise.

    Idempotent: the same files are written again from the approved content and the stored signatures.
    """
    row, request = load(uow, request_id)
    if request.status is not RequestStatus.APPROVED:
        return {}
    version = uow.session.scalar(
        select(DocumentVersionRow).where(
            DocumentVersionRow.document_id == row.data["document_id"],
            DocumentVersionRow.version == row.data["version"],
        )
    )
    rendered = _render(uow, config, root, out_dir, row, version)
    uow.commit()
    return rendered


def render_document_copy(
    uow: UnitOfWork, config: QmsConfig, root: Path, out_dir: Path, document_id: str, version: str | None = None
) -> dict[str, str]:
    """Render again the controlled copy of a document version (the effective one by default).

    For a copy that is missing (a rendering that failed after the decision was committed) or out of
    date with the document template. Only versions with an approved review have a controlled copy.
    """
    if document_id not in {d.id for d in config.documents}:
        raise DomainError(f"no controlled document {document_id!r} in qms.yaml (see 'qms document list')")
    doc = config.document(document_id)
    if version is None:
        row = effective_version(uow, doc.id)
        if row is None:
            raise DomainError(f"{doc.id} has no effective version; name one with --version")
        version = row.version
    request = uow.session.scalar(
        select(ApprovalRequestRow)
        .where(
            ApprovalRequestRow.subject == f"document-version:{doc.id}@{version}",
            ApprovalRequestRow.status == RequestStatus.APPROVED.value,
        )
        .order_by(ApprovalRequestRow.created_at.desc())
        .limit(1)
    )
    if request is None:
        raise DomainError(f"{doc.id} v{version} has no approved review, so it has no controlled copy")
    return render_approved_copy(uow, config, root, out_dir, request.id)


def _render(
    uow: UnitOfWork, config: QmsConfig, root: Path, out_dir: Path, row: ApprovalRequestRow, version: DocumentVersionRow
) -> dict[str, str]:
    from .render import render_controlled

    doc = config.document(version.document_id)
    people = {p.id: p.name for p in config.people}
    signatures = []
    for request in uow.session.scalars(
        select(ApprovalRequestRow)
        .where(
            ApprovalRequestRow.subject == f"document-version:{doc.id}@{version.version}",
            ApprovalRequestRow.status == RequestStatus.APPROVED.value,
        )
        .order_by(ApprovalRequestRow.created_at)
    ):
        for s in uow.session.scalars(
            select(SignatureRow).where(SignatureRow.request_id == request.id).order_by(SignatureRow.id)
        ):
            signatures.append(
                {
                    "name": s.printed_name,
                    "meaning": s.meaning,
                    "decision": s.decision,
                    "at": f"{s.at:%Y-%m-%d %H:%M:%S} UTC",
                    "method": s.method,
                    "content_sha256": s.content_sha256,
                }
            )
    text = _approved_text(root, version.path, version.content_sha256, version.git_commit)
    rendered = render_controlled(
        text,
        {
            "id": doc.id,
            "title": doc.title,
            "version": version.version,
            "status": version.status,
            "owner_name": people.get(doc.owner, doc.owner),
            "approvers": [p.name for p in config.approvers_of(doc)],
            "effective_date": version.effective_date.isoformat() if version.effective_date else "",
            "next_review_date": version.next_review_date.isoformat() if version.next_review_date else "",
            "content_sha256": version.content_sha256,
            "git_commit": version.git_commit,
        },
        signatures,
        config.organisation.name,
        out_dir,
    )
    before = row_values(row)
    row.data = {**row.data, "pdf": str(rendered.pdf_path), "html": str(rendered.html_path)}
    if row_values(row) != before:
        uow.record("approval.copy-rendered", f"approval:{row.id}", before, row_values(row))
    return {"pdf": str(rendered.pdf_path), "html": str(rendered.html_path)}
