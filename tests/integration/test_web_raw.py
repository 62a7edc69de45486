"""Raw requests at every unauthenticated or signed route, as an attacker sends them: headers missing or
malformed, bodies that are not UTF-8, JSON of the wrong types or nested 100,000 deep, NUL bytes in
paths, bodies of 100 MB. None may be answered 500; every answer carries the security headers.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from slack_sdk.signature import SignatureVerifier

from qmsflow.context import QmsContext
from qmsflow.services import accounts
from qmsflow.services.sync import sync_config
from qmsflow.store import UnitOfWork
from qmsflow.web.app import create_app

SLACK_SECRET = "slack-signing-secret"
JIRA_SECRET = "jira-webhook-secret"
DEEP = "[" * 100_000 + "]" * 100_000


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    """One app for the module (the requests change nothing but sessions): Slack and Jira secrets set."""
    from qmsflow.context import open_context
    from qmsflow.scaffold import scaffold

    repo = tmp_path_factory.mktemp("raw") / "repo"
    scaffold(repo, org_name="Test AI GmbH", git=False)
    config = repo / "qms.yaml"
    config.write_text(
        config.read_text().replace(
            "retention:", "integrations:\n  jira: {url: 'http://127.0.0.1:9', project: QMS}\nretention:", 1
        )
    )
    with pytest.MonkeyPatch.context() as env:
        env.delenv("QMS_DATABASE_URL", raising=False)
        env.delenv("SLACK_BOT_TOKEN", raising=False)
        env.setenv("SLACK_SIGNING_SECRET", SLACK_SECRET)
        env.setenv("JIRA_EMAIL", "qms@example.com")
        env.setenv("JIRA_API_TOKEN", "t")
        env.setenv("JIRA_WEBHOOK_SECRET", JIRA_SECRET)
        ctx = open_context(config, migrate=True)
        with UnitOfWork(ctx.db, "qmsflow") as uow:
            sync_config(uow, ctx.config, ctx.root)
            uow.commit()
        with UnitOfWork(ctx.db, "admin") as uow:
            accounts.add_user(uow, "dev", "dev", "viewer", "dev-password-123", must_change=False)
        application = create_app(ctx)

        @application.get("/boom", include_in_schema=False)
        def boom() -> None:  # an unexpected failure, as a bug would cause one
            raise RuntimeError("secret detail of a bug")

        yield application
        ctx.close()


@pytest.fixture(autouse=True)
def _secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Jira route reads its settings per request, from the environment."""
    monkeypatch.setenv("JIRA_EMAIL", "qms@example.com")
    monkeypatch.setenv("JIRA_API_TOKEN", "t")
    monkeypatch.setenv("JIRA_WEBHOOK_SECRET", JIRA_SECRET)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, base_url="http://testserver", raise_server_exceptions=False) as test_client:
        yield test_client


