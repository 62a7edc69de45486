"""Every flow run in-process against Prefect's test harness (a temporary Prefect server), on a scaffolded
repo and its records store (SQLite, and PostgreSQL where the flow writes records), with the fake Slack and
Jira over real HTTP. Each test checks what the run left in the store: records, trail events, outbox rows.

The document review is run as its deployment would run it: the run suspends at the approval, the
deciding signature resumes it through the Prefect API (the same call every signing channel makes), and
the resumed run is executed again in-process from the top, as the runner would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import identityutil
import pytest
from fakes.jira import FakeJira
from fakes.slack import FakeSlack
from sqlalchemy import func, select

from qmsflow.context import QmsContext, open_context
from qmsflow.services import approvals, capa, contents, records, review
from qmsflow.services.common import row_values
from qmsflow.services.sync import sync_config
from qmsflow.store import UnitOfWork, trail
from qmsflow.store.tables import (
    ApprovalRequestRow,
    DocumentVersionRow,
    OutboxRow,
    ProcessRunRow,
    RecordRow,
)

USERS = [
    {"id": "U0ANA0001", "email": "ana@example.com", "name": "ana"},
    {"id": "U0BEN0001", "email": "ben@example.com", "name": "ben"},
    {"id": "U0CHLOE01", "email": "chloe@example.com", "name": "chloe"},
    {"id": "U0DEV0001", "email": "dev@example.com", "name": "dev"},
]


@pytest.fixture(params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, repo: Path, prefect_server: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[QmsContext]:
    """The repo as the worker sees it (QMS_CONFIG), synced, with the fake Slack switched on."""
    for var in ("QMS_DATABASE_URL", "JIRA_API_TOKEN", "JIRA_EMAIL", "SLACK_BOT_TOKEN", "QMS_WEB_URL"):
        monkeypatch.delenv(var, raising=False)
    if request.param == "postgresql":
        monkeypatch.setenv("QMS_DATABASE_URL", request.getfixturevalue("pg_schema_url"))
    monkeypatch.setenv("QMS_CONFIG", str(repo / "qms.yaml"))
    monkeypatch.setenv("PREFECT_API_URL", prefect_server)  # what qmsflow's own Prefect calls read
    with FakeSlack(users=USERS) as slack:
        monkeypatch.setenv("SLACK_BOT_TOKEN", slack.token)
        monkeypatch.setenv("QMS_SLACK_BASE_URL", slack.base_url)
        ctx = open_context(repo / "qms.yaml", migrate=True)
        with UnitOfWork(ctx.db, "qmsflow") as uow:
            sync_config(uow, ctx.config, ctx.root)
            uow.commit()
        ctx.slack = slack  # type: ignore[attr-defined]
        yield ctx
        ctx.close()


def outbox(ctx: QmsContext, stream_prefix: str = "") -> list[OutboxRow]:
    with ctx.db.read() as s:
        return [r for r in s.scalars(select(OutboxRow).order_by(OutboxRow.id)) if r.stream.startswith(stream_prefix)]


def actions(ctx: QmsContext, ref: str) -> list[str]:
    with ctx.db.read() as s:
        return [e.action for e in trail.events_for(s, ref)]


def slack_texts(ctx: QmsContext) -> list[str]:
    return [c.params.get("text", "") for c in ctx.slack.calls_to("chat.postMessage")]  # type: ignore[attr-defined]


# ------------------------------------------------------------------ CAPA


def test_capa_escalation_climbs_the_ladder_and_tells_slack(world: QmsContext) -> None:
    from flows.capa import capa_escalation

    with UnitOfWork(world.db, "dev") as uow:
        row = capa.open_capa(uow, world.config, title="Label drift", source="audit", owner="dev")
        uow.commit()
        capa_id = row.id
    with UnitOfWork(world.db, "qmsflow") as uow:  # the stage fell due ten days ago
        row = uow.session.get(RecordRow, capa_id)
        records.update_record(uow, row, "due-moved", due_date=datetime.now(UTC).date() - timedelta(days=10))
        uow.commit()

    result = capa_escalation()

    assert result["escalations"] == 2 and result["delivery"]["sent"] == 2
    escalated = [a for a in actions(world, f"record:{capa_id}") if a == "capa.escalated"]
    assert len(escalated) == 2
    with world.db.read() as s:
        assert len(s.get(RecordRow, capa_id).data["escalations"]) == 2
    sent = outbox(world, f"capa:{capa_id}")
    assert sorted(r.stream for r in sent) == [f"capa:{capa_id}:chloe", f"capa:{capa_id}:dev"]
    assert all(r.status == "sent" for r in sent)
    assert sum(f"{capa_id} (Label drift) is overdue" in t for t in slack_texts(world)) == 2
    assert capa_escalation()["escalations"] == 0  # each rung once


def test_jira_sync_creates_the_issue_and_reconciles_a_move_in_jira(
    repo: Path, prefect_server: str, pg_schema_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.capa import jira_sync

    for var in ("SLACK_BOT_TOKEN", "QMS_WEB_URL"):
        monkeypatch.delenv(var, raising=False)
    with FakeJira() as fake:
        text = (repo / "qms.yaml").read_text()
        block = f"integrations:\n  jira:\n    url: '{fake.url}'\n    project: QMS\n"
        (repo / "qms.yaml").write_text(text.replace("retention:", block + "retention:", 1))
        monkeypatch.setenv("QMS_DATABASE_URL", pg_schema_url)
        monkeypatch.setenv("QMS_CONFIG", str(repo / "qms.yaml"))
        monkeypatch.setenv("JIRA_EMAIL", fake.email)
        monkeypatch.setenv("JIRA_API_TOKEN", "jira-token")
        ctx = open_context(repo / "qms.yaml", migrate=True)
        try:
            with UnitOfWork(ctx.db, "qmsflow") as uow:
                sync_config(uow, ctx.config, ctx.root)
                uow.commit()
            with UnitOfWork(ctx.db, "dev") as uow:
                capa_id = capa.open_capa(uow, ctx.config, title="Drift", source="release", owner="dev").id
                uow.commit()
            assert [r.status for r in outbox(ctx)] == ["pending"]

            first = jira_sync()

            assert first["delivery"]["sent"] == 1
            assert [r.status for r in outbox(ctx)] == ["sent"]
            [issue] = [i for i in fake.issues.values() if f"qms-{capa_id}" in i["fields"]["labels"]]
            assert issue["fields"]["summary"].startswith(capa_id)
            # a move in Jira (containment: In Progress) is reconciled into the record by the next run
            with UnitOfWork(ctx.db, "dev") as uow:
                capa.advance(uow, ctx.config, capa_id, "containment", {"correction": "line stopped"})
                uow.commit()
            jira_sync()
            assert fake.issues[issue["key"]]["fields"]["status"] == "In Progress"
            assert "capa.advanced" in actions(ctx, f"record:{capa_id}")
        finally:
            ctx.close()


# ------------------------------------------------------------------ approvals and the outbox


def _request(ctx: QmsContext, approvers: list[str], author: str = "dev") -> str:
    with UnitOfWork(ctx.db, author) as uow:
        row, _ = approvals.open_request(
            uow,
            ctx.config,
            key="in-process",
            subject="test-step:T-1@1",
            required="all",
            title="SOP-DES-001 v1.0",
            content_sha256=contents.store(uow, b"# SOP-DES-001\n", contents.MARKDOWN),
            approvers=approvers,
            meaning="approve SOP-DES-001 v1.0",
            author=author,
        )
        uow.commit()
        return row.id


def test_outbox_delivery_sends_what_is_queued(world: QmsContext) -> None:
    from flows.outbox_delivery import outbox_delivery

    request_id = _request(world, ["ana", "chloe"])
    queued = outbox(world)
    assert len(queued) == 2 and {r.status for r in queued} == {"pending"}

    result = outbox_delivery()

    assert result["sent"] == 2 and result["failed"] == 0
    assert {r.status for r in outbox(world)} == {"sent"}
    assert len(world.slack.calls_to("chat.postMessage")) == 2  # type: ignore[attr-defined]
    assert outbox_delivery()["sent"] == 0
    assert actions(world, f"approval:{request_id}")[0] == "approval.requested"


def test_approval_follow_ups_remind_and_escalate_once(world: QmsContext) -> None:
    from flows.approval_followups import approval_follow_ups

    request_id = _request(world, ["chloe"])
    with UnitOfWork(world.db, "qmsflow") as uow:  # opened eight days ago
        row = uow.session.get(ApprovalRequestRow, request_id)
        before = row_values(row)
        row.created_at = datetime.now(UTC) - timedelta(days=8)
        uow.record("approval.backdated-for-test", f"approval:{request_id}", before, row_values(row))
        uow.commit()

    result = approval_follow_ups()

    assert result["follow_ups"] == 2 and result["resumed"] == [] and result["started"] == []
    assert actions(world, f"approval:{request_id}").count("approval.reminded") == 1
    assert actions(world, f"approval:{request_id}").count("approval.escalated") == 1
    with world.db.read() as s:
        assert len(s.get(ApprovalRequestRow, request_id).data["follow_ups"]) == 2
    texts = slack_texts(world)
    assert any(t.startswith(f"Reminder: {request_id}") for t in texts)
    assert any(t.startswith(f"Escalation: {request_id}") for t in texts)
    assert approval_follow_ups()["follow_ups"] == 0


# ------------------------------------------------------------------ document control


def test_document_review_due_scan_records_due_documents_and_its_run(world: QmsContext) -> None:
    from flows.document_review_scan import document_review_due_scan

    result = document_review_due_scan()

    # a scaffolded QMS has registered documents never approved: due for review at once
    assert result["due"] and result["new_records"] == len(result["due"])
    with world.db.read() as s:
        due = s.scalars(select(RecordRow).where(RecordRow.kind == "document-review-due")).all()
        runs = s.scalars(select(ProcessRunRow).where(ProcessRunRow.process_key == "document-control")).all()
    assert sorted(r.id for r in due) == sorted(d["record"] for d in result["due"])
    assert [r.state for r in runs] == ["COMPLETED"] and runs[0].summary["new_records"] == len(due)
    assert "process.run-completed" in actions(world, "process:document-control")
    again = document_review_due_scan()
    assert again["new_records"] == 0  # once per document and due date


def test_trail_anchor_appends_the_head(world: QmsContext) -> None:
    from flows.trail_anchor import trail_anchor

    anchors = world.root / world.config.retention.anchors_file
    lines = anchors.read_text().splitlines() if anchors.exists() else []
    with world.db.read() as s:
        head = trail.head(s)

    done = trail_anchor()

    assert done["seq"] >= head[0] and not done["git_repo"]
    written = anchors.read_text().splitlines()
    assert len(written) == len(lines) + 1 and json.loads(written[-1])["seq"] == done["seq"]


def _deployment_run(flow, parameters: dict) -> str:  # noqa: ANN001
    """A flow run of ``flow`` created from a deployment (as the runner's runs are: a run can only be
    suspended when it belongs to one), to be executed in this process."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name(flow.name)
        deployment_id = client.create_deployment(flow_id=flow_id, name="in-process-test")
        return str(client.create_flow_run_from_deployment(deployment_id, parameters=parameters).id)


