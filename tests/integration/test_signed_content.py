"""Signatures that hold up (issue 9): the content under signature kept and shown from the store, the
authors of a change from git, the meaning that follows the decision, one rule for how many sign, records
bound to their signatures, re-authentication for Slack, one refusal per repeated click."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import identityutil
import pytest
from fakes.slack import FakeSlack
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from test_web import sign_in

from qmsflow.context import QmsContext, open_context
from qmsflow.domain.approvals import AlreadyDecided, Decision, NotAuthorized
from qmsflow.domain.errors import DomainError
from qmsflow.scaffold import fill_document, render_document, scaffold
from qmsflow.services import approvals, capa, contents, review
from qmsflow.services.sync import sync_config
from qmsflow.services.verify import verify
from qmsflow.settings import parse_config
from qmsflow.store import UnitOfWork, trail
from qmsflow.store.tables import ApprovalRequestRow, DocumentVersionRow, RecordRow
from qmsflow.web.app import create_app
from qmsflow.web.slack_interactions import Interaction, SlackInteractions

PATH = "procedures/SOP-DAT-001-data-management.md"
USERS = [
    {"id": "U0ANA0001", "email": "ana@example.com", "name": "ana"},
    {"id": "U0BEN0001", "email": "ben@example.com", "name": "ben"},
    {"id": "U0CHLOE01", "email": "chloe@example.com", "name": "chloe"},
]


def git(repo: Path, *args: str, who: tuple[str, str] = ("Seed", "seed@example.com")) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", f"user.name={who[0]}", "-c", f"user.email={who[1]}", *args],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def gitrepo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[QmsContext]:
    monkeypatch.delenv("QMS_DATABASE_URL", raising=False)
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    repo = tmp_path / "repo"
    scaffold(repo, org_name="Content Test GmbH", git=True)
    ctx = open_context(repo / "qms.yaml", migrate=True)
    with UnitOfWork(ctx.db, "qmsflow") as uow:
        sync_config(uow, ctx.config, ctx.root)
        uow.commit()
    yield ctx
    ctx.close()


def submit_and_open(ctx: QmsContext, who: str, run: str, **kw) -> ApprovalRequestRow:  # noqa: ANN003
    """What `qms document submit` and the review run's first step do, without Prefect."""
    with UnitOfWork(ctx.db, who) as uow:
        sub = review.submit_document(uow, ctx.config, ctx.root, document_id="SOP-DAT-001", submitted_by=who, **kw)
        uow.commit()
        submission_id = sub.id
    with UnitOfWork(ctx.db, "qmsflow") as uow:
        summary = review.open_review(uow, ctx.config, submission_id, run)
    with ctx.db.read() as s:
        return s.get(ApprovalRequestRow, summary["id"])


def sign(ctx: QmsContext, request_id: str, person: str, decision: Decision = Decision.APPROVE, comment=None):  # noqa: ANN001, ANN201
    with UnitOfWork(ctx.db, person) as uow:
        return identityutil.sign(uow, ctx.config, request_id, person, decision, comment)


def test_git_authors_of_a_change_may_not_approve_it_and_unknown_ones_are_named(gitrepo: QmsContext) -> None:
    first = submit_and_open(gitrepo, "dev", "run-1")
    assert first.authors == ["dev"] and first.required == 2
    for person in ("chloe", "ana"):
        sign(gitrepo, first.id, person)
    path = gitrepo.root / PATH
    path.write_text(path.read_text() + "\nChloe's change.\n")
    git(gitrepo.root, "commit", "-qam", "chloe", who=("Chloe Chen", "chloe@example.com"))
    path.write_text(path.read_text() + "\nA contractor's change.\n")
    git(gitrepo.root, "commit", "-qam", "eve", who=("Eve", "eve@contractor.example"))
    change = submit_and_open(gitrepo, "dev", "run-2")
    assert change.authors == ["dev", "chloe"] and change.data["unmapped_authors"] == ["Eve <eve@contractor.example>"]
    with pytest.raises(NotAuthorized, match="chloe is an author of this change"):
        sign(gitrepo, change.id, "chloe")
    with gitrepo.db.read() as s:
        [refused] = [e for e in trail.events_for(s, f"approval:{change.id}") if e.action == "approval.refused"]
    assert refused.actor == "chloe" and json.loads(refused.after_json)["kind"] == "not-authorized"
    assert sign(gitrepo, change.id, "ana").decided  # all approvers who are not authors: ana alone