def signed_in(client: TestClient) -> TestClient:
    form = client.get("/login").text  # sets the login form's cookie; the hidden field carries its token
    csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
    response = client.post(
        "/login",
        data={"username": "dev", "password": "dev-password-123", "next": "/", "csrf": csrf},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    return client


def assert_headers(response) -> None:  # noqa: ANN001
    assert "default-src 'self'" in response.headers.get("content-security-policy", ""), response.headers
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"


def slack_post(client: TestClient, body: bytes, timestamp: str | None = None, signature: str | bytes | None = None):  # noqa: ANN201
    stamp = str(int(time.time())) if timestamp is None else timestamp
    headers: dict = {"Content-Type": "application/x-www-form-urlencoded"}
    if stamp != "-":
        headers["X-Slack-Request-Timestamp"] = stamp if stamp.isascii() else stamp.encode("latin-1", "replace")
    if signature is None:
        try:
            signature = SignatureVerifier(SLACK_SECRET).generate_signature(timestamp=stamp, body=body.decode())
        except (UnicodeDecodeError, ValueError):
            signature = "v0=" + "0" * 64
    headers["X-Slack-Signature"] = signature
    return client.post("/slack/interactions", content=body, headers=headers)


def slack_payload(payload: object) -> bytes:
    return urlencode({"payload": payload if isinstance(payload, str) else json.dumps(payload)}).encode()


CLICK = {
    "type": "block_actions",
    "user": {"id": "U0000001"},
    "trigger_id": "t1",
    "actions": [{"action_id": "approve", "value": "APR-2026-0001"}],
}


@pytest.mark.parametrize(
    ("timestamp", "signature", "status"),
    [
        ("-", None, 401),  # timestamp header missing
        ("", None, 401),
        ("not-a-number", None, 401),
        ("¹²³⁴⁵", None, 401),  # "digits" to str.isdigit(), not to int(); sent as Latin-1 bytes
        ("99999999999999999999999", None, 401),
        (None, "", 401),
        (None, "v0=" + "é" * 64, 401),  # not ASCII: hmac.compare_digest would raise
        (str(int(time.time()) - 3600), None, 401),  # an old, validly signed request: Slack's 5-minute window
    ],
)
def test_slack_headers_missing_or_malformed(client: TestClient, timestamp, signature, status: int) -> None:  # noqa: ANN001
    body = slack_payload(CLICK)
    if signature is not None and not signature.isascii():
        signature = signature.encode("utf-8")
    response = slack_post(client, body, timestamp, signature)
    assert response.status_code == status, response.text
    assert_headers(response)


def test_slack_non_utf8_body(client: TestClient) -> None:
    response = slack_post(client, b"payload=%7B%22user%22%3A\xff\xfe")
    assert response.status_code == 400 and "not UTF-8" in response.text
    assert_headers(response)


@pytest.mark.parametrize(
    "payload",
    [
        {**CLICK, "user": "U0000001"},  # "user" as a string
        {**CLICK, "user": ["U0000001"]},
        {**CLICK, "user": {"id": {"nested": 1}}},
        {**CLICK, "actions": [{"action_id": [], "value": "APR-2026-0001"}]},  # unhashable action id
        {**CLICK, "actions": [{"action_id": "approve", "value": {"id": 1}}]},
        {**CLICK, "actions": "approve"},
        {**CLICK, "trigger_id": 7},
        {**CLICK, "actions": [{"action_id": "approve", "value": "A" * 10_000}]},
        {"type": "view_submission", "user": {"id": "U1"}, "view": ["qms_decision"]},
        {
            "type": "view_submission",
            "user": {"id": "U1"},
            "view": {"callback_id": "qms_decision", "private_metadata": 5},
        },
        {
            "type": "view_submission",
            "user": {"id": "U1"},
            "view": {
                "callback_id": "qms_decision",
                "private_metadata": "APR-2026-0001|reject",
                "state": {"values": {"comment": {"comment": {"value": ["not", "text"]}}}},
            },
        },
        {"type": ["block_actions"], "user": {"id": "U1"}},
        [1, 2, 3],
        "just a string",
        DEEP,  # deeply nested JSON
        "{" * 50_000,
        "not json at all",
    ],
    ids=lambda p: json.dumps(p)[:40] if not isinstance(p, str) or len(p) < 100 else f"{p[:3]}…({len(p)})",
)
def test_slack_signed_payloads_of_the_wrong_shape_are_400(client: TestClient, payload: object) -> None:
    response = slack_post(client, slack_payload(payload))
    assert response.status_code == 400, response.text
    assert_headers(response)


def test_slack_form_without_payload_field(client: TestClient) -> None:
    assert slack_post(client, b"other=1").status_code == 400
    assert slack_post(client, b"").status_code == 400


# ---------------------------------------------------------------- Jira webhook


def jira_post(client: TestClient, body: bytes, signed: bool = True, **headers: str):  # noqa: ANN201
    from fakes.jira import FakeJira

    all_headers = {"Content-Type": "application/json", **headers}
    if signed:
        all_headers["X-Hub-Signature"] = FakeJira.sign(body, JIRA_SECRET)
    return client.post("/jira/webhook", content=body, headers=all_headers)


def jira_body(**changes: object) -> dict:
    body = {
        "timestamp": int(time.time() * 1000),
        "webhookEvent": "jira:issue_updated",
        "issue": {"key": "QMS-1", "fields": {"labels": ["qms", "qms-CAPA-2026-0001"], "status": {"name": "Done"}}},
        "changelog": {"items": [{"field": "status", "toString": "Done"}]},
    }
    body.update(changes)
    return body


@pytest.mark.parametrize(
    "payload",
    [
        jira_body(changelog={"items": 5}),  # changelog.items not a list
        jira_body(changelog={"items": "status"}),
        jira_body(changelog={"items": {"field": "status"}}),
        jira_body(changelog="status"),
        jira_body(changelog=None, issue={"key": "QMS-1", "fields": {"labels": ["qms-CAPA-1"], "status": "Done"}}),
        jira_body(issue="QMS-1"),
        jira_body(issue={"fields": ["labels"]}),
        jira_body(timestamp="yesterday"),
        jira_body(timestamp=True),
        jira_body(timestamp=10**30),
        [jira_body()],
        "string",
    ],
    ids=lambda p: json.dumps(p)[:60],
)
def test_jira_signed_bodies_of_the_wrong_shape_are_400(client: TestClient, payload: object) -> None:
    response = jira_post(client, json.dumps(payload).encode())
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith("malformed webhook")
    assert_headers(response)


@pytest.mark.parametrize(
    "body",
    [DEEP.encode(), b'{"a":' * 50_000 + b"1" + b"}" * 50_000, b"\xff\xfe{}", b"{not json", b""],
    ids=["deep-list", "deep-object", "not-utf8", "not-json", "empty"],
)
def test_jira_signed_bodies_that_are_not_json_objects_are_400(client: TestClient, body: bytes) -> None:
    response = jira_post(client, body)
    assert response.status_code == 400, response.text
    assert_headers(response)


def test_jira_odd_but_harmless_values_are_ignored(client: TestClient) -> None:
    for payload in (
        jira_body(issue={"key": "QMS-1", "fields": {"labels": "qms-CAPA-2026-0001"}}),  # labels not a list
        jira_body(issue={"key": "QMS-1", "fields": {"labels": [5, None, {"x": 1}]}}),
    ):
        response = jira_post(client, json.dumps(payload).encode())
        assert response.status_code == 200 and response.json()["outcome"] == "not a qmsflow status change"


def test_jira_unsigned_or_wrongly_signed(client: TestClient) -> None:
    body = json.dumps(jira_body()).encode()
    assert jira_post(client, body, signed=False).status_code == 401
    assert jira_post(client, body, signed=False, **{"X-Hub-Signature": "sha256=zz"}).status_code == 401
    response = client.post(
        "/jira/webhook", content=body, headers={"X-Hub-Signature": "sha256=".encode() + "é".encode("utf-8")}
    )
    assert response.status_code == 401
    assert_headers(response)


# ---------------------------------------------------------------- body size limit


class Feed:
    """An ASGI receive that hands out a body in 64 KiB chunks and counts what was taken."""

    def __init__(self, total: int, chunk: int = 64 * 1024):
        self.left, self.chunk, self.taken = total, chunk, 0

    async def __call__(self) -> dict:
        size = min(self.chunk, self.left)
        self.left -= size
        self.taken += size
        return {"type": "http.request", "body": b"x" * size, "more_body": self.left > 0}


def call(app: FastAPI, path: str, receive: Feed, headers: list[tuple[bytes, bytes]]) -> tuple[int, dict, bytes]:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
        "root_path": "",
    }
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body


