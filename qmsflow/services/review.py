"""Document review (SOP-DOC-001): submit, request signed approval, apply the decision, render copies.

1. ``submit_document`` runs in the authenticated call of the person who submits (CLI, API): it keeps
   the exact text under review in the content store, names the authors of the change (the submitter
   and the git authors of the commits since the last approved version), and writes a submission.
2. The review flow receives only the submission's id. ``open_review`` checks the submission and opens
   the approval request from it (idempotent: keyed by the submission, bound to one flow run).
3. The decision takes effect when it is signed: ``apply_decision``, registered as the reaction to
   decided ``document-version`` requests, runs in the transaction of the deciding signature.
4. ``render_approved_copy`` renders the controlled copy from the store alone (content, signatures,
   people), and re-issues the copy of the version it superseded, stamped OBSOLETE.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from ..adapters import git
from ..domain import procedure_text
from ..domain.approvals import RequestStatus, Signature, required_signatures
from ..domain.authorship import Authorship, authorship
from ..domain.authorship import Signer as AuthorshipSigner
from ..domain.capabilities import declare
from ..domain.documents import DocStatus, add_months, next_version
from ..domain.errors import DomainError
from ..domain.organisation import QmsConfig
from ..domain.refs import Ref, document_version
from ..scaffold import SCAFFOLD_AUTHOR
from ..store.tables import (
    ApprovalRequestRow,
    DocumentRow,
    DocumentVersionRow,
    PersonRow,
    RecordRow,
    SignatureRow,
    SubmissionRow,
)
from ..store.uow import UnitOfWork
from . import contents
from .approvals import load, notify, open_request
from .common import row_values
from .documents import REVIEW_DUE, effective_version, latest_version, transition_version
from .reactions import on_decided
from .records import NotFound, next_id, update_record

KIND = "document-review"

SUBMITTED_TEXT = declare(
    "document.submitted_text_kept",
    "`qms document submit` keeps the exact text of the document file, as it is when submitted, in the "
    "records store under its SHA-256 content hash, with the submitter's summary of the change. Approvers "
    "read that stored text in the dashboard and sign it, and the controlled copy is rendered from it, "
    "whatever happens to the file afterwards.",
    proved_by=(
        "tests/integration/test_signed_content.py::test_the_signed_text_is_kept_shown_and_rendered_from_the_store",
    ),
    module=__name__,
)

VERSIONS = declare(
    "document.versions",
    "qmsflow numbers each submitted version (1.0 first, then 1.1, or 2.0 for a change submitted with "
    "`--major`) and, when its approval is decided, sets its effective date to that day and its next review "
    "date the document's review interval later. It renders the approved version as a controlled copy (HTML "
    "and PDF) whose control block shows the identifier, title, version, status, owner, approvers, effective "
    "and next review dates and content hash, followed by every approval signature.",
    proved_by=(
        "tests/unit/test_documents_domain.py::test_versions_count_up",
        "tests/integration/test_render.py::test_html_has_control_block_signatures_and_escaped_body",
        "tests/integration/test_document_control.py::"
        "test_an_approved_change_makes_the_effective_version_obsolete_and_re_issues_its_copy",
    ),
    module=__name__,
)


class SubmissionRefused(DomainError):
    """A flow run was started for a submission that does not exist or is not its own."""


def _auth_label(auth: str | None) -> str:
    """How a signature's account authenticated, in words (``services.signers``): no secret is shown."""
    if not auth:
        return "not recorded (signed before accounts were recorded)"
    kind, _, detail = auth.partition(":")
    return {
        "password": "password entered at signing",
        "token": f"personal token #{detail}",
        "slack": f"Slack user {detail}",
        "trusted": f"trusted single-user mode (OS user {detail})",
    }.get(kind, auth)


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


# ------------------------------------------------------------------ submission (authenticated caller)


