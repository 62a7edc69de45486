"""Document control as SOP-DOC-001 states it: an approved change supersedes the effective version (its copy
re-issued stamped OBSOLETE, the dashboard's current copy the new one), a rejection returns the version to
draft, a periodic "still valid" review sets the next review date and closes the due record, and a document
removed from qms.yaml leaves the register but keeps its versions."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import identityutil
import test_signed_content
from fastapi.testclient import TestClient
from sqlalchemy import select
from test_signed_content import PATH, git, sign, submit_and_open
from test_web import sign_in

from qmsflow.context import QmsContext
from qmsflow.domain.approvals import Decision
from qmsflow.domain.documents import add_months
from qmsflow.services import review
from qmsflow.services.documents import REVIEW_DUE, scan_due_reviews
from qmsflow.services.sync import sync_config
from qmsflow.settings import parse_config
from qmsflow.store import UnitOfWork, trail
from qmsflow.store.tables import DocumentRow, DocumentVersionRow, RecordRow
from qmsflow.web.app import create_app

DOC = "SOP-DAT-001"
gitrepo = test_signed_content.gitrepo  # the fixture: a scaffolded git compliance repo, synced


def versions(ctx: QmsContext) -> dict[str, DocumentVersionRow]:
    with ctx.db.read() as s:
        rows = s.scalars(select(DocumentVersionRow).where(DocumentVersionRow.document_id == DOC)).all()
        return {r.version: r for r in rows}


def approve_first_version(ctx: QmsContext) -> str:
    first = submit_and_open(ctx, "dev", "run-1")
    for person in ("chloe", "ana"):
        sign(ctx, first.id, person)
    return first.id


def test_an_approved_change_makes_the_effective_version_obsolete_and_re_issues_its_copy(gitrepo: QmsContext) -> None:
    approve_first_version(gitrepo)
    path = gitrepo.root / PATH
    path.write_text(path.read_text() + "\nA clarified step.\n")
    git(gitrepo.root, "commit", "-qam", "clarify")
    change = submit_and_open(gitrepo, "dev", "run-2")
    for person in ("chloe", "ana"):
        sign(gitrepo, change.id, person)
    today = datetime.now(UTC).date()
    held = versions(gitrepo)
    assert held["1.0"].status == "obsolete" and held["1.0"].approval_request == change.id
    assert held["1.1"].status == "effective" and held["1.1"].effective_date == today
    assert held["1.1"].next_review_date == add_months(today, gitrepo.config.document(DOC).review_interval_months)
    out = gitrepo.loaded.state_dir / "rendered"
    with UnitOfWork(gitrepo.db, "qmsflow") as uow:
        rendered = review.render_approved_copy(uow, gitrepo.config, gitrepo.root, out, change.id)
    [old_pdf] = rendered["obsolete"]
    old_copy = Path(old_pdf).with_suffix(".html").read_text()
    assert "OBSOLETE — superseded by version 1.1" in old_copy and change.id in old_copy
    assert "OBSOLETE" not in Path(rendered["html"]).read_text()
    identityutil.account(gitrepo.db, "chloe")
    with TestClient(create_app(gitrepo)) as client:
        sign_in(client, "chloe")
        current = client.get(f"/documents/{DOC}/current/html")
        assert current.status_code == 200 and "A clarified step." in current.text and "OBSOLETE" not in current.text
        history = client.get(f"/documents/{DOC}").text
        assert "1.0" in history and "OBSOLETE" in history  # the old version stays, in the version history


def test_a_rejection_returns_the_version_to_draft_with_its_comment(gitrepo: QmsContext) -> None:
    request = submit_and_open(gitrepo, "dev", "run-1")
    assert versions(gitrepo)["1.0"].status == "in_review"
    sign(gitrepo, request.id, "chloe", Decision.REJECT, "Section 4.2 contradicts SOP-TST-001.")
    held = versions(gitrepo)["1.0"]
    assert held.status == "draft" and held.comment == "Section 4.2 contradicts SOP-TST-001."
    assert held.effective_date is None


def test_a_periodic_review_confirmed_still_valid_sets_the_next_review_and_closes_the_due_record(
    gitrepo: QmsContext,
) -> None:
    approve_first_version(gitrepo)
    effective = versions(gitrepo)["1.0"]
    with UnitOfWork(gitrepo.db, "qmsflow") as uow:  # the scan a month before the review date
        [due] = [d for d in scan_due_reviews(uow, add_months(effective.next_review_date, -1)) if d.document_id == DOC]
    assert due.state == "due-soon" and due.due == effective.next_review_date
    with UnitOfWork(gitrepo.db, "qmsflow") as uow:  # what the daily scan's flow starts for an unchanged document
        submission = review.periodic_submission(uow, gitrepo.config, gitrepo.root, DOC, due.record_id)
        uow.commit()
        submission_id = submission.id
    with UnitOfWork(gitrepo.db, "qmsflow") as uow:
        opened = review.open_review(uow, gitrepo.config, submission_id, "run-periodic")
    assert opened["still_valid"] and opened["version"] == "1.0"
    for person in ("chloe", "ana"):
        sign(gitrepo, opened["id"], person)
    today = datetime.now(UTC).date()
    held = versions(gitrepo)["1.0"]
    assert held.status == "effective" and held.next_review_date == add_months(today, 12)
    with gitrepo.db.read() as s:
        record = s.get(RecordRow, due.record_id)
        assert record.kind == REVIEW_DUE and record.status == "closed" and record.data["closed_by"] == opened["id"]


def test_a_document_removed_from_qms_yaml_leaves_the_register_and_keeps_its_versions(gitrepo: QmsContext) -> None:
    approve_first_version(gitrepo)
    config_file = gitrepo.root / "qms.yaml"
    text = "".join(line for line in config_file.read_text().splitlines(True) if f"id: {DOC}," not in line)
    process_free = text.replace(f"procedure: {DOC}", "procedure: SOP-DOC-001")
    config = parse_config(process_free, config_file).config
    with UnitOfWork(gitrepo.db, "ana") as uow:
        sync_config(uow, config, gitrepo.root)
        uow.commit()
    with gitrepo.db.read() as s:
        assert s.get(DocumentRow, DOC).active is False
        assert "document.deactivated" in [e.action for e in trail.events_for(s, f"document:{DOC}")]
    assert versions(gitrepo)["1.0"].status == "effective"  # kept in the records store


def test_overdue_periodic_reviews_are_an_input_of_the_management_review(gitrepo: QmsContext) -> None:
    from qmsflow.services.documents import review_overdue_documents
    from qmsflow.services.review_inputs import Window

    approve_first_version(gitrepo)
    now = datetime.now(UTC)

    def overdue(as_of: datetime) -> list[str]:
        window = Window(period=None, start=now, end=now, since=now, as_of=as_of, timezone="UTC")
        with gitrepo.db.read() as s:
            [figure] = review_overdue_documents(s, gitrepo.config, window)
        assert figure.value == len(figure.records)
        return figure.records

    assert f"document:{DOC}" not in overdue(now)  # approved today: next review in 12 months
    later = datetime.combine(add_months(now.date(), 13), now.timetz())
    assert f"document:{DOC}" in overdue(later) and len(overdue(later)) == len(gitrepo.config.documents)
