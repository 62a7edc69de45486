"""The dashboard's audit pages: the programme matrix, an audit's workpapers, the auditor's form (CSRF, refusals
recorded), on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from qmsflow.context import QmsContext
from qmsflow.services import accounts, audit
from qmsflow.store import UnitOfWork, trail
from qmsflow.web.app import create_app
from qmsflow.web.site import COOKIE


@pytest.fixture
def web(synced_ctx: QmsContext, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[QmsContext, TestClient, str]]:
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    ctx = synced_ctx
    for username, role in (("ana", "admin"), ("ben", "approver"), ("chloe", "approver"), ("dev", "viewer")):
        with UnitOfWork(ctx.db, "admin") as uow:
            accounts.add_user(uow, username, username, role, f"{username}-password-123", must_change=False)
    with UnitOfWork(ctx.db, "ana") as uow:
        audit_id = audit.plan(uow, ctx.config, "data-management", "ben", UnitOfWork.now().date(), "ana").id
    with UnitOfWork(ctx.db, "qmsflow") as uow:
        audit.start(uow, ctx.config, audit_id)
    with TestClient(create_app(ctx), base_url="http://testserver") as client:
        yield ctx, client, audit_id


def sign_in(client: TestClient, username: str) -> None:
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
    response = client.post(
        "/login",
        data={"username": username, "password": f"{username}-password-123", "next": "/", "csrf": token},
        follow_redirects=False,
    )
    assert response.status_code == 303 and response.cookies[COOKIE]


def csrf_of(client: TestClient, path: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', client.get(path).text).group(1)


def test_the_programme_and_the_audit_page_show_the_matrix_and_the_workpapers(web: tuple) -> None:
    _, client, audit_id = web
    sign_in(client, "dev")
    page = client.get("/audits").text
    assert "Audit programme" in page and f"{audit_id} planned" in page and "process-data-management" in page
    detail = client.get(f"/audits/{audit_id}").text
    assert "Art. 17(1)(f)" in detail and "sample seed" in detail
    assert "Record an item" not in detail  # only the auditor sees the form
    assert client.get("/audits/AUD-1999-0001").status_code == 404


def test_the_auditor_records_through_the_form_and_refusals_are_recorded(web: tuple) -> None:
    ctx, client, audit_id = web
    sign_in(client, "ben")
    path = f"/audits/{audit_id}"
    assert "Record an item" in client.get(path).text
    form = {"item": "1", "result": "conform", "evidence": "document:SOP-DAT-001", "note": ""}
    assert client.post(f"{path}/items", data={**form, "csrf": "forged"}).status_code == 403
    bad = client.post(f"{path}/items", data={**form, "evidence": "CAPA-2099-0001", "csrf": csrf_of(client, path)})
    assert bad.status_code == 400 and "does not resolve" in bad.text
    ok = client.post(f"{path}/items", data={**form, "csrf": csrf_of(client, path)}, follow_redirects=False)
    assert ok.status_code == 303
    minor = {"item": "2", "result": "minor", "evidence": "SOP-DAT-001", "note": "no labelling review"}
    client.post(f"{path}/items", data={**minor, "csrf": csrf_of(client, path)}, follow_redirects=False)
    shown = client.get(path).text
    assert "FND-" in shown and "CAPA-" in shown and "no labelling review" in shown
    with ctx.db.read() as s:
        refused = [e for e in trail.events_for(s, f"audit:{audit_id}") if e.action == "audit.record-refused"]
    assert len(refused) == 1
    # another approver is no auditor of this audit: refused by the service, recorded
    client.cookies.clear()
    sign_in(client, "chloe")
    other = client.post(f"{path}/items", data={**form, "csrf": csrf_of(client, path)})
    assert other.status_code == 400 and "only the auditor" in other.text
    with ctx.db.read() as s:
        assert [e.action for e in trail.events_for(s, f"audit:{audit_id}")].count("audit.record-refused") == 2


def test_a_viewer_cannot_record(web: tuple) -> None:
    ctx, client, audit_id = web
    sign_in(client, "dev")
    path = f"/audits/{audit_id}"
    response = client.post(f"{path}/items", data={"item": "1", "result": "conform", "csrf": csrf_of(client, path)})
    assert response.status_code == 403
    with ctx.db.read() as s:
        assert any(e.action == "web.refused" for e in trail.events_for(s, "user:dev"))