def submit_document(
    uow: UnitOfWork,
    config: QmsConfig,
    root: Path,
    *,
    document_id: str,
    submitted_by: str,
    major: bool = False,
    still_valid: bool = False,
    comment: str | None = None,
    extra: dict[str, Any] | None = None,
) -> SubmissionRow:
    """Record what ``submitted_by`` (already authenticated) submits for review; refused at once when the
    document cannot be reviewed. The text is kept in the content store as it is now."""
    if uow.session.get(PersonRow, submitted_by) is None and submitted_by != "qmsflow":
        raise DomainError(f"{submitted_by!r} is not a person of this QMS (run 'qms sync' after editing qms.yaml)")
    doc, _, effective = check_submission(uow, config, root, document_id, still_valid)
    waiting = uow.session.scalar(
        select(SubmissionRow).where(
            SubmissionRow.subject == str(Ref("document", doc.id)), SubmissionRow.status == "submitted"
        )
    )
    if waiting is not None:
        raise DomainError(
            f"{doc.id} was already submitted ({waiting.id} by {waiting.submitted_by}) and its review is starting; "
            "if Prefect was unreachable, the hourly follow-up flow starts it ('qms approvals list' shows it once open)"
        )
    body = (root / doc.path).read_bytes()
    sha = contents.store(uow, body, contents.MARKDOWN)
    commit = git.commit_of(root, doc.path)
    found = _authorship(config, root, doc, effective, submitted_by, still_valid)
    if config.security.require_signed_commits and found.unsigned:
        raise DomainError(
            f"{doc.id} cannot be submitted: security.require_signed_commits is on and "
            + "; ".join(found.unsigned[:5])
            + (f" (and {len(found.unsigned) - 5} more)" if len(found.unsigned) > 5 else "")
            + ": sign the commits with a key registered for their author in qms.yaml (people[].signing_keys)"
        )
    try:
        required_signatures(doc.required_signatures, [p.id for p in config.approvers_of(doc)], found.authors)
    except DomainError as exc:
        raise DomainError(f"{doc.id} cannot be reviewed as submitted: {exc}") from None
    now = uow.now()
    row = SubmissionRow(
        id=next_id(uow, "submission", now.year),
        kind=KIND,
        subject=str(Ref("document", doc.id)),
        submitted_by=submitted_by,
        status="submitted",
        content_sha256=sha,
        data={
            "document_id": doc.id,
            "major": major,
            "still_valid": still_valid,
            "comment": comment,
            "path": doc.path,
            "git_commit": commit,
            "authors": found.authors,
            "unmapped_authors": found.unmapped,
            "unverified_authors": found.unverified,
            **(extra or {}),
        },
        flow_run_id=None,
        request_id=None,
        created_at=now,
    )
    uow.session.add(row)
    uow.record("submission.created", f"submission:{row.id}", None, row_values(row))
    uow.commit()
    return row


PERIODIC_REVIEW = declare(
    "document.periodic_review",
    "`qms document submit DOC_ID --still-valid` submits the effective version, unchanged, for a periodic "
    "review; qmsflow refuses it when the file changed since that version became effective. Its approvers "
    "sign that the version is still valid; once approved, qmsflow sets the next review date from the day of "
    "the approval and the review interval, and closes the document's open review-due records.",
    proved_by=(
        "tests/integration/test_document_control.py::"
        "test_a_periodic_review_confirmed_still_valid_sets_the_next_review_and_closes_the_due_record",
    ),
    module=__name__,
)


def periodic_submission(
    uow: UnitOfWork, config: QmsConfig, root: Path, document_id: str, due_record: str
) -> SubmissionRow:
    """The submission of the periodic ("still valid") review a due record asks for, made once, in qmsflow's
    name; refused when the document changed since its effective version (its owner submits the change)."""
    for existing in uow.session.scalars(
        select(SubmissionRow).where(SubmissionRow.subject == str(Ref("document", document_id)))
    ):
        if existing.data.get("due_record") == due_record:
            return existing
    return submit_document(
        uow,
        config,
        root,
        document_id=document_id,
        submitted_by="qmsflow",
        still_valid=True,
        comment=f"periodic review ({due_record})",
        extra={"due_record": due_record},
    )