@pytest.mark.parametrize("path", ["/jira/webhook", "/slack/interactions", "/login", "/api/approvals/APR-1/decision"])
def test_a_100_mb_body_with_its_length_is_refused_before_a_byte_is_read(app: FastAPI, path: str) -> None:
    feed = Feed(100 * 1024 * 1024)
    status, headers, body = call(app, path, feed, [(b"content-length", str(100 * 1024 * 1024).encode())])
    assert status == 413 and feed.taken == 0
    assert "larger than 1,048,576 bytes" in body.decode()
    assert "default-src 'self'" in headers["content-security-policy"]


@pytest.mark.parametrize("path", ["/jira/webhook", "/slack/interactions"])
def test_a_chunked_100_mb_body_is_read_only_up_to_the_limit(app: FastAPI, path: str) -> None:
    feed = Feed(100 * 1024 * 1024)
    status, headers, _ = call(app, path, feed, [(b"transfer-encoding", b"chunked")])
    assert status == 413
    assert feed.taken <= 1024 * 1024 + 64 * 1024  # the limit plus the chunk that crossed it
    assert headers["x-frame-options"] == "DENY"


def test_a_body_within_the_limit_still_reaches_the_route(app: FastAPI) -> None:
    feed = Feed(900 * 1024)
    status, _, body = call(app, "/jira/webhook", feed, [(b"transfer-encoding", b"chunked")])
    assert status == 401 and b"invalid webhook signature" in body  # read whole, then refused by the route
    assert feed.taken == 900 * 1024