def test_git_e_mails_of_a_person_map_their_commits(gitrepo: QmsContext) -> None:
    config = gitrepo.root / "qms.yaml"
    config.write_text(
        config.read_text().replace(
            "    email: chloe@example.com\n",
            "    email: chloe@example.com\n    git_emails: [chloe@users.noreply.example]\n",
        )
    )
    git(gitrepo.root, "commit", "-qam", "git e-mail of chloe")
    ctx = open_context(config)
    path = ctx.root / PATH
    path.write_text(path.read_text() + "\nchange\n")
    git(ctx.root, "commit", "-qam", "c", who=("chloe", "Chloe@Users.Noreply.Example"))
    request = submit_and_open(ctx, "dev", "run-1")
    assert request.authors == ["dev", "chloe"] and request.data["unmapped_authors"] == []
    ctx.close()


def test_the_signed_text_is_kept_shown_and_rendered_from_the_store(gitrepo: QmsContext) -> None:
    path = gitrepo.root / PATH
    path.write_text(path.read_text() + "\nUncommitted wording under review.\n")  # not committed: no git copy
    request = submit_and_open(gitrepo, "dev", "run-1")
    path.write_text("something else entirely\n")  # edited after the submission
    with gitrepo.db.read() as s:
        stored = contents.load(s, request.content_sha256)
    assert stored is not None and "Uncommitted wording under review." in stored.text
    identityutil.account(gitrepo.db, "chloe")
    with TestClient(create_app(gitrepo)) as client:
        sign_in(client, "chloe")
        page = client.get(f"/approvals/{request.id}").text
        assert "Uncommitted wording under review." in page and "something else entirely" not in page
        assert 'name="password"' in page  # the Sign form, with the content it signs
    for person in ("chloe", "ana"):
        sign(gitrepo, request.id, person)
    path.unlink()
    with UnitOfWork(gitrepo.db, "qmsflow") as uow:
        rendered = review.render_approved_copy(uow, gitrepo.config, gitrepo.root, gitrepo.root / "out", request.id)
    assert "Uncommitted wording under review." in Path(rendered["html"]).read_text()


def test_a_request_whose_content_is_not_in_the_store_cannot_be_signed_on_the_web(gitrepo: QmsContext) -> None:
    with UnitOfWork(gitrepo.db, "chloe") as uow:
        row, _ = approvals.open_request(
            uow,
            gitrepo.config,
            key="legacy",
            subject="test-step:T-1@1",
            title="legacy request",
            content_sha256="ab" * 32,
            approvers=["ben"],
            required=1,
            meaning="approves T-1",
            author="chloe",
        )
        uow.commit()
        request_id = row.id
    identityutil.account(gitrepo.db, "ben")
    with TestClient(create_app(gitrepo)) as client:
        sign_in(client, "ben")
        page = client.get(f"/approvals/{request_id}").text
    assert "not in the records store" in page and 'name="password"' not in page


def test_the_meaning_follows_the_decision(gitrepo: QmsContext) -> None:
    request = submit_and_open(gitrepo, "dev", "run-1")
    result = sign(gitrepo, request.id, "chloe", Decision.CHANGES, "section 3 is unclear")
    assert result.signature.meaning == "requests changes to SOP-DAT-001 v1.0"
    with gitrepo.db.read() as s:
        version = s.scalars(select(DocumentVersionRow).where(DocumentVersionRow.document_id == "SOP-DAT-001")).one()
    assert version.status == "draft" and version.approval_request == request.id  # applied when signed


def test_repeated_attempts_on_a_decided_request_are_recorded_once(gitrepo: QmsContext) -> None:
    request = submit_and_open(gitrepo, "dev", "run-1")
    sign(gitrepo, request.id, "chloe", Decision.REJECT, "no")
    outcomes = []
    for _ in range(4):
        with pytest.raises(AlreadyDecided) as refused:
            sign(gitrepo, request.id, "ana")
        outcomes.append(refused.value.recorded)
    assert outcomes == [True, False, False, False]
    with gitrepo.db.read() as s:
        refusals = [e for e in trail.events_for(s, f"approval:{request.id}") if e.action == "approval.refused"]
    assert len(refusals) == 1