def check_submission(
    uow: UnitOfWork, config: QmsConfig, root: Path, document_id: str, still_valid: bool
) -> tuple[Any, str, DocumentVersionRow | None]:
    """Refuse a submission that cannot be reviewed; else (document, SHA-256 of its file, effective version)."""
    try:
        doc = config.document(document_id)
    except StopIteration:
        raise DomainError(
            f"{document_id!r} is not a registered document (documents: {', '.join(d.id for d in config.documents)})"
        ) from None
    file = root / doc.path
    if not file.is_file():
        raise DomainError(f"{doc.path} does not exist in {root}")
    data = file.read_bytes()
    bad = procedure_text.problems(data.decode("utf-8", "replace"), procedure_text.values(config, doc.id), doc.path)
    if bad:
        raise DomainError("; ".join(bad))
    sha = contents.digest(data)
    return doc, sha, _check_reviewable(uow, doc.id, doc.path, sha, still_valid)


def _check_reviewable(
    uow: UnitOfWork, doc_id: str, path: str, sha: str, still_valid: bool
) -> DocumentVersionRow | None:
    effective = effective_version(uow, doc_id)
    if still_valid:
        if effective is None:
            raise DomainError(
                f"{doc_id} has no effective version: submit it for approval first (without --still-valid)"
            )
        if effective.content_sha256 != sha:
            raise DomainError(
                f"{path} changed since version {effective.version} became effective: "
                "submit the change as a new version instead of confirming it as still valid"
            )
    elif effective is not None and effective.content_sha256 == sha:
        raise DomainError(
            f"{path} is unchanged since version {effective.version}: nothing to approve "
            "(for a periodic review use --still-valid)"
        )
    in_review = uow.session.scalar(
        select(DocumentVersionRow).where(
            DocumentVersionRow.document_id == doc_id, DocumentVersionRow.status == DocStatus.IN_REVIEW.value
        )
    )
    if in_review is not None and not still_valid:
        raise DomainError(f"{doc_id} version {in_review.version} is already in review")
    return effective


def unstarted_submissions(uow: UnitOfWork, older_than_minutes: int = 2) -> list[str]:
    """Submissions whose review run has not opened them yet (e.g. Prefect was down when they were made)."""
    from datetime import timedelta

    cutoff = uow.now() - timedelta(minutes=older_than_minutes)
    return list(
        uow.session.scalars(
            select(SubmissionRow.id)
            .where(SubmissionRow.status == "submitted", SubmissionRow.kind == KIND, SubmissionRow.created_at < cutoff)
            .order_by(SubmissionRow.created_at)
        )
    )


def submission_for_run(uow: UnitOfWork, submission_id: str, flow_run_id: str) -> SubmissionRow:
    """The submission a review run was started for, bound to that run; refused (and recorded) otherwise."""
    row = uow.session.get(SubmissionRow, submission_id, populate_existing=True)
    problem = None
    if row is None or row.kind != KIND:
        problem = f"there is no document review submission {submission_id!r}"
    elif row.flow_run_id not in (None, flow_run_id):
        problem = f"submission {submission_id} belongs to flow run {row.flow_run_id}, not to {flow_run_id}"
    if problem:
        uow.rollback()
        uow.record(
            "flow.refused",
            f"submission:{submission_id[:60]}",
            None,
            {"flow": "document-review", "flow_run_id": flow_run_id, "reason": problem},
            actor="qmsflow",
        )
        uow.commit()
        raise SubmissionRefused(f"{problem}: nothing was changed (start reviews with 'qms document submit')")
    return row


# ------------------------------------------------------------------ the review run