def _execute(flow, run_id: str, parameters: dict):  # noqa: ANN001, ANN202
    from prefect.client.orchestration import get_client
    from prefect.exceptions import Pause
    from prefect.flow_engine import run_flow

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(run_id)
    try:
        return run_flow(flow, flow_run=flow_run, parameters=parameters, return_type="state")
    except Pause:  # suspended: the process would exit here, and the runner start it again once resumed
        return None


def _state(run_id: str) -> str:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id).state.type.value


def test_document_review_suspends_then_a_signature_resumes_it_to_the_controlled_copy(world: QmsContext) -> None:
    from flows.document_review import document_review

    doc = "SOP-RSK-001"  # owner ana, approver ben
    with UnitOfWork(world.db, "ana") as uow:
        submission = review.submit_document(uow, world.config, world.root, document_id=doc, submitted_by="ana")
        uow.commit()
        submission_id = submission.id
    parameters = {"submission_id": submission_id}
    run_id = _deployment_run(document_review, parameters)

    first = _execute(document_review, run_id, parameters)  # 1. open the request, ask; 2. wait: suspended

    assert first is None and _state(run_id) == "PAUSED"
    with world.db.read() as s:
        request = s.scalar(select(ApprovalRequestRow).where(ApprovalRequestRow.flow_run_id == run_id))
        assert request.status == "pending" and request.approvers == ["ben"]
        version = s.scalar(
            select(DocumentVersionRow)
            .where(DocumentVersionRow.document_id == doc)
            .order_by(DocumentVersionRow.id.desc())
        )
        assert version.status == "in_review"
    asked = outbox(world, f"approval:{request.id}")
    assert [(r.status, r.stream) for r in asked] == [("sent", f"approval:{request.id}:ben")]  # the approver was asked

    with UnitOfWork(world.db, "ben") as uow:  # ben signs: the decision takes effect in this transaction
        result = identityutil.sign(uow, world.config, request.id, "ben")
    with world.db.read() as s:
        assert s.get(DocumentVersionRow, version.id).status == "effective"
    approvals.after_decision(world, result)  # resumes the run through the Prefect API, as every channel does
    assert _state(run_id) != "PAUSED"

    final = _execute(document_review, run_id, parameters)  # the runner's restart: from the top

    assert final.is_completed() and _state(run_id) == "COMPLETED"
    outcome = final.result()
    assert outcome["status"] == "approved"
    rendered = world.root / ".qms" / "rendered"
    assert any(rendered.rglob(f"{doc}*.pdf")) and any(rendered.rglob(f"{doc}*.html"))
    ref_actions = actions(world, f"approval:{request.id}")
    assert ref_actions.count("approval.requested") == 1  # the re-run opened nothing twice
    with world.db.read() as s:
        runs = s.scalar(
            select(func.count()).select_from(ApprovalRequestRow).where(ApprovalRequestRow.flow_run_id == run_id)
        )
    assert runs == 1