def test_a_second_submission_waits_for_the_first_and_the_flow_checks_its_submission(gitrepo: QmsContext) -> None:
    with UnitOfWork(gitrepo.db, "dev") as uow:
        first = review.submit_document(uow, gitrepo.config, gitrepo.root, document_id="SOP-DAT-001", submitted_by="dev")
        uow.commit()
        first_id = first.id
        with pytest.raises(DomainError, match=f"already submitted \\({first_id}"):
            review.submit_document(uow, gitrepo.config, gitrepo.root, document_id="SOP-DAT-001", submitted_by="dev")
    with UnitOfWork(gitrepo.db, "qmsflow") as uow:
        assert review.unstarted_submissions(uow, older_than_minutes=0) == [first_id]
        review.open_review(uow, gitrepo.config, first_id, "run-1")
        assert review.unstarted_submissions(uow, older_than_minutes=0) == []
    for submission, run, message in (
        ("SUB-2099-9999", "run-x", "no document review submission 'SUB-2099-9999'"),
        (first_id, "run-2", f"submission {first_id} belongs to flow run run-1, not to run-2"),
    ):
        with UnitOfWork(gitrepo.db, "qmsflow") as uow, pytest.raises(review.SubmissionRefused, match=message):
            review.open_review(uow, gitrepo.config, submission, run)
    with gitrepo.db.read() as s:
        refused = [json.loads(e.after_json) for e in trail.events_for(s, f"submission:{first_id}")]
        unknown = trail.events_for(s, "submission:SUB-2099-9999")
    assert any(e.get("flow_run_id") == "run-2" for e in refused)
    assert [e.action for e in unknown] == ["flow.refused"]


def closed_capa(ctx: QmsContext) -> tuple[str, list[str]]:
    with UnitOfWork(ctx.db, "ana") as uow:
        capa_id = capa.open_capa(uow, ctx.config, title="Label drift", source="pms", owner="dev").id
        uow.commit()
    steps = [
        ("containment", {"correction": "rolled back model 2.3"}),
        (
            "root_cause",
            {
                "method": "5 whys",
                "cause": "no drift alert",
                "similar_cases": {"checked": True, "scope": "all alerts", "found": []},
            },
        ),
        ("action_plan", {"actions": [{"what": "add drift alert", "owner": "dev", "due": "2027-01-31"}]}),
        ("implementation", {}),
        ("effectiveness_check", {"evidence": {"0": ["https://ci.example/run/42"]}}),
        (
            "closed",
            {
                "result": "effective",
                "checked_by": "chloe",
                "checked_on": date.today().isoformat(),
                "early_reason": "the drift alert fired in the replay of the incident",
                "no_adverse_effect": True,
                "no_adverse_effect_reasoning": "an alert only; no output changes",
                "risk_update": "RSK-7 lowered",
            },
        ),
    ]
    requests = []
    for target, fields in steps:
        with UnitOfWork(ctx.db, "dev") as uow:
            result = capa.advance(uow, ctx.config, capa_id, target, fields)
            uow.commit()
        if "awaiting" in result:
            requests.append(result["awaiting"])
            sign(ctx, result["awaiting"], "ana")
    return capa_id, requests


def test_capa_approvers_see_the_whole_record_and_the_step(gitrepo: QmsContext) -> None:
    capa_id, (plan, closure) = closed_capa(gitrepo)
    with gitrepo.db.read() as s:
        shown = contents.as_text(contents.load(s, s.get(ApprovalRequestRow, closure).content_sha256))
        plan_text = contents.as_text(contents.load(s, s.get(ApprovalRequestRow, plan).content_sha256))
    assert "add drift alert" in plan_text and "due: 2027-01-31" in plan_text
    for expected in ("result: effective", "risk_update: RSK-7 lowered", "cause: no drift alert", "Label drift"):
        assert expected in shown


def test_an_edit_of_a_closed_capa_names_the_closure_signature_and_the_field(gitrepo: QmsContext) -> None:
    capa_id, (_, closure) = closed_capa(gitrepo)
    assert verify(gitrepo.db, None).ok
    with gitrepo.db.read() as s:
        data = s.get(RecordRow, capa_id).data
    data["stages"]["root_cause"]["cause"] = "operator error"  # rewritten in the database, outside qmsflow
    with gitrepo.db.engine.begin() as conn:
        conn.execute(text("UPDATE records SET data = :d WHERE id = :i"), {"d": json.dumps(data), "i": capa_id})
    result = verify(gitrepo.db, None)
    problems = [p for p in result.signature_problems if closure in p]
    assert not result.ok and len(problems) == 1
    assert f"{capa_id} data.stages.root_cause.cause" in problems[0] and "approves the closure of" in problems[0]