def open_review(uow: UnitOfWork, config: QmsConfig, submission_id: str, flow_run_id: str) -> dict[str, Any]:
    """Open the approval request of a submission, once; returns the request summary (existing one on re-run)."""
    sub = submission_for_run(uow, submission_id, flow_run_id)
    if sub.request_id is not None:
        return request_summary(uow, sub.request_id)
    uow.actor = sub.submitted_by  # the request is opened in the name of the person who submitted
    data = sub.data
    doc = config.document(data["document_id"])
    still_valid = bool(data.get("still_valid"))
    effective = _check_reviewable(uow, doc.id, data["path"], sub.content_sha256, still_valid)
    if still_valid:
        version = effective
        title = f"Periodic review of {doc.id} {doc.title} v{version.version}: still valid"
        what = f"the periodic review of {doc.id} v{version.version}"
        meaning = f"reviewed {doc.id} v{version.version} and confirms it is still valid"
    else:
        label = next_version(effective.version if effective else None, bool(data.get("major")))
        version = _snapshot(uow, doc.id, label, data["path"], sub.content_sha256, data.get("git_commit"))
        transition_version(uow, version, DocStatus.IN_REVIEW, comment=data.get("comment"))
        title = f"{doc.id} {doc.title} v{label}"
        what = f"{doc.id} v{label}"
        meaning = f"approves {doc.id} v{label} for use"
    row, _ = open_request(
        uow,
        config,
        key=f"{KIND}:{sub.id}",
        subject=str(document_version(doc.id, version.version)),
        title=title,
        what=what,
        content_sha256=sub.content_sha256 if not still_valid else version.content_sha256,
        approvers=[p.id for p in config.approvers_of(doc)],
        required=doc.required_signatures,
        meaning=meaning,
        author=sub.submitted_by,  # the submitter is always an author (ADR 0019)
        authors=list(data.get("authors", [])),
        flow_run_id=flow_run_id,
        process=_control_process(config),
        comment=data.get("comment"),
        data={
            "document_id": doc.id,
            "version": version.version,
            "still_valid": still_valid,
            "major": bool(data.get("major")),
            "submitted_by": sub.submitted_by,
            "submission": sub.id,
            "comment": data.get("comment"),
            "path": data["path"],
            "git_commit": data.get("git_commit"),
            "unmapped_authors": list(data.get("unmapped_authors", [])),
            "unverified_authors": list(data.get("unverified_authors", [])),
        },
    )
    before = row_values(sub)
    sub.status, sub.flow_run_id, sub.request_id = "opened", flow_run_id, row.id
    uow.record("submission.opened", f"submission:{sub.id}", before, row_values(sub))
    uow.commit()
    return request_summary(uow, row.id)


def _authorship(config: QmsConfig, root: Path, doc, effective, submitted_by: str, still_valid: bool) -> Authorship:  # noqa: ANN001
    """The authors of the change under review: the submitter, then the git authors of the commits since
    the last approved version, each verified by its commit signature or named as unverified (ADR 0019)."""
    if still_valid:  # nothing changed: the confirmer is the only author
        return authorship([], submitted_by, lambda _: None)
    people = {p.id: p for p in config.people}
    signers = [f"{p.id} {key}" for p in config.people for key in p.ssh_keys]
    since = effective.created_at.isoformat() if effective is not None else None
    commits = git.commits_since(root, doc.path, effective.git_commit if effective else None, since, signers) or []

    def person_by_email(email: str) -> AuthorshipSigner | None:
        person = config.person_by_email(email)
        return AuthorshipSigner(person.id, people[person.id].gpg_fingerprints) if person else None

    return authorship(
        commits,
        submitted_by,
        person_by_email,
        ignore=lambda c: (c.author_name, c.author_email) == SCAFFOLD_AUTHOR,  # the text qmsflow scaffolded
    )


def _snapshot(uow: UnitOfWork, doc_id: str, label: str, path: str, sha: str, commit: str | None) -> DocumentVersionRow:
    """The draft version under review: the latest draft reused (renumbered), or a new one."""
    latest = latest_version(uow, doc_id)
    ref = str(document_version(doc_id, label))
    if latest is not None and latest.status == DocStatus.DRAFT.value:
        version = latest
        before = row_values(version, exclude=("id",))
        version.version, version.content_sha256, version.git_commit, version.path = label, sha, commit, path
        if before != row_values(version, exclude=("id",)):
            uow.record("document-version.snapshot", ref, before, row_values(version, exclude=("id",)))
        return version
    version = DocumentVersionRow(
        document_id=doc_id,
        version=label,
        status=DocStatus.DRAFT.value,
        path=path,
        content_sha256=sha,
        git_commit=commit,
        created_at=uow.now(),
    )
    uow.session.add(version)
    uow.session.flush()
    uow.record("document-version.snapshot", ref, None, row_values(version, exclude=("id",)))
    return version


def _control_process(config: QmsConfig) -> str | None:
    """The process that document reviews belong to: `document-control` when qms.yaml declares it."""
    keys = {p.key for p in config.processes}
    return "document-control" if "document-control" in keys else None


