"""Dashboard sign-in under attack, on SQLite and PostgreSQL: CSRF on the sign-in form, 100 wrong
passwords, session rotation and the bound on a user's sessions, the password change an admin's first
password forces, and the approvals API honouring token expiry and revocation."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from identityutil import account, password_of, token
from sqlalchemy import select, update

from qmsflow.context import QmsContext
from qmsflow.services import accounts, approvals
from qmsflow.store import UnitOfWork
from qmsflow.store.tables import ApiTokenRow, ApprovalRequestRow, TrailEventRow, UserRow, WebSessionRow
from qmsflow.web.app import create_app
from qmsflow.web.dashboard import COOKIE, LOGIN_FORM_COOKIE


@pytest.fixture
def site(synced_ctx: QmsContext, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[QmsContext, TestClient]]:
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    account(synced_ctx.db, "ben")
    with TestClient(create_app(synced_ctx), base_url="http://testserver") as client:
        yield synced_ctx, client


def open_request(ctx: QmsContext, key: str) -> str:
    """A request that ben may sign (chloe is the author)."""
    with UnitOfWork(ctx.db, "chloe") as uow:
        row, _ = approvals.open_request(
            uow,
            ctx.config,
            key=key,
            subject="test-step:T-1@1",
            required=1,
            title="SOP-DES-001 v1.0",
            content_sha256="ab" * 32,
            approvers=["ben"],
            meaning="approve SOP-DES-001 v1.0",
            author="chloe",
        )
        uow.commit()
        return row.id


def status_of(ctx: QmsContext, request_id: str) -> str:
    with ctx.db.read() as s:
        return s.get(ApprovalRequestRow, request_id).status


def form_token(client: TestClient) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)


def post_login(client: TestClient, username: str, password: str, csrf: str | None = None, next_url: str = "/"):  # noqa: ANN201
    data = {"username": username, "password": password, "next": next_url}
    data["csrf"] = form_token(client) if csrf is None else csrf
    return client.post("/login", data=data, follow_redirects=False)


def trail_since(ctx: QmsContext, seq: int) -> list[TrailEventRow]:
    with ctx.db.read() as s:
        return list(s.scalars(select(TrailEventRow).where(TrailEventRow.seq > seq).order_by(TrailEventRow.seq)))


def head(ctx: QmsContext) -> int:
    with ctx.db.read() as s:
        return max(s.scalars(select(TrailEventRow.seq)).all(), default=0)


def test_sign_in_without_a_valid_form_token_is_refused_and_noted(site: tuple) -> None:
    ctx, client = site
    before = head(ctx)
    fresh = TestClient(client.app, base_url="http://testserver")  # no cookie from GET /login
    no_token = fresh.post("/login", data={"username": "ben", "password": password_of("ben")}, follow_redirects=False)
    assert no_token.status_code == 403 and "did not come from this site" in no_token.text
    real = form_token(client)
    forged = real.rsplit(".", 1)[0] + "." + "0" * 64  # a token this site did not sign
    old = accounts.new_login_form_token(accounts.login_form_key(ctx.db), datetime.now(UTC) - timedelta(hours=3))
    for value in (forged, old):  # cookie and field agree, but the signature is wrong or too old
        browser = TestClient(client.app, base_url="http://testserver")
        browser.cookies.set(LOGIN_FORM_COOKIE, value)
        assert post_login(browser, "ben", password_of("ben"), csrf=value).status_code == 403
        assert COOKIE not in browser.cookies
    other = form_token(client)  # the cookie now holds a new token: the old field no longer matches
    assert other != real and post_login(client, "ben", password_of("ben"), csrf=real).status_code == 403
    assert COOKIE not in client.cookies and COOKIE not in fresh.cookies
    notes = trail_since(ctx, before)
    assert [e.action for e in notes] == ["sign-in.form-refused"]  # 4 refusals, aggregated into one event
    assert json.loads(notes[0].after_json)["count_in_window"] == 1
    ok = post_login(client, "ben", password_of("ben"))
    assert ok.status_code == 303 and COOKIE in ok.cookies
    assert "samesite=strict" in client.get("/login").headers["set-cookie"].lower()


def test_100_wrong_passwords_answer_429_after_10_and_the_trail_grows_by_three(site: tuple) -> None:
    ctx, client = site
    before = head(ctx)
    codes = [post_login(client, "ben", f"wrong-password-{n}").status_code for n in range(100)]
    assert codes == [401] * 10 + [429] * 90
    locked = post_login(client, "ben", password_of("ben"))  # the right password, while locked
    assert locked.status_code == 429 and COOKIE not in locked.cookies
    assert 0 < int(locked.headers["retry-after"]) <= 601 and "too many failed sign-ins" in locked.text
    added = trail_since(ctx, before)
    assert [e.action for e in added] == ["sign-in.failed", "sign-in.locked", "sign-in.refused-while-locked"]
    assert all(e.actor == "web:testclient" for e in added)


def test_a_new_sign_in_rotates_the_session_and_keeps_at_most_three(site: tuple) -> None:
    ctx, client = site
    first = post_login(client, "ben", password_of("ben")).cookies[COOKIE]
    assert client.get("/ping").status_code == 200
    second = post_login(client, "ben", password_of("ben")).cookies[COOKIE]  # same browser, old cookie sent
    assert second != first
    client.cookies.set(COOKIE, first)
    assert client.get("/ping", follow_redirects=False).status_code == 303  # the presented session ended
    client.cookies.set(COOKIE, second)
    assert client.get("/ping").status_code == 200
    browsers = [TestClient(client.app, base_url="http://testserver") for _ in range(3)]
    cookies = [post_login(b, "ben", password_of("ben")).cookies[COOKIE] for b in browsers]
    with ctx.db.read() as s:
        assert len(s.scalars(select(WebSessionRow).where(WebSessionRow.username == "ben")).all()) == 3
    client.cookies.set(COOKIE, second)  # the oldest of four sessions ended
    assert client.get("/ping", follow_redirects=False).status_code == 303
    for browser, cookie in zip(browsers, cookies, strict=True):
        browser.cookies.set(COOKIE, cookie)
        assert browser.get("/ping").status_code == 200


def test_an_admins_first_password_must_be_changed_before_anything_else(site: tuple) -> None:
    ctx, client = site
    with UnitOfWork(ctx.db, "ana") as uow:
        accounts.add_user(uow, "chloe", "chloe", "approver", "first-password-chloe")
    other = TestClient(client.app, base_url="http://testserver")
    signed = post_login(other, "chloe", "first-password-chloe", next_url="/documents")
    assert signed.status_code == 303 and signed.headers["location"] == "/account/password?next=%2Fdocuments"
    response = post_login(client, "chloe", "first-password-chloe", next_url="/documents")
    for path in ("/", "/approvals", "/documents", "/trail", "/ping"):
        moved = client.get(path, follow_redirects=False)
        assert moved.status_code == 303 and moved.headers["location"].startswith("/account/password?next=")
    page = client.get("/account/password")
    assert "choose your own before you go on" in page.text and 'href="/approvals"' not in page.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    form = {"current": "first-password-chloe", "new": "chloes-own-password", "confirm": "chloes-own-password"}
    assert client.post("/account/password", data={**form, "csrf": "forged"}).status_code == 403
    assert (
        client.post("/account/password", data={**form, "confirm": "different-password", "csrf": csrf}).status_code
        == 400
    )
    wrong = client.post("/account/password", data={**form, "current": "not-the-password", "csrf": csrf})
    assert wrong.status_code == 401
    short = client.post("/account/password", data={**form, "new": "short", "confirm": "short", "csrf": csrf})
    assert short.status_code == 400 and "at least 12 characters" in short.text
    old_cookie = response.cookies[COOKIE]
    done = client.post("/account/password", data={**form, "csrf": csrf, "next": "/documents"}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/documents"
    assert client.get("/documents").status_code == 200
    other.cookies.set(COOKIE, signed.cookies[COOKIE])  # the user's other session ended
    assert other.get("/ping", follow_redirects=False).status_code == 303
    client.cookies.set(COOKIE, old_cookie)  # and this one continues under a fresh id
    assert client.get("/ping", follow_redirects=False).status_code == 303
    with ctx.db.read() as s:
        user = s.get(UserRow, "chloe")
        [event] = s.scalars(select(TrailEventRow).where(TrailEventRow.action == "user.password-changed")).all()
    assert user.must_change_password is False and event.actor == "chloe"
    assert json.loads(event.after_json) == accounts.user_state(user)


def test_the_approvals_api_honours_expiry_and_revocation(site: tuple) -> None:
    ctx, client = site
    request_id = open_request(ctx, "api-expiry")
    value = token(ctx.db, "ben")
    url = f"/api/approvals/{request_id}/decision"
    with ctx.db.engine.begin() as conn:  # behind the store's back, as the clock would
        conn.execute(update(ApiTokenRow).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    expired = client.post(url, json={"decision": "approve"}, headers={"Authorization": f"Bearer {value}"})
    assert expired.status_code == 401 and "expired on" in expired.json()["detail"]
    assert expired.headers["www-authenticate"] == "Bearer"
    value = token(ctx.db, "ben")
    with ctx.db.read() as s:
        newest = s.scalar(select(ApiTokenRow.id).order_by(ApiTokenRow.id.desc()))
    with UnitOfWork(ctx.db, "ben") as uow:
        from qmsflow.services import tokens

        tokens.revoke(uow, newest, "ben", by_admin=False)
    revoked = client.post(url, json={"decision": "approve"}, headers={"Authorization": f"Bearer {value}"})
    assert revoked.status_code == 401 and "revoked" in revoked.json()["detail"]
    assert status_of(ctx, request_id) == "pending"
    with ctx.db.read() as s:
        refused = s.scalars(select(TrailEventRow).where(TrailEventRow.action == "token.refused")).all()
    assert [e.actor for e in refused] == ["api:testclient"]  # two refusals from one client: one event
    ok = client.post(url, json={"decision": "approve"}, headers={"Authorization": f"Bearer {token(ctx.db, 'ben')}"})
    assert ok.status_code == 200 and ok.json()["signer"] == "Ben Brandt"


def test_the_signing_password_is_throttled_like_a_sign_in(site: tuple) -> None:
    """A stolen session is no password oracle: wrong signing passwords lock like wrong sign-ins."""
    ctx, client = site
    request_id = open_request(ctx, "sign-throttle")
    post_login(client, "ben", password_of("ben"))
    page = client.get(f"/approvals/{request_id}").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    codes = [
        client.post(
            f"/approvals/{request_id}", data={"decision": "approve", "password": f"guess-{n}-xxxxx", "csrf": csrf}
        ).status_code
        for n in range(11)
    ]
    assert codes == [403] * 10 + [429]
    right = client.post(
        f"/approvals/{request_id}", data={"decision": "approve", "password": password_of("ben"), "csrf": csrf}
    )
    assert right.status_code == 429 and "nothing was signed" in right.text and right.headers["retry-after"]
    assert status_of(ctx, request_id) == "pending"