@pytest.mark.parametrize("rule", ["all", 2, 1])
def test_sop_doc_001_states_the_rule_the_code_enforces(rule: object, tmp_path: Path) -> None:
    from qmsflow.domain.approvals import describe_rule, required_signatures

    repo = tmp_path / "r"
    scaffold(repo, git=False)
    config = repo / "qms.yaml"
    text = config.read_text().replace(
        "approvers: [ben], review_interval_months: 12}",
        f"approvers: [ben, chloe, dev], review_interval_months: 12, required_signatures: {rule}}}",
    )
    cfg = parse_config(text, config).config
    filled = fill_document(cfg, "SOP-DOC-001", render_document(cfg, "SOP-DOC-001"), "SOP-DOC-001.md")
    stated = re.search(r"For this document: ([^.]+)\.", filled).group(1)
    assert stated == describe_rule(cfg.document("SOP-DOC-001").required_signatures)
    enforced = required_signatures(cfg.document("SOP-DOC-001").required_signatures, ["ben", "chloe", "dev"], ["ana"])
    assert enforced == {"all": 3, 2: 2, 1: 1}[rule]


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSlack]:
    with FakeSlack(users=USERS) as fake:
        monkeypatch.setenv("SLACK_BOT_TOKEN", fake.token)
        monkeypatch.setenv("QMS_SLACK_BASE_URL", fake.base_url)
        yield fake


def test_reauth_mode_signs_only_in_the_dashboard(gitrepo: QmsContext, slack: FakeSlack) -> None:
    config = gitrepo.root / "qms.yaml"
    config.write_text(config.read_text() + "\napprovals:\n  slack_signing: reauth\n")
    ctx = open_context(config)
    request = submit_and_open(ctx, "dev", "run-1")
    approvals_deliver = __import__("qmsflow.services.delivery", fromlist=["deliver"]).deliver
    approvals_deliver(ctx.db, ctx.config)
    [asked, *_] = [c for c in slack.calls_to("chat.postMessage") if request.id in json.dumps(c.params["blocks"])]
    [buttons] = [b["elements"] for b in asked.params["blocks"] if b["type"] == "actions"]
    assert [(b["action_id"], b["url"]) for b in buttons] == [
        ("open_signing_page", f"http://127.0.0.1:8000/approvals/{request.id}")
    ]
    handler = SlackInteractions(ctx)
    click = Interaction("click", request.id, Decision.APPROVE, "U0CHLOE01", channel="D0CHLOE0100")
    for _ in range(3):
        handler.handle(click)
    with ctx.db.read() as s:
        events = [e for e in trail.events_for(s, f"approval:{request.id}") if e.action == "approval.refused"]
        assert s.get(ApprovalRequestRow, request.id).status == "pending"
    assert [json.loads(e.after_json)["kind"] for e in events] == ["reauth-required"]
    [told] = slack.ephemerals
    assert told["user"] == "U0CHLOE01" and f"/approvals/{request.id}" in told["text"]
    ctx.close()


def test_submissions_through_the_api_are_made_in_the_token_holders_name(
    gitrepo: QmsContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # Prefect down: recorded, started later
    token = identityutil.token(gitrepo.db, "dev")
    with TestClient(create_app(gitrepo)) as client:
        url = "/api/documents/SOP-DAT-001/submissions"
        assert client.post(url, json={}).status_code == 401
        made = client.post(url, json={"comment": "first issue"}, headers={"Authorization": f"Bearer {token}"})
        assert made.status_code == 201, made.text
        assert made.json()["authors"] == ["dev"] and made.json()["flow_run_id"] is None
        again = client.post(url, json={}, headers={"Authorization": f"Bearer {token}"})
        assert again.status_code == 409 and "already submitted" in again.json()["detail"]
    with gitrepo.db.read() as s:
        [event] = trail.events_for(s, f"submission:{made.json()['submission_id']}")
    assert event.actor == "dev" and json.loads(event.after_json)["submitted_by"] == "dev"