DECISION = declare(
    "document.decision_applied",
    "When the last approval a version needs is signed, qmsflow makes that version effective and the version "
    "it supersedes obsolete, in the same transaction as the signature; a rejection or a change request "
    "returns the version to draft with the approver's comment.",
    proved_by=(
        "tests/integration/test_document_control.py::"
        "test_an_approved_change_makes_the_effective_version_obsolete_and_re_issues_its_copy",
        "tests/integration/test_document_control.py::test_a_rejection_returns_the_version_to_draft_with_its_comment",
    ),
    module=__name__,
)


@on_decided("document-version")
def apply_decision(uow: UnitOfWork, config: QmsConfig, row: ApprovalRequestRow, signature: Signature) -> None:
    """The reaction to a decided review, in the transaction of the deciding signature: approved, the
    version is effective and the one it supersedes obsolete (both naming this request), or the periodic
    review is confirmed; otherwise the version goes back to draft with the comment. The owner is told."""
    outcome = _apply(uow, row)
    doc = uow.session.get(DocumentRow, row.data["document_id"])
    owner = doc.owner if doc else None
    if owner:
        notify(
            uow,
            config,
            owner,
            f"slack:{row.id}:outcome:{owner}",
            f"approval:{row.id}:{owner}",
            "notice",
            text=outcome["text"],
            link=f"{config.web.base_url.rstrip('/')}/approvals/{row.id}",
        )


def _apply(uow: UnitOfWork, row: ApprovalRequestRow) -> dict[str, Any]:
    """Apply a decided review to the document's versions; does nothing twice."""
    data = row.data
    doc_id = data["document_id"]
    doc = uow.session.get(DocumentRow, doc_id)
    interval = doc.review_interval_months if doc else 12
    version = _version(uow, doc_id, data["version"])
    decided_on = (row.decided_at or uow.now()).date()
    last = uow.session.scalar(
        select(SignatureRow).where(SignatureRow.request_id == row.id).order_by(SignatureRow.id.desc()).limit(1)
    )
    by = last.printed_name if last else "-"
    if row.status == RequestStatus.APPROVED.value:
        if data.get("still_valid"):
            if version.approval_request != row.id:  # confirmed once, by this request
                new_review = add_months(decided_on, interval)
                before = row_values(version, exclude=("id",))
                version.next_review_date = new_review
                version.approval_request = row.id
                uow.record(
                    "document-version.review-confirmed",
                    str(document_version(doc_id, version.version)),
                    before,
                    row_values(version, exclude=("id",)),
                )
        elif version.status == DocStatus.IN_REVIEW.value:
            for old in uow.session.scalars(
                select(DocumentVersionRow).where(
                    DocumentVersionRow.document_id == doc_id, DocumentVersionRow.status == DocStatus.EFFECTIVE.value
                )
            ):
                old.approval_request = row.id
                transition_version(uow, old, DocStatus.OBSOLETE, comment=f"superseded by v{version.version} ({row.id})")
            version.approval_request = row.id
            transition_version(uow, version, DocStatus.EFFECTIVE, on=decided_on, interval_months=interval)
        for due in uow.session.scalars(
            select(RecordRow).where(
                RecordRow.kind == REVIEW_DUE,
                RecordRow.status == "open",
                RecordRow.key.startswith(f"review-due:{doc_id}:", autoescape=True),
            )
        ):
            update_record(uow, due, "closed", status="closed", data={**due.data, "closed_by": row.id})
        text = f"{doc_id} v{version.version} is effective ({row.id} approved by {by})."
        if data.get("still_valid"):
            text = f"{doc_id} v{version.version} was confirmed still valid ({row.id}, {by})."
    elif row.status != RequestStatus.PENDING.value:
        if version.status == DocStatus.IN_REVIEW.value:
            version.approval_request = row.id
            transition_version(uow, version, DocStatus.DRAFT, comment=last.comment if last else None)
        text = (
            f"{doc_id} v{version.version}: {row.status.replace('_', ' ')} by {by}"
            f"{': ' + last.comment if last and last.comment else ''}"
        )
    else:
        raise DomainError(f"{row.id} is not decided yet")
    return {
        "request": row.id,
        "status": row.status,
        "document": doc_id,
        "version": version.version,
        "effective_version": version.version if version.status == DocStatus.EFFECTIVE.value else None,
        "next_review_date": version.next_review_date.isoformat() if version.next_review_date else None,
        "text": text,
    }