def test_content_length_not_a_number(client: TestClient) -> None:
    response = client.post("/login", content=b"x", headers={"Content-Length": "abc"})
    assert response.status_code == 400
    assert_headers(response)


def test_the_limit_comes_from_qms_yaml(ctx: QmsContext, monkeypatch: pytest.MonkeyPatch) -> None:
    config = ctx.loaded.path
    config.write_text(config.read_text().replace("retention:", "web: {max_request_kib: 64}\nretention:", 1))
    from qmsflow.context import open_context

    small = create_app(open_context(config))
    status, _, body = call(small, "/login", Feed(70 * 1024), [(b"content-length", str(70 * 1024).encode())])
    assert status == 413 and "larger than 65,536 bytes" in body.decode()


# ---------------------------------------------------------------- file routes, paths, queries


@pytest.mark.parametrize(
    "path",
    [
        "/documents/%00/1.0/pdf",
        "/documents/SOP-DOC-001/%00/pdf",
        "/documents/SOP-DOC-001/1.0/%00",
        "/documents/%00",
        "/approvals/%00",
        "/trail?record=%00",
        "/trail?actor=a%00b",
        "/api/approvals/%00/decision",
        "/charts/%00.svg",
        "/documents/%0A/1.0/pdf",
    ],
)
@pytest.mark.parametrize("who", ["anonymous", "signed-in"])
def test_control_characters_in_paths_and_queries_are_400(client: TestClient, path: str, who: str) -> None:
    if who == "signed-in":
        signed_in(client)
    method = client.post if path.startswith("/api/") else client.get
    response = method(path, follow_redirects=False)
    assert response.status_code == 400, response.text
    assert_headers(response)


@pytest.mark.parametrize(
    "path",
    [
        "/documents/..%2F..%2Fqms.yaml/1.0/pdf",
        "/documents/SOP-DOC-001/..%2F..%2F..%2Fqms.yaml/html",
        "/documents/" + "A" * 5000 + "/1.0/pdf",
        "/documents/%E9%FF/1.0/pdf",
        "/documents/SOP-DOC-001/1.0/pdf%20",
    ],
)
def test_odd_file_paths_are_404(client: TestClient, path: str) -> None:
    signed_in(client)
    response = client.get(path)
    assert response.status_code == 404, response.text
    assert_headers(response)


@pytest.mark.parametrize(
    "query",
    ["before=99999999999999999999", "before=-1", "since=99999-01-01", "page=99999999999999999999", "until=x"],
)
def test_out_of_range_queries_are_422(client: TestClient, query: str) -> None:
    signed_in(client)
    page = "/documents" if query.startswith("page") else "/trail"
    response = client.get(f"{page}?{query}")
    assert response.status_code == 422, response.text
    assert_headers(response)


# ---------------------------------------------------------------- forms and API bodies


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"username=a%00b&password=x", "application/x-www-form-urlencoded"),
        (b"username=\xff\xfe&password=\xff", "application/x-www-form-urlencoded"),
        (b"username=" + b"u" * 100 + b"&password=x", "application/x-www-form-urlencoded"),
        (
            b"--x\r\nContent-Disposition: form-data; name=username\r\n\r\n\xff\r\n--x--\r\n",
            "multipart/form-data; boundary=x",
        ),
        (b"{}", "application/json"),
        (b"", "application/x-www-form-urlencoded"),
    ],
)
def test_login_with_malformed_forms(client: TestClient, body: bytes, content_type: str) -> None:
    response = client.post("/login", content=body, headers={"Content-Type": content_type})
    assert 400 <= response.status_code < 500, response.text
    assert_headers(response)


