"""The dashboard's management review pages: the list with what the minutes lack, the minutes form (inputs
addressed, decisions with their actions, "none, because …", submission; CSRF; refusals shown and recorded)
and the minutes as they stand, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from qmsflow.context import QmsContext
from qmsflow.domain.management_review import Period
from qmsflow.services import accounts
from qmsflow.services import management_review as mr
from qmsflow.store import UnitOfWork, trail
from qmsflow.store.tables import RecordRow
from qmsflow.web.app import create_app
from tests.integration.test_audit_web import csrf_of, sign_in


@pytest.fixture
def web(synced_ctx: QmsContext, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[QmsContext, TestClient, str]]:
    for var in ("SLACK_BOT_TOKEN", "JIRA_API_TOKEN", "JIRA_EMAIL"):
        monkeypatch.delenv(var, raising=False)
    ctx = synced_ctx
    for username, role in (("ana", "approver"), ("dev", "viewer")):
        with UnitOfWork(ctx.db, "admin") as uow:
            accounts.add_user(uow, username, username, role, f"{username}-password-123", must_change=False)
    with UnitOfWork(ctx.db, "ana") as uow:
        review_id = mr.start(uow, ctx.config, Period.of(mr.today_in(ctx.config, uow.now()))).id
    with TestClient(create_app(ctx), base_url="http://testserver") as client:
        yield ctx, client, review_id


def _actions(ctx: QmsContext) -> list[RecordRow]:
    with ctx.db.read() as s:
        return list(s.scalars(select(RecordRow).where(RecordRow.kind == mr.ACTION)))


def test_reviews_list_review_page_and_minutes(web: tuple) -> None:
    _, client, review_id = web
    assert client.get("/management-reviews", follow_redirects=False).status_code in (302, 303)  # signed out
    sign_in(client, "dev")
    listing = client.get("/management-reviews")
    assert listing.status_code == 200 and review_id in listing.text
    page = client.get(f"/management-reviews/{review_id}")
    assert page.status_code == 200
    assert "no internal audit results recorded this quarter" in page.text and "not addressed" in page.text
    assert "input c.capa is not addressed" in page.text
    assert "Record the minutes" not in page.text  # a viewer gets no form
    minutes = client.get(f"/management-reviews/{review_id}/minutes")
    assert minutes.status_code == 200 and review_id in minutes.text and "<html" in minutes.text.lower()
    assert client.get("/management-reviews/MRV-1999-0001").status_code == 404
    assert client.get("/management-reviews/MRV-1999-0001/minutes").status_code == 404


def test_the_minutes_are_recorded_and_submitted_through_the_form(web: tuple) -> None:
    ctx, client, review_id = web
    sign_in(client, "ana")
    path = f"/management-reviews/{review_id}"
    assert "Record the minutes" in client.get(path).text
    due = (mr.today_in(ctx.config, UnitOfWork.now()) + timedelta(days=30)).isoformat()
    # a forged form changes nothing
    forged = client.post(f"{path}/inputs", data={"input_key": "c.capa", "note": "seen", "csrf": "forged"})
    assert forged.status_code == 403
    # submitting incomplete minutes: refused on the page naming the gaps, and recorded
    early = client.post(f"{path}/submit", data={"csrf": csrf_of(client, path)})
    assert early.status_code == 400 and "cannot be submitted" in early.text and "c.capa is not addressed" in early.text
    with ctx.db.read() as s:
        assert [e.action for e in trail.events_for(s, f"record:{review_id}")].count("management-review.submit-refused")
    # an action owned by nobody of qms.yaml, or half filled: refused, nothing recorded
    decision = {"kind": "resources", "decision": "Hire a tester", "what_1": "Post the job", "due_1": due}
    bad_owner = client.post(
        f"{path}/decisions", data={**decision, "owner_1": "nobody-x", "csrf": csrf_of(client, path)}
    )
    assert bad_owner.status_code == 400 and "nobody-x" in bad_owner.text and "is not a person" in bad_owner.text
    half = client.post(f"{path}/decisions", data={**decision, "csrf": csrf_of(client, path)})
    assert half.status_code == 400 and "action 1 needs what, owner and due date" in half.text
    assert _actions(ctx) == []
    # a decision with its action: the action is a tracked record
    ok = client.post(
        f"{path}/decisions", data={**decision, "owner_1": "dev", "csrf": csrf_of(client, path)}, follow_redirects=False
    )
    assert ok.status_code == 303 and ok.headers["location"].endswith("#output-resources")
    [action] = _actions(ctx)
    assert (action.owner, action.status, action.due_date.isoformat(), action.title) == (
        "dev",
        "open",
        due,
        "Post the job",
    )
    for kind in ("improvement", "qms-changes"):
        none = {"kind": kind, "reason": "nothing came up", "csrf": csrf_of(client, path)}
        assert client.post(f"{path}/none", data=none, follow_redirects=False).status_code == 303
    with ctx.db.read() as s:
        inputs = mr.load(s, review_id).data["inputs"]
    for key in inputs:
        form = {"input_key": key, "note": f"considered {key}", "csrf": csrf_of(client, path)}
        assert client.post(f"{path}/inputs", data=form, follow_redirects=False).status_code == 303
    page = client.get(path).text
    assert "the minutes can be submitted" in page and "considered c.capa" in page and action.id in page
    # submitted: it waits for top management, and the minutes can no longer change here
    sent = client.post(f"{path}/submit", data={"csrf": csrf_of(client, path)}, follow_redirects=False)
    assert sent.status_code == 303
    with ctx.db.read() as s:
        row = mr.load(s, review_id)
        assert row.data["pending"]["target"] == "signed"
    page = client.get(path).text
    assert f'waits for <a href="/approvals/{row.data["pending"]["request"]}"' in page
    assert "Record the minutes" not in page
    late = client.post(f"{path}/inputs", data={"input_key": "c.capa", "note": "late", "csrf": csrf_of(client, path)})
    assert late.status_code == 400 and "waits for approval" in late.text


def test_a_viewer_cannot_record_minutes_and_the_refusal_is_recorded(web: tuple) -> None:
    ctx, client, review_id = web
    sign_in(client, "dev")
    path = f"/management-reviews/{review_id}"
    refused = client.post(f"{path}/inputs", data={"input_key": "c.capa", "note": "x", "csrf": csrf_of(client, path)})
    assert refused.status_code == 403
    with ctx.db.read() as s:
        assert any(e.action == "web.refused" for e in trail.events_for(s, "user:dev"))
        assert "c.capa" not in (mr.load(s, review_id).data.get("minutes") or {}).get("addressed", {})