def _version(uow: UnitOfWork, doc_id: str, version: str) -> DocumentVersionRow:
    row = uow.session.scalar(
        select(DocumentVersionRow).where(
            DocumentVersionRow.document_id == doc_id, DocumentVersionRow.version == version
        )
    )
    if row is None:
        raise NotFound(f"no version {version} of document {doc_id}")
    return row


def conclude_review(uow: UnitOfWork, request_id: str) -> dict[str, Any]:
    """After the wait: the decision was applied when it was signed; make sure it is (a request decided by an
    earlier qmsflow is applied now) and return the outcome."""
    row, _ = load(uow, request_id)
    outcome = _apply(uow, row)
    uow.commit()
    return outcome


# ------------------------------------------------------------------ controlled copies


OBSOLETE_COPY = declare(
    "document.obsolete_copy",
    "qmsflow re-issues the controlled copy of a superseded version stamped OBSOLETE, naming the version that "
    "superseded it, the date and the approval. The dashboard's link to a document's current copy always "
    "serves the effective version; superseded versions are listed, marked OBSOLETE, in the document's "
    "version history.",
    proved_by=(
        "tests/integration/test_document_control.py::"
        "test_an_approved_change_makes_the_effective_version_obsolete_and_re_issues_its_copy",
    ),
    module=__name__,
)


def render_approved_copy(
    uow: UnitOfWork, config: QmsConfig, root: Path, out_dir: Path, request_id: str
) -> dict[str, Any]:
    """Render the controlled copy (HTML + PDF) of the version an approved review made effective, and re-issue
    the copy of every version it superseded, stamped OBSOLETE; {} when the review was not approved.

    Idempotent: the same files are written again from the store (content, signatures, people). Everything
    is read first; the unit of work then holds no lock while the PDFs render.
    """
    row, request = load(uow, request_id)
    if request.status is not RequestStatus.APPROVED:
        return {}
    version = _version(uow, row.data["document_id"], row.data["version"])
    current = _copy_inputs(uow, root, version, config)
    obsolete = [
        _copy_inputs(uow, root, old, config)
        for old in uow.session.scalars(
            select(DocumentVersionRow).where(
                DocumentVersionRow.approval_request == row.id, DocumentVersionRow.status == DocStatus.OBSOLETE.value
            )
        )
    ]
    uow.release()
    rendered = _write_copy(current, out_dir, config)
    for inputs in obsolete:
        rendered.setdefault("obsolete", []).append(_write_copy(inputs, out_dir, config)["pdf"])
    return rendered


def render_document_copy(
    uow: UnitOfWork, config: QmsConfig, root: Path, out_dir: Path, document_id: str, version: str | None = None
) -> dict[str, Any]:
    """Render again the controlled copy of a document version (the effective one by default).

    For a copy that is missing (a rendering that failed after the decision was committed) or out of
    date with the document template or qms.yaml. Only versions that were approved have a controlled copy.
    """
    if uow.session.get(DocumentRow, document_id) is None:
        raise DomainError(f"no controlled document {document_id!r} (see 'qms document list')")
    if version is None:
        row = effective_version(uow, document_id)
        if row is None:
            raise DomainError(f"{document_id} has no effective version; name one with --version")
    else:
        row = _version(uow, document_id, version)
    if row.status not in (DocStatus.EFFECTIVE.value, DocStatus.OBSOLETE.value) or row.effective_date is None:
        raise DomainError(f"{document_id} v{row.version} was never approved, so it has no controlled copy")
    inputs = _copy_inputs(uow, root, row, config)
    uow.release()
    return _write_copy(inputs, out_dir, config)