# ------------------------------------------------------------------ internal audit


def test_internal_audit_waits_for_the_items_then_for_the_signed_report(world: QmsContext) -> None:
    from identityutil import sign

    from flows.internal_audit import audit_scan, internal_audit
    from qmsflow.services import audit

    today = datetime.now(UTC).date()
    with UnitOfWork(world.db, "ana") as uow:
        audit_id = audit.plan(uow, world.config, "data-management", "ben", today, "ana").id
    notified = outbox(world, f"audit:{audit_id}")
    assert sorted(r.stream for r in notified) == [f"audit:{audit_id}:ben", f"audit:{audit_id}:dev"]
    parameters = {"audit_id": audit_id}
    run_id = _deployment_run(internal_audit, parameters)

    assert _execute(internal_audit, run_id, parameters) is None and _state(run_id) == "PAUSED"  # 1-2: items
    with world.db.read() as s:
        row = s.get(RecordRow, audit_id)
        assert row.status == "in_progress" and row.data["flow_run_id"] == run_id and len(row.data["items"]) == 2
    with UnitOfWork(world.db, "qmsflow") as uow:
        assert audit.due_to_start(uow, today) == []  # the scan starts no second run for it
    with UnitOfWork(world.db, "ben") as uow:
        audit.record(uow, world.config, audit_id, 1, "conform", ["document:SOP-DAT-001"], "", "ben")
        audit.record(uow, world.config, audit_id, 2, "observation", ["document:SOP-DAT-001"], "terse notes", "ben")
        request_id = audit.conclude(uow, world.config, audit_id, "Implemented and effective.", "ben")["awaiting"]
    assert audit.resume_run(world, audit_id)  # what qms audit conclude does
    assert _execute(internal_audit, run_id, parameters) is None and _state(run_id) == "PAUSED"  # 3: signatures
    with world.db.read() as s:
        assert s.get(ApprovalRequestRow, request_id).flow_run_id == run_id
    for person in ("ben", "ana"):
        with UnitOfWork(world.db, person) as uow:
            result = sign(uow, world.config, request_id, person)
        approvals.after_decision(world, result)
    final = _execute(internal_audit, run_id, parameters)  # 4: the signed report

    assert final.is_completed() and _state(run_id) == "COMPLETED"
    outcome = final.result()
    assert outcome["stage"] == "closed" and Path(outcome["report"]["html"]).exists()
    assert actions(world, f"audit:{audit_id}").count("audit.seed-recorded") == 1  # the re-runs drew nothing again
    assert audit_scan()["started"] == []
