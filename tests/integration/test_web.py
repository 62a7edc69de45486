"""The dashboard over HTTP: every page, every refusal (unauthenticated, wrong role, bad CSRF token,
expired session, tampered cookie, wrong signing password), security headers."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from qmsflow.context import QmsContext
from qmsflow.services import accounts, approvals, contents
from qmsflow.services.sync import sync_config
from qmsflow.store import UnitOfWork, trail
from qmsflow.store.tables import ApprovalRequestRow, OutboxRow, SignatureRow
from qmsflow.web.app import create_app
from qmsflow.web.dashboard import COOKIE

PAGES = [
    "/",
    "/approvals",
    "/documents",
    "/documents/SOP-DOC-001",
    "/capas",
    "/trail",
    "/trail?actor=qmsflow",
    "/outbox",
    "/charts/capa-ageing.svg",
    "/charts/overdue.svg",
    "/charts/approval-lead-time.svg",
    "/ping",
]


@pytest.fixture
def web(ctx: QmsContext, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[QmsContext, TestClient]]:
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    with UnitOfWork(ctx.db, "qmsflow") as uow:
        sync_config(uow, ctx.config, ctx.root)
        uow.commit()
    for username, person, role in (("ana", "ana", "admin"), ("ben", "ben", "approver"), ("dev", "dev", "viewer")):
        with UnitOfWork(ctx.db, "admin") as uow:
            accounts.add_user(
                uow, username, person, role, f"{username}-password-123", must_change=False, password_set_by=person
            )
    with TestClient(create_app(ctx), base_url="http://testserver") as client:
        yield ctx, client


def login_form_token(client: TestClient) -> str:
    """GET /login sets the form's cookie and returns the hidden field's token (signed double-submit)."""
    return re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)


def sign_in(client: TestClient, username: str) -> str:
    response = client.post(
        "/login",
        data={
            "username": username,
            "password": f"{username}-password-123",
            "next": "/",
            "csrf": login_form_token(client),
        },
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    return response.cookies[COOKIE]


def csrf_of(client: TestClient, path: str = "/") -> str:
    return re.search(r'name="csrf" value="([^"]+)"', client.get(path).text).group(1)


def open_request(ctx: QmsContext, approvers: list[str] | None = None, process: str | None = None) -> str:
    with UnitOfWork(ctx.db, "chloe") as uow:
        row, _ = approvals.open_request(
            uow,
            ctx.config,
            key="w1",
            process=process,
            subject="test-step:T-1@1",
            required=1,
            title="SOP-DES-001 v1.0",
            content_sha256=contents.store(uow, b"# SOP-DES-001\n\nThe text under review.\n", contents.MARKDOWN),
            approvers=approvers or ["ben"],
            meaning="approve SOP-DES-001 v1.0",
            author="chloe",
        )
        uow.commit()
        return row.id


@pytest.mark.parametrize("path", PAGES)
def test_unauthenticated_requests_go_to_sign_in(web: tuple, path: str) -> None:
    _, client = web
    response = client.get(path, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/login?next=")


@pytest.mark.parametrize("path", PAGES)
def test_every_page_renders_for_a_viewer(web: tuple, path: str) -> None:
    _, client = web
    sign_in(client, "dev")
    response = client.get(path)
    assert response.status_code == 200
    if path.endswith(".svg"):
        assert response.headers["content-type"] == "image/svg+xml"
        assert b"<svg" in response.content
        assert not re.search(rb"<script[^>]+(src|href)=", response.content)  # no CDN script: works offline
    else:
        assert "text/html" in response.headers["content-type"]


def test_page_contents(web: tuple) -> None:
    ctx, client = web
    sign_in(client, "ana")
    overview = client.get("/").text
    assert "document-control" in overview and "Ana Alves" in overview
    assert "never been verified" in overview  # banner: verify has not run
    assert "SOP-DOC-001" in client.get("/documents").text
    assert "never approved" in client.get("/documents").text
    assert "document-version:SOP-DOC-001@1.0" in client.get("/trail").text
    assert "Head: seq" in client.get("/trail").text
    assert "Containment" in client.get("/capas").text


def test_overview_counts_open_approvals_per_process(web: tuple) -> None:
    ctx, client = web
    open_request(ctx, process="document-control")
    sign_in(client, "dev")
    row = client.get("/").text.split("<strong>document-control</strong>")[1].split("</tr>")[0]
    assert '<a href="/approvals">1</a>' in row


def test_sign_in_sets_a_safe_cookie_and_failures_are_recorded(web: tuple) -> None:
    ctx, client = web
    bad = client.post(
        "/login", data={"username": "ana", "password": "nope", "next": "/", "csrf": login_form_token(client)}
    )
    assert bad.status_code == 401 and "Unknown user or wrong password" in bad.text
    ok = client.post(
        "/login",
        data={
            "username": "ana",
            "password": "ana-password-123",
            "next": "//evil.example/",
            "csrf": login_form_token(client),
        },
        follow_redirects=False,
    )
    assert ok.headers["location"] == "/"  # no open redirect
    cookie = ok.headers["set-cookie"]
    assert "HttpOnly" in cookie and "samesite=lax" in cookie.lower()
    with ctx.db.read() as s:
        assert [e.action for e in trail.events_for(s, "security:sign-in:ana")] == ["sign-in.failed"]


def test_security_headers(web: tuple) -> None:
    _, client = web
    response = client.get("/login")
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"


def test_approve_from_the_inbox_with_the_password_again(web: tuple) -> None:
    ctx, client = web
    request_id = open_request(ctx)
    sign_in(client, "ben")
    assert request_id in client.get("/approvals").text
    detail = client.get(f"/approvals/{request_id}").text
    assert "Your password, to sign as Ben Brandt" in detail
    csrf = csrf_of(client, f"/approvals/{request_id}")
    wrong = client.post(f"/approvals/{request_id}", data={"decision": "approve", "password": "guess", "csrf": csrf})
    assert wrong.status_code == 403 and "password" in wrong.text
    done = client.post(
        f"/approvals/{request_id}",
        data={"decision": "approve", "password": "ben-password-123", "csrf": csrf},
        follow_redirects=False,
    )
    assert done.status_code == 303
    with ctx.db.read() as s:
        assert s.get(ApprovalRequestRow, request_id).status == "approved"
        [signature] = s.scalars(select(SignatureRow).where(SignatureRow.request_id == request_id)).all()
        assert (signature.signer, signature.method) == ("ben", "web")
        refused = [e for e in trail.events_for(s, "user:ben") if e.action == "web.refused"]
    assert len(refused) == 1 and "password" in refused[0].after_json
    assert request_id not in client.get("/approvals").text.split("Recent requests")[0]


def test_viewer_cannot_approve_and_the_attempt_is_recorded(web: tuple) -> None:
    ctx, client = web
    request_id = open_request(ctx, approvers=["dev", "ben"])
    sign_in(client, "dev")
    csrf = csrf_of(client)
    response = client.post(
        f"/approvals/{request_id}", data={"decision": "approve", "password": "dev-password-123", "csrf": csrf}
    )
    assert response.status_code == 403
    with ctx.db.read() as s:
        assert s.get(ApprovalRequestRow, request_id).status == "pending"
        refused = [e for e in trail.events_for(s, f"approval:{request_id}") if e.action == "approval.refused"]
    assert len(refused) == 1 and json.loads(refused[0].after_json)["kind"] == "viewer"
    assert "viewers cannot sign" in refused[0].after_json and "viewers cannot sign" in response.text


def test_non_approver_approver_is_refused_by_the_domain_rules(web: tuple) -> None:
    ctx, client = web
    request_id = open_request(ctx, approvers=["ben"])
    sign_in(client, "ana")  # admin, but not an approver of this request
    csrf = csrf_of(client)
    response = client.post(
        f"/approvals/{request_id}", data={"decision": "approve", "password": "ana-password-123", "csrf": csrf}
    )
    assert response.status_code == 403 and "not a designated approver" in response.text


def test_bad_csrf_token_is_refused(web: tuple) -> None:
    ctx, client = web
    request_id = open_request(ctx)
    sign_in(client, "ben")
    response = client.post(
        f"/approvals/{request_id}", data={"decision": "approve", "password": "ben-password-123", "csrf": "forged"}
    )
    assert response.status_code == 403 and "CSRF" in response.text
    assert client.post("/logout", data={"csrf": "forged"}).status_code == 403


def test_expired_session_and_tampered_cookie_go_to_sign_in(web: tuple) -> None:
    ctx, client = web
    cookie = sign_in(client, "ben")
    assert client.get("/", follow_redirects=False).status_code == 200
    client.cookies.set(COOKIE, cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB"))
    assert client.get("/", follow_redirects=False).status_code == 303
    client.cookies.set(COOKIE, cookie)
    accounts.expire_session(ctx.db, cookie)
    assert client.get("/", follow_redirects=False).status_code == 303


def test_logout_ends_the_session(web: tuple) -> None:
    _, client = web
    cookie = sign_in(client, "ben")
    assert client.post("/logout", data={"csrf": csrf_of(client)}, follow_redirects=False).status_code == 303
    client.cookies.set(COOKIE, cookie)
    assert client.get("/", follow_redirects=False).status_code == 303


def test_rendered_files_are_served_and_paths_cannot_escape(web: tuple) -> None:
    ctx, client = web
    folder = ctx.loaded.state_dir / "rendered" / "SOP-DOC-001" / "1.0"
    folder.mkdir(parents=True)
    (folder / "SOP-DOC-001-v1.0.pdf").write_bytes(b"%PDF-1.7 test")
    sign_in(client, "dev")
    response = client.get("/documents/SOP-DOC-001/1.0/pdf")
    assert response.status_code == 200 and response.content.startswith(b"%PDF")
    assert client.get("/documents/SOP-DOC-001/..%2F..%2F..%2Fqms.yaml/pdf").status_code == 404
    assert client.get("/documents/SOP-DOC-001/1.0/exe").status_code == 404
    assert client.get("/documents/NOPE").status_code == 404


def test_an_effective_version_without_its_controlled_copy_says_how_to_render_it(web: tuple) -> None:
    from datetime import date

    from qmsflow.domain.documents import DocStatus
    from qmsflow.services.documents import latest_version, transition_version

    ctx, client = web
    with UnitOfWork(ctx.db, "ana") as uow:
        version = latest_version(uow, "SOP-DOC-001")
        transition_version(uow, version, DocStatus.IN_REVIEW)
        transition_version(uow, version, DocStatus.EFFECTIVE, on=date.today(), interval_months=12)
        uow.commit()
    sign_in(client, "dev")
    page = client.get("/documents/SOP-DOC-001").text
    assert "not rendered yet" in page and "qms document render SOP-DOC-001" in page
    folder = ctx.loaded.state_dir / "rendered" / "SOP-DOC-001" / "1.0"
    folder.mkdir(parents=True)
    (folder / "SOP-DOC-001-v1.0.html").write_text("<html>written before WeasyPrint failed</html>")
    page = client.get("/documents/SOP-DOC-001").text
    assert "PDF not rendered yet" in page and 'href="/documents/SOP-DOC-001/1.0/html"' in page
    (folder / "SOP-DOC-001-v1.0.pdf").write_bytes(b"%PDF-1.7 test")
    page = client.get("/documents/SOP-DOC-001").text
    assert "not rendered yet" not in page and 'href="/documents/SOP-DOC-001/1.0/pdf"' in page


def test_user_rules(web: tuple) -> None:
    ctx, _ = web
    with UnitOfWork(ctx.db, "ana") as uow:
        with pytest.raises(Exception, match="at least 12 characters"):
            accounts.add_user(uow, "x", "ana", "viewer", "short")
    with UnitOfWork(ctx.db, "ana") as uow:
        with pytest.raises(Exception, match="role 'root' is not allowed"):
            accounts.add_user(uow, "x", "ana", "root", "long-enough-password")
    with UnitOfWork(ctx.db, "ana") as uow:
        with pytest.raises(Exception, match="not a person"):
            accounts.add_user(uow, "x", "nobody", "viewer", "long-enough-password")


def park(ctx: QmsContext, record: str, error: str) -> int:
    """A Jira message that Jira refused until it was parked."""
    from sqlalchemy import update

    from qmsflow.services import outbox

    with UnitOfWork(ctx.db, "qmsflow") as uow:
        row = outbox.enqueue(uow, f"jira:{record}:create", "jira", "create", f"jira:{record}", {"record": record})
        uow.commit()
        message_id = row.id
    with ctx.db.session() as s, s.begin():
        s.execute(
            update(OutboxRow)
            .where(OutboxRow.id == message_id)
            .values(status="parked", failures=5, attempts=5, last_error=error)
        )
    return message_id


def test_outbox_page_shows_parked_messages_and_admins_retry_or_drop_them(web: tuple) -> None:
    ctx, client = web
    error = "integrations.jira.issue_types.capa is 'Tsk', and Jira refused POST issue (HTTP 400)"
    first, second = park(ctx, "CAPA-2026-0001", error), park(ctx, "CAPA-2026-0002", error)
    sign_in(client, "dev")  # a viewer sees them, with their error, but has no buttons
    page = client.get("/outbox").text
    assert "create the Jira issue of CAPA-2026-0001" in page and "issue_types.capa is &#39;Tsk&#39;" in page
    assert page.count('"pill bad">parked<') == 2 and "/retry" not in page
    assert "Jira: 2 message(s) parked, 0 failing" in client.get("/").text
    refused = client.post(f"/outbox/{first}/retry", data={"csrf": csrf_of(client, "/outbox")})
    assert refused.status_code == 403 and "only admins may retry or drop" in refused.text
    with ctx.db.read() as s:
        assert [e.action for e in trail.events_for(s, "user:dev")][-1] == "web.refused"

    sign_in(client, "ana")
    csrf = csrf_of(client, "/outbox")
    assert f'action="/outbox/{first}/retry"' in client.get("/outbox").text
    assert client.post(f"/outbox/{first}/retry", data={"csrf": "forged"}).status_code == 403
    assert client.post(f"/outbox/{first}/retry", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    assert client.post(f"/outbox/{second}/drop", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    with ctx.db.read() as s:
        assert [s.get(OutboxRow, i).status for i in (first, second)] == ["pending", "dropped"]
        assert [(e.actor, e.action) for e in trail.events_for(s, f"outbox:{first}")] == [("ana", "outbox.retried")]
        assert [(e.actor, e.action) for e in trail.events_for(s, f"outbox:{second}")] == [("ana", "outbox.dropped")]
    again = client.post(f"/outbox/{second}/drop", data={"csrf": csrf})
    assert again.status_code == 409 and "is dropped" in again.text
    assert client.post("/outbox/999/retry", data={"csrf": csrf}).status_code == 404
    assert client.post(f"/outbox/{first}/explode", data={"csrf": csrf}).status_code == 404
    assert client.post("/outbox/abc/retry", data={"csrf": csrf}).status_code == 422