def filled_text(config: QmsConfig, document_id: str, text: str, source: str) -> tuple[str, str | None]:
    """The text as a copy shows it: its ``{{qms:…}}`` placeholders filled from ``config``, and the digest
    of that configuration (None when the text has no placeholders, i.e. nothing came from qms.yaml).

    A document no longer in qms.yaml keeps its text as approved (nothing to fill it from)."""
    if not procedure_text.has_placeholders(text) or document_id not in {d.id for d in config.documents}:
        return text, None
    try:
        filled = procedure_text.fill(text, procedure_text.values(config, document_id), source)
    except procedure_text.PlaceholderError as exc:
        raise DomainError(str(exc)) from None
    return filled, procedure_text.config_digest(config)


def _copy_inputs(
    uow: UnitOfWork, root: Path, version: DocumentVersionRow, config: QmsConfig
) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    """What a controlled copy shows, as plain values: (filled text, control block, signatures)."""
    session = uow.session
    doc = session.get(DocumentRow, version.document_id)
    names = dict(session.execute(select(PersonRow.id, PersonRow.name)).all())
    subject = str(document_version(version.document_id, version.version))
    approved = list(
        session.scalars(
            select(ApprovalRequestRow)
            .where(ApprovalRequestRow.subject == subject, ApprovalRequestRow.status == RequestStatus.APPROVED.value)
            .order_by(ApprovalRequestRow.created_at)
        )
    )
    signatures = [
        {
            "name": s.printed_name,
            "meaning": s.meaning,
            "decision": s.decision,
            "at": f"{s.at:%Y-%m-%d %H:%M:%S} UTC",
            "method": s.method,
            "account": s.account,
            "auth": _auth_label(s.auth),
            "content_sha256": s.content_sha256,
        }
        for request in approved
        for s in session.scalars(
            select(SignatureRow).where(SignatureRow.request_id == request.id).order_by(SignatureRow.id)
        )
    ]
    approvers = approved[0].approvers if approved else (doc.approvers if doc else [])
    superseded = None
    if version.status == DocStatus.OBSOLETE.value and version.approval_request:
        successor = session.scalar(
            select(DocumentVersionRow).where(
                DocumentVersionRow.document_id == version.document_id,
                DocumentVersionRow.approval_request == version.approval_request,
                DocumentVersionRow.id != version.id,
            )
        )
        superseded = {
            "by_version": successor.version if successor else None,
            "on": successor.effective_date.isoformat() if successor and successor.effective_date else None,
            "by_request": version.approval_request,
        }
    text, config_sha256 = filled_text(config, version.document_id, approved_text(uow, root, version), version.path)
    control = {
        "id": version.document_id,
        "title": doc.title if doc else version.document_id,
        "version": version.version,
        "status": version.status,
        "owner_name": names.get(doc.owner, doc.owner) if doc else "-",
        "approvers": [names.get(p, p) for p in approvers if not p.startswith("role:")],
        "effective_date": version.effective_date.isoformat() if version.effective_date else "",
        "next_review_date": version.next_review_date.isoformat() if version.next_review_date else "",
        "content_sha256": version.content_sha256,
        "git_commit": version.git_commit,
        "superseded": superseded,
        "config_sha256": config_sha256,
    }
    return text, control, signatures


def _write_copy(
    inputs: tuple[str, dict[str, Any], list[dict[str, Any]]], out_dir: Path, config: QmsConfig
) -> dict[str, Any]:
    from ..adapters.render import render_controlled

    text, control, signatures = inputs
    rendered = render_controlled(text, control, signatures, config.organisation.name, out_dir)
    return {"pdf": str(rendered.pdf_path), "html": str(rendered.html_path)}


def approved_text(uow: UnitOfWork, root: Path, version: DocumentVersionRow) -> str:
    """The exact approved text: from the content store; for versions approved before qmsflow kept content,
    the working-tree file or its committed blob when either still has the approved hash."""
    stored = contents.load(uow.session, version.content_sha256)
    if stored is not None:
        return stored.text
    file = root / version.path
    if file.is_file() and contents.digest(file.read_bytes()) == version.content_sha256:
        return file.read_text(encoding="utf-8")
    if version.git_commit:
        blob = git.show(root, version.git_commit, version.path)
        if blob is not None and contents.digest(blob) == version.content_sha256:
            return blob.decode("utf-8")
    raise DomainError(
        f"{version.path} v{version.version}: the approved content (SHA-256 {version.content_sha256[:16]}…) is "
        "neither in the records store nor in the working tree or git"
    )
