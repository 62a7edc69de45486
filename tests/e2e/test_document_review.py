"""End to end over real HTTP: a document review suspends, a signed Slack click resumes it.

`qms up` (Prefect server, runner, web app) runs against a fake Slack Web API on 127.0.0.1 that the
real slack_sdk client talks to; a driver posts signed `block_actions` / `view_submission` payloads
to our `/slack/interactions`, as Slack would.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from fakes.slack import FakeSlack
from identityutil import account, password_of, token
from sqlalchemy import func, select
from stackutil import QMS, SLACK_USERS, RunningStack, start_stack

from qmsflow.scaffold import scaffold
from qmsflow.store.db import Database
from qmsflow.store.tables import ApprovalRequestRow, DocumentVersionRow, SignatureRow, TrailEventRow

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

SECRET = "test-signing-secret"
REVIEW_RUNS = {"flows": {"name": {"any_": ["document-review"]}}}  # scheduled flows may start meanwhile
USERS = SLACK_USERS
SLACK_ID = {u["name"]: u["id"] for u in USERS}


class World:
    def __init__(self, repo: Path, slack: FakeSlack, env: dict[str, str]):
        self.repo, self.slack, self.env = repo, slack, env
        self.stack: RunningStack | None = None
        self.db = Database(f"sqlite:///{repo / '.qms' / 'qms.db'}")
        self.tokens: dict[str, str] = {}

    def start(self, port: int | None = None, web_port: int | None = None) -> RunningStack:
        self.stack = start_stack(self.repo, self.env, port=port, web_port=web_port)
        return self.stack

    def qms(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        input: str | None = None,  # noqa: A002
    ) -> subprocess.CompletedProcess:
        full = {**self.stack.env, **(env or {})}  # the stack is found from its state file in .qms/
        return subprocess.run(
            [QMS, *args, "-c", str(self.repo / "qms.yaml")],
            env=full,
            capture_output=True,
            text=True,
            timeout=120,
            input=input,
        )

    def token(self, who: str) -> str:
        """A personal token of ``who`` (ana is an admin), issued with their password as 'qms login' does."""
        if who not in self.tokens:
            self.tokens[who] = token(self.db, who, role="admin" if who == "ana" else "approver")
        return self.tokens[who]

    def edit(self, relpath: str, line: str) -> None:
        path = self.repo / relpath
        path.write_text(path.read_text() + f"\n{line}\n")
        subprocess.run(["git", "-C", str(self.repo), "commit", "-qam", f"Edit {relpath}"], check=True)

    def submit(self, doc_id: str, *args: str, who: str = "ana") -> ApprovalRequestRow:
        before = self.request_ids()
        done = self.qms("document", "submit", doc_id, *args, env={"QMS_TOKEN": self.token(who)})
        assert done.returncode == 0, done.stderr
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            new = self.request_ids() - before
            if new:
                row = self.request(new.pop())
                self.stack.wait_state(row.flow_run_id, "PAUSED")
                return row
            time.sleep(0.3)
        raise AssertionError(f"no approval request for {doc_id}\n{self.stack.logs()}")

    def pending(self, doc_id: str, who: str) -> ApprovalRequestRow:
        """The pending review request of ``doc_id``; edited and submitted by ``who`` when there is none
        (each test sets up what it needs, whatever ran before it)."""
        with self.db.read() as s:
            row = s.scalars(
                select(ApprovalRequestRow).where(
                    ApprovalRequestRow.subject.startswith(f"document-version:{doc_id}@"),
                    ApprovalRequestRow.status == "pending",
                )
            ).first()
        if row is not None:
            return row
        path = next(p for p in (self.repo / "procedures").glob(f"{doc_id}-*.md"))
        self.edit(str(path.relative_to(self.repo)), f"Revised for a test at {time.time_ns()}.")
        return self.submit(doc_id, who=who)

    def effective(self, doc_id: str, who: str, approver: str) -> ApprovalRequestRow:
        """An approved review of ``doc_id`` whose flow run completed, the version effective."""
        request = self.pending(doc_id, who)
        assert self.click(request.id, approver).status_code == 200
        self.stack.wait_state(request.flow_run_id, "COMPLETED")
        return self.request(request.id)

    def request_ids(self) -> set[str]:
        with self.db.read() as s:
            return set(s.scalars(select(ApprovalRequestRow.id)))

    def request(self, request_id: str) -> ApprovalRequestRow:
        with self.db.read() as s:
            return s.get(ApprovalRequestRow, request_id)

    def post(
        self, payload: dict, *, secret: str = SECRET, timestamp: int | None = None, raw_body: str | None = None
    ) -> httpx.Response:
        body = raw_body if raw_body is not None else urlencode({"payload": json.dumps(payload)})
        ts = str(timestamp if timestamp is not None else int(time.time()))
        signature = "v0=" + hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
        return httpx.post(
            f"{self.stack.web_url}/slack/interactions",
            content=body,
            timeout=10,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Slack-Request-Timestamp": ts,
                "X-Slack-Signature": signature,
            },
        )

    def click(self, request_id: str, person: str, action: str = "approve", **kw) -> httpx.Response:  # noqa: ANN003
        return self.post(
            {
                "type": "block_actions",
                "user": {"id": SLACK_ID.get(person, person)},
                "trigger_id": "13345224609.8534564800",
                "actions": [{"type": "button", "action_id": action, "block_id": "qms_approval", "value": request_id}],
                # the request message is a DM from the bot: Slack names that conversation in the payload
                "container": {"type": "message", "channel_id": FakeSlack.dm_channel_for(SLACK_ID.get(person, person))},
                "channel": {"id": FakeSlack.dm_channel_for(SLACK_ID.get(person, person))},
            },
            **kw,
        )

    def trail(self, action: str, record: str) -> list[TrailEventRow]:
        with self.db.read() as s:
            return list(
                s.scalars(select(TrailEventRow).where(TrailEventRow.action == action, TrailEventRow.record == record))
            )

    def wait_trail(self, action: str, record: str, count: int = 1, timeout: float = 30) -> list[TrailEventRow]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.trail(action, record)
            if len(found) >= count:
                return found
            time.sleep(0.2)
        raise AssertionError(f"{count} x {action} on {record} not recorded\n{self.stack.logs()}")

    def rendered(self, doc_id: str, version: str) -> Path:
        return self.repo / ".qms" / "rendered" / doc_id / version / f"{doc_id}-v{version}.pdf"

    def version_of(self, request: ApprovalRequestRow) -> DocumentVersionRow:
        doc_id, version = request.subject.removeprefix("document-version:").split("@")
        return self.version(doc_id, version)

    def version(self, doc_id: str, version: str) -> DocumentVersionRow:
        with self.db.read() as s:
            return s.scalars(
                select(DocumentVersionRow).where(
                    DocumentVersionRow.document_id == doc_id, DocumentVersionRow.version == version
                )
            ).one()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    repo = tmp_path_factory.mktemp("review") / "repo"
    scaffold(repo, org_name="Review Test GmbH", git=True)
    config = repo / "qms.yaml"  # ana is known by her Slack id; the others are looked up by email
    config.write_text(
        config.read_text().replace(
            "    email: ana@example.com\n", f"    email: ana@example.com\n    slack_id: {SLACK_ID['ana']}\n"
        )
    )
    subprocess.run(["git", "-C", str(repo), "commit", "-qam", "Slack id of ana"], check=True)
    with FakeSlack(users=USERS) as slack:
        w = World(
            repo,
            slack,
            {"SLACK_BOT_TOKEN": slack.token, "SLACK_SIGNING_SECRET": SECRET, "QMS_SLACK_BASE_URL": slack.base_url},
        )
        w.start()
        for approver in ("ben", "chloe"):  # approvers sign from Slack with their own account (one per person)
            account(w.db, approver)
        try:
            yield w
        finally:
            w.stack.kill()
            w.db.dispose()


def posts_about(world: World, request_id: str) -> list:
    return [c for c in world.slack.calls_to("chat.postMessage") if request_id in json.dumps(c.params.get("blocks"))]


def test_submission_suspends_and_asks_the_approver_in_slack(world: World) -> None:
    world.edit("procedures/SOP-CAPA-001-corrective-action.md", "Clarified the effectiveness check.")
    request = world.submit("SOP-CAPA-001", "--comment", "clarify effectiveness check")
    assert request.subject == "document-version:SOP-CAPA-001@1.0" and request.approvers == ["ben"]
    assert request.author == "ana"
    deadline = time.monotonic() + 30
    while not posts_about(world, request.id) and time.monotonic() < deadline:
        time.sleep(0.2)
    [post] = posts_about(world, request.id)
    assert post.params["channel"] == FakeSlack.dm_channel_for(SLACK_ID["ben"])
    buttons = [b for b in post.params["blocks"] if b["type"] == "actions"][0]["elements"]
    assert [b["action_id"] for b in buttons] == ["approve", "reject", "changes"]
    assert {b["value"] for b in buttons} == {request.id}
    assert world.version("SOP-CAPA-001", "1.0").status == "in_review"


def test_refusals_are_answered_and_recorded(world: World) -> None:
    request_id = world.pending("SOP-RSK-001", who="ana").id
    ref = f"approval:{request_id}"
    with world.db.read() as s:
        signatures = s.scalar(select(func.count()).select_from(SignatureRow))
    click = {
        "type": "block_actions",
        "user": {"id": SLACK_ID["ben"]},
        "trigger_id": "1.2",
        "actions": [{"action_id": "approve", "value": request_id}],
    }
    assert world.post(click, secret="wrong-secret").status_code == 401
    assert world.post(click, timestamp=int(time.time()) - 301).status_code == 401
    assert world.post({}, raw_body="payload=%7Bnot-json").status_code == 400
    assert world.post({"type": "block_actions", "user": {"id": "U0BEN0001"}, "actions": []}).status_code == 400
    assert world.click(request_id, "ana").status_code == 200  # the author: self-approval
    assert world.click(request_id, "chloe").status_code == 200  # not a designated approver
    assert world.click(request_id, "U0NOBODY1").status_code == 200  # not a person of this QMS
    refused = world.wait_trail("approval.refused", ref, count=3)
    reasons = {e.actor: json.loads(e.after_json)["reason"] for e in refused}
    assert "segregation of duties" in reasons["ana"]
    assert "not a designated approver" in reasons["chloe"]
    assert "not a known person" in reasons["slack:U0NOBODY1"]
    assert world.stack.flow_state(world.request(request_id).flow_run_id) == "PAUSED"
    with world.db.read() as s:
        assert s.scalar(select(func.count()).select_from(SignatureRow)) == signatures


def test_signed_click_resumes_the_flow_to_an_effective_version(world: World) -> None:
    pending = world.pending("SOP-DOC-001", who="ana")
    request_id = pending.id
    refused_before = len(world.trail("approval.refused", f"approval:{request_id}"))
    started = time.perf_counter()
    response = world.click(request_id, "ben")
    assert response.status_code == 200 and time.perf_counter() - started < 3
    world.stack.wait_state(world.request(request_id).flow_run_id, "COMPLETED")
    version = world.version_of(pending)
    number = version.version
    assert version.status == "effective" and version.next_review_date is not None
    request = world.request(request_id)
    assert request.status == "approved"
    pdf = world.rendered("SOP-DOC-001", number)
    assert pdf.is_file() and pdf.read_bytes().startswith(b"%PDF")
    [signed] = world.trail("approval.signed", f"approval:{request_id}")
    signature = json.loads(signed.after_json)
    assert signature["signer"] == "ben" and signature["printed_name"] == "Ben Brandt"
    assert signature["method"] == "slack" and signature["content_sha256"] == version.content_sha256
    assert signature["meaning"] == f"approves SOP-DOC-001 v{number} for use"
    # the snapshot is the submitter's act; the version is effective in the transaction of ben's signature
    [snapshot] = world.trail("document-version.in_review", f"document-version:SOP-DOC-001@{number}")
    [effective] = world.trail("document-version.effective", f"document-version:SOP-DOC-001@{number}")
    assert (snapshot.actor, effective.actor) == ("ana", "ben") and effective.seq == signed.seq + 2
    assert json.loads(effective.after_json)["approval_request"] == request_id

    def updates() -> list:
        return [c for c in world.slack.calls_to("chat.update") if request_id in c.params.get("text", "")]

    deadline = time.monotonic() + 30
    while not updates() and time.monotonic() < deadline:
        time.sleep(0.2)
    [update] = updates()
    assert "approved by Ben Brandt" in update.params["text"]
    # more clicks: one decision only; the clicker is told once, only to them, and one refusal is recorded
    for _ in range(3):
        assert world.click(request_id, "ben").status_code == 200
    again = world.wait_trail("approval.refused", f"approval:{request_id}", count=refused_before + 1)
    assert "already decided" in json.loads(again[-1].after_json)["reason"]

    def told() -> list:
        return [e for e in world.slack.ephemerals if e["user"] == SLACK_ID["ben"] and request_id in e["text"]]

    deadline = time.monotonic() + 30
    while not told() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1)  # room for any duplicate to arrive
    assert len(told()) == 1 and "already decided" in told()[0]["text"]
    assert len(world.trail("approval.refused", f"approval:{request_id}")) == refused_before + 1
    with world.db.read() as s:
        assert (
            s.scalar(select(func.count()).select_from(SignatureRow).where(SignatureRow.request_id == request_id)) == 1
        )
    assert world.qms("verify").returncode == 0


def test_a_lost_controlled_copy_is_rendered_again_from_the_record(world: World) -> None:
    effective = world.version_of(world.effective("SOP-DOC-001", who="ana", approver="ben"))
    pdf = world.rendered("SOP-DOC-001", effective.version)
    html = pdf.with_suffix(".html")
    pdf.unlink()
    html.unlink()
    done = world.qms("document", "render", "SOP-DOC-001")
    assert done.returncode == 0, done.stderr
    assert pdf.read_bytes().startswith(b"%PDF") and "Ben Brandt" in html.read_text()
    for args, message in (
        (["SOP-NOPE-001"], "no controlled document 'SOP-NOPE-001'"),
        (["SOP-CHG-001"], "SOP-CHG-001 has no effective version"),  # no test approves SOP-CHG-001
        (["SOP-DOC-001", "--version", "9.9"], "no version 9.9 of document SOP-DOC-001"),
    ):
        refused = world.qms("document", "render", *args)
        assert refused.returncode == 1 and message in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr


def test_a_submission_that_cannot_be_reviewed_is_refused_before_a_run_starts(world: World) -> None:
    number = world.version_of(world.effective("SOP-DOC-001", who="ana", approver="ben")).version
    before = world.request_ids()
    runs = world.stack.api("POST", "/flow_runs/count", json=REVIEW_RUNS).json()
    for args, message in (
        (["SOP-DOC-001"], f"procedures/SOP-DOC-001-document-control.md is unchanged since version {number}"),
        (["SOP-CHG-001", "--still-valid"], "SOP-CHG-001 has no effective version"),
        (["SOP-NOPE-001"], "'SOP-NOPE-001' is not a registered document"),
    ):
        refused = world.qms("document", "submit", *args, env={"QMS_TOKEN": world.token("ana")})
        assert refused.returncode == 1 and message in refused.stderr, refused.stderr
    assert world.request_ids() == before
    assert world.stack.api("POST", "/flow_runs/count", json=REVIEW_RUNS).json() == runs


def test_reject_asks_for_a_comment_and_returns_the_document_to_draft(world: World) -> None:
    world.edit("procedures/SOP-TST-001-code-review-and-testing.md", "Coverage gate raised to 85%.")
    request = world.submit("SOP-TST-001", who="chloe")
    assert world.click(request.id, "ana", action="reject").status_code == 200

    def views() -> list:
        return [v for v in world.slack.views if v["private_metadata"].startswith(f"{request.id}|")]

    deadline = time.monotonic() + 30
    while not views() and time.monotonic() < deadline:
        time.sleep(0.2)
    [view] = views()
    assert view["callback_id"] == "qms_decision" and view["private_metadata"] == f"{request.id}|reject"
    submission = {
        "type": "view_submission",
        "user": {"id": SLACK_ID["ana"]},
        "view": {
            "callback_id": "qms_decision",
            "private_metadata": view["private_metadata"],
            "state": {
                "values": {"comment": {"comment": {"type": "plain_text_input", "value": "No evidence for 85% yet."}}}
            },
        },
    }
    assert world.post(submission).status_code == 200
    world.stack.wait_state(request.flow_run_id, "COMPLETED")
    version = world.version_of(request)
    assert version.status == "draft" and version.comment == "No evidence for 85% yet."
    assert world.request(request.id).status == "rejected"


def test_restart_while_suspended_then_click_completes_without_duplicates(world: World) -> None:
    world.edit("procedures/SOP-DES-001-design-and-development.md", "ADRs are mandatory for model changes.")
    request = world.submit("SOP-DES-001", who="chloe")
    posts_before = len(world.slack.calls_to("chat.postMessage"))
    port, web_port = world.stack.port, world.stack.web_port
    assert world.stack.stop() == 0  # runner and Prefect server stop while suspended
    world.start(port=port, web_port=web_port)
    assert world.click(request.id, "ana").status_code == 200
    world.stack.wait_state(request.flow_run_id, "COMPLETED")
    version = world.version_of(request)
    assert version.status == "effective"
    with world.db.read() as s:
        assert (
            s.scalar(
                select(func.count())
                .select_from(ApprovalRequestRow)
                .where(ApprovalRequestRow.flow_run_id == request.flow_run_id)
            )
            == 1
        )
        assert (
            s.scalar(
                select(func.count())
                .select_from(DocumentVersionRow)
                .where(DocumentVersionRow.document_id == "SOP-DES-001", DocumentVersionRow.version == version.version)
            )
            == 1
        )
    requests_to_ana = [
        c
        for c in world.slack.calls_to("chat.postMessage")[:posts_before]
        if request.id in json.dumps(c.params.get("blocks"))
    ]
    assert len(requests_to_ana) == 1
    assert not [
        c
        for c in world.slack.calls_to("chat.postMessage")[posts_before:]
        if f"Approval requested: {request.id}" in c.params.get("text", "")
    ]


def test_cli_approval_with_a_personal_token_and_a_still_valid_review(world: World) -> None:
    account(world.db, "ben")
    created = world.qms("token", "create", "--user", "ben", "--password-stdin", input=password_of("ben") + "\n")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    number = world.version_of(world.effective("SOP-DOC-001", who="ana", approver="ben")).version
    request = world.submit("SOP-DOC-001", "--still-valid", who="ana")
    assert request.author == "ana" and request.subject == f"document-version:SOP-DOC-001@{number}"  # the confirmer
    bad = world.qms("approve", request.id, "--decision", "approve", env={"QMS_TOKEN": "qms_forged"})
    assert bad.returncode == 1 and "the API token is unknown" in bad.stderr and "qms login" in bad.stderr
    done = world.qms("approve", request.id, "--decision", "approve", env={"QMS_TOKEN": token})
    assert done.returncode == 0, done.stderr
    assert "signed by Ben Brandt" in done.stdout
    world.stack.wait_state(request.flow_run_id, "COMPLETED")
    assert world.trail("document-version.review-confirmed", f"document-version:SOP-DOC-001@{number}")
    assert world.version("SOP-DOC-001", number).status == "effective"


def test_browser_approval_from_the_inbox(world: World) -> None:
    """Playwright drives Debian's chromium: sign in, overview, approve from the inbox, flow continues."""
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.fail("chromium is not installed: run scripts/system-deps.sh (make test does)")
    from playwright.sync_api import sync_playwright

    artifacts = Path(__file__).resolve().parents[2] / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    account(world.db, "ben")
    reset = world.qms(  # an admin sets ben's first password (one account per person): ben must change it
        "user",
        "reset-password",
        "ben",
        "--password-stdin",
        input="first-password-from-ana\n",
        env={"QMS_TOKEN": world.token("ana")},
    )
    assert reset.returncode == 0, reset.stderr
    world.tokens.pop("ben", None)  # the reset revoked ben's tokens
    world.edit("procedures/SOP-AUD-001-internal-audit.md", "Audits are announced two weeks ahead.")
    request = world.submit("SOP-AUD-001", who="ana")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
            ],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{world.stack.web_url}/")
        assert "/login" in page.url
        page.fill("input[name=username]", "ben")
        page.fill("input[name=password]", "first-password-from-ana")
        page.click("button[type=submit]")
        page.wait_for_selector("h1:has-text('Change your password')")  # before anything else
        page.goto(f"{world.stack.web_url}/approvals")
        assert "/account/password" in page.url
        page.fill("input[name=current]", "first-password-from-ana")
        page.fill("input[name=new]", password_of("ben"))  # ben's own again: later tests sign in with it
        page.fill("input[name=confirm]", password_of("ben"))
        page.click("main button[type=submit]")
        page.wait_for_selector("h1:has-text('Waiting for your signature')")  # back where it interrupted
        page.goto(f"{world.stack.web_url}/")
        page.wait_for_selector("h1:has-text('QMS processes')")
        page.screenshot(path=str(artifacts / "overview.png"), full_page=True)
        widths = page.eval_on_selector_all(".charts img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
        assert widths and all(w > 0 for w in widths), widths  # the SVG charts render
        page.click("nav >> text=Approvals")
        page.click(f"text={request.id}")
        page.screenshot(path=str(artifacts / "approval.png"), full_page=True)
        assert "Audits are announced two weeks ahead." in page.inner_text("div.content")
        page.check("input[value=approve]")
        page.fill("input[name=password]", password_of("ben"))
        page.click("form.sign button[type=submit]")
        page.wait_for_load_state()
        page.screenshot(path=str(artifacts / "signed.png"), full_page=True)
        assert page.locator("h1 .pill").inner_text() == "approved", page.inner_text("main")
        world.stack.wait_state(request.flow_run_id, "COMPLETED")
        page.goto(f"{world.stack.web_url}/documents/SOP-AUD-001")
        page.wait_for_selector("td:has-text('effective')")
        page.screenshot(path=str(artifacts / "document.png"), full_page=True)
        assert page.locator("a:has-text('PDF')").count() >= 1
        browser.close()
    assert world.version("SOP-AUD-001", "1.0").status == "effective"


def test_verify_reports_a_signature_whose_content_changed(world: World) -> None:
    """Its own signed version (QMS-001: ben, its owner, submits; ana approves); the tampering is undone after."""
    import sqlite3

    version = world.version_of(world.effective("QMS-001", who="ben", approver="ana"))
    assert version.status == "effective"
    where = "WHERE document_id = ? AND version = ?"
    conn = sqlite3.connect(world.repo / ".qms" / "qms.db")
    try:
        conn.execute(f"UPDATE document_versions SET content_sha256 = ? {where}", ("0" * 64, "QMS-001", version.version))
        conn.commit()
        done = world.qms("verify")
        assert done.returncode == 1
        assert f"no longer verifies: QMS-001 v{version.version} content is now 0000000000000000" in done.stderr
    finally:
        conn.execute(
            f"UPDATE document_versions SET content_sha256 = ? {where}",
            (version.content_sha256, "QMS-001", version.version),
        )
        conn.commit()
        conn.close()
    assert world.qms("verify").returncode == 0, "the tampering was not undone"