@pytest.mark.parametrize(
    "body",
    [
        DEEP.encode(),
        b'{"decision": ' * 20_000 + b"1" + b"}" * 20_000,
        b'{"decision": ["approve"]}',
        b'{"decision": "approve", "comment": "a\\u0000b"}',
        b'{"decision": "approve", "comment": 5}',
        b'{"decision": "approve", "comment": "' + b"c" * 5001 + b'"}',
        b"\xff\xfe",
        b"[]",
    ],
    ids=["deep-list", "deep-object", "decision-list", "nul-comment", "int-comment", "long-comment", "not-utf8", "list"],
)
def test_api_bodies_of_the_wrong_shape_are_4xx(client: TestClient, body: bytes) -> None:
    response = client.post(
        "/api/approvals/APR-2026-0001/decision",
        content=body,
        headers={"Content-Type": "application/json", "Authorization": "Bearer qms_nothing"},
    )
    assert response.status_code in (400, 401, 422), response.text
    assert_headers(response)


def test_api_with_odd_authorization_headers(client: TestClient) -> None:
    for value in (b"Bearer \xff\xfe", b"Bearer " + b"q" * 5000, b"", b"Basic abc"):
        response = client.post(
            "/api/approvals/APR-2026-0001/decision",
            json={"decision": "approve"},
            headers={"Authorization": value},
        )
        assert response.status_code in (401, 422), response.text
        assert_headers(response)


def test_an_over_long_request_id_is_refused(client: TestClient) -> None:
    response = client.post(
        "/api/approvals/" + "A" * 5000 + "/decision",
        json={"decision": "approve"},
        headers={"Authorization": "Bearer x"},
    )
    assert response.status_code == 422


# ---------------------------------------------------------------- last resort and docs


@pytest.mark.parametrize("accept", ["text/html", "application/json"])
def test_an_unexpected_error_is_a_plain_500_with_the_headers_and_no_trace(
    client: TestClient, accept: str, caplog: pytest.LogCaptureFixture
) -> None:
    response = client.get("/boom", headers={"Accept": accept})
    assert response.status_code == 500
    assert_headers(response)
    assert "secret detail" not in response.text and "Traceback" not in response.text
    assert "internal error" in response.text
    assert ("text/html" in response.headers["content-type"]) == (accept == "text/html")
    assert any("secret detail of a bug" in str(r.exc_info) for r in caplog.records if r.exc_info)  # logged


@pytest.mark.parametrize("path", ["/no-such-page", "/documents/NOPE"])
def test_404_pages_carry_the_headers(client: TestClient, path: str) -> None:
    signed_in(client)
    response = client.get(path, headers={"Accept": "text/html"})
    assert response.status_code == 404
    assert_headers(response)


def test_swagger_ui_is_served_from_this_server(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert_headers(page)
    scripts = __import__("re").findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', page.text)
    assert scripts and all(s.startswith("/static/") for s in scripts), scripts
    assert "<script>" not in page.text  # no inline script: the CSP forbids it
    for asset in scripts:
        assert client.get(asset).status_code == 200, asset
    assert client.get("/openapi.json").json()["paths"]


def test_swagger_ui_renders_in_a_browser_under_our_csp(app: FastAPI) -> None:
    """Debian's chromium loads /docs from a real server: the operations render, no CSP violation."""
    import shutil
    import socket
    from pathlib import Path

    import uvicorn

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.fail("chromium is not installed: run scripts/system-deps.sh (make test does)")
    from playwright.sync_api import sync_playwright

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        problems: list[str] = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page()
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("requestfailed", lambda r: problems.append(f"failed {r.url}"))
            page.goto(f"http://127.0.0.1:{port}/docs")
            page.wait_for_selector(".opblock", timeout=30_000)
            assert "/api/approvals/{request_id}/decision" in page.inner_text("body")
            browser.close()
        assert problems == [], problems
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_health_is_liveness_and_ready_checks_the_records_store(
    app: FastAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/health answers while the process lives; /ready answers 200 only while the records store answers."""
    from qmsflow.services.status import store_reachable
    from qmsflow.store.db import Database

    client = TestClient(app)
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready"}
    import qmsflow.web.app as web_app

    monkeypatch.setattr(web_app, "store_reachable", lambda db: False)
    answer = client.get("/ready")
    assert answer.status_code == 503 and answer.json()["status"] == "unavailable"

    reachable = Database(f"sqlite:///{tmp_path / 'ok.db'}")
    gone = Database("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")  # nothing listens on port 1
    try:
        assert store_reachable(reachable) is True
        assert store_reachable(gone) is False
    finally:
        reachable.dispose()
        gone.dispose()
