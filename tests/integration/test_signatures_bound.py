"""The attacks of issue 22, each performed as an attacker would, on SQLite and PostgreSQL.

1. an admin makes a second account for someone else and signs as them;
2. a viewer signs through the API, the CLI, the dashboard and Slack;
3. a disabled account signs from Slack;
4. git authorship declared by whoever commits;
5. a correctly chained signature appended at the trail head with the database credential alone;
6. the anchor check switched off (anchors file removed from git, records folder deleted, config moved);
7. `qms approvals show`, a 5,000-digit number in qms.yaml, a review nobody may approve.

Every refusal is looked up in the trail; every forgery must make `qms verify` fail and name it.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from identityutil import account, password_of, sign, token
from sqlalchemy import select, text

from qmsflow.adapters import keys
from qmsflow.cli.main import run
from qmsflow.context import QmsContext, open_context
from qmsflow.domain.approvals import Decision, Method, NotAuthorized, Signature
from qmsflow.domain.errors import DomainError
from qmsflow.scaffold import scaffold
from qmsflow.services import accounts, approvals, contents, review, tokens
from qmsflow.services.signers import Credential
from qmsflow.services.verify import anchor, verify
from qmsflow.store import UnitOfWork
from qmsflow.store.tables import SignatureRow, TrailEventRow, UserRow
from qmsflow.web.app import create_app
from qmsflow.web.slack_interactions import SlackInteractions, parse

SLACK_IDS = {"chloe": "U0CHLOE1", "dev": "U0DEV001", "ana": "U0ANA001"}


def _with_slack_ids(repo: Path) -> None:
    text_ = (repo / "qms.yaml").read_text()
    for person, slack_id in SLACK_IDS.items():
        text_ = text_.replace(
            f"    email: {person}@example.com\n", f"    email: {person}@example.com\n    slack_id: {slack_id}\n"
        )
    (repo / "qms.yaml").write_text(text_)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """The scaffolded repo (a git repo: anchors and keys are committed) with Slack ids for three people."""
    target = tmp_path / "repo"
    scaffold(target, org_name="Test AI GmbH", git=True)
    _with_slack_ids(target)
    subprocess.run(["git", "-C", str(target), "commit", "-qam", "slack ids"], check=True)
    return target


@pytest.fixture
def store(synced_ctx: QmsContext) -> QmsContext:
    return synced_ctx


@pytest.fixture
def qms(store: QmsContext, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    monkeypatch.setenv("COLUMNS", "200")

    def call(*args: str, stdin: str = "", token_value: str | None = None) -> tuple[int, str, str]:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        if token_value is None:
            monkeypatch.delenv("QMS_TOKEN", raising=False)
        else:
            monkeypatch.setenv("QMS_TOKEN", token_value)
        code = run([*args, "-c", str(store.loaded.path)])
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err and "internal error" not in captured.err, captured.err
        return code, captured.out, captured.err

    return call


def open_request(ctx: QmsContext, approvers: list[str], author: str = "ben", key: str = "k1") -> str:
    with UnitOfWork(ctx.db, author) as uow:
        row, _ = approvals.open_request(
            uow,
            ctx.config,
            key=key,
            subject=f"test-step:{key}@1",
            required=1,
            title="SOP-DES-001 v1.0",
            content_sha256=contents.store(uow, b"# SOP-DES-001\n\nThe text.\n", contents.MARKDOWN),
            approvers=approvers,
            meaning="approve SOP-DES-001 v1.0",
            author=author,
        )
        uow.commit()
        return row.id


def refusals(ctx: QmsContext, request_id: str) -> list[dict]:
    with ctx.db.read() as s:
        rows = s.scalars(
            select(TrailEventRow)
            .where(TrailEventRow.record == f"approval:{request_id}", TrailEventRow.action == "approval.refused")
            .order_by(TrailEventRow.seq)
        )
        return [json.loads(r.after_json) for r in rows]


def signatures(ctx: QmsContext, request_id: str) -> list[SignatureRow]:
    with ctx.db.read() as s:
        return list(s.scalars(select(SignatureRow).where(SignatureRow.request_id == request_id)))


def admin_token(ctx: QmsContext) -> str:
    return token(ctx.db, "ana", role="admin")


# ------------------------------------------------------------------ 1. an admin signs as anyone


def test_an_admin_cannot_make_a_second_account_for_a_person(store: QmsContext, qms) -> None:  # noqa: ANN001
    admin = admin_token(store)
    account(store.db, "chloe")
    code, _, err = qms(
        "user", "add", "chloealt", "--person", "chloe", "--role", "approver", "--password-stdin",
        stdin="alt-password-123\n", token_value=admin,
    )  # fmt: skip
    assert code != 0 and "chloe has the active account 'chloe' already: one account per person" in err
    with store.db.read() as s:
        assert s.get(UserRow, "chloealt") is None


def test_an_account_an_admin_made_cannot_sign_until_its_person_sets_a_password(store: QmsContext, qms) -> None:  # noqa: ANN001
    admin = admin_token(store)
    request_id = open_request(store, ["chloe"])
    code, _, err = qms(
        "user", "add", "chloe", "--person", "chloe", "--role", "approver", "--password-stdin",
        stdin="admin-chosen-123\n", token_value=admin,
    )  # fmt: skip
    assert code == 0, err
    with store.db.read() as s:
        created = s.scalars(select(TrailEventRow).where(TrailEventRow.record == "user:chloe")).first()
        assert created.actor == "ana" and json.loads(created.after_json)["password_set_by"] == "ana"
    # the admin knows the password: it must be changed before any token is issued or anything signed
    user = accounts.sign_in(store.db, "chloe", "admin-chosen-123", address="test", channel="test")
    with UnitOfWork(store.db, "chloe") as uow, pytest.raises(NotAuthorized, match="must change their password first"):
        tokens.issue(uow, user, "test", 1)
    # an account whose password an admin set without asking for a change (as a script could): cannot sign
    with UnitOfWork(store.db, "ana") as uow:
        accounts.set_disabled(uow, "chloe", True)
    with UnitOfWork(store.db, "ana") as uow:
        accounts.add_user(uow, "chloe2", "chloe", "approver", "admin-chosen-456", must_change=False)
    user = accounts.sign_in(store.db, "chloe2", "admin-chosen-456", address="test", channel="test")
    with UnitOfWork(store.db, "chloe") as uow:
        chloe_token, _ = tokens.issue(uow, user, "test", 1)
    client = TestClient(create_app(store))
    answer = client.post(
        f"/api/approvals/{request_id}/decision",
        json={"decision": "approve"},
        headers={"Authorization": f"Bearer {chloe_token}"},
    )
    assert answer.status_code == 403 and "until chloe has set their own password (it was set by ana" in answer.text
    assert [r["kind"] for r in refusals(store, request_id)] == ["password-not-own"]
    assert signatures(store, request_id) == []
    # chloe sets her own password: now her account signs, and the signature names account and method
    with UnitOfWork(store.db, "chloe") as uow:
        accounts.change_password(uow, "chloe2", "chloe-own-password-1")
    answer = client.post(
        f"/api/approvals/{request_id}/decision",
        json={"decision": "approve"},
        headers={"Authorization": f"Bearer {chloe_token}"},
    )
    assert answer.status_code == 200, answer.text
    [signature] = signatures(store, request_id)
    assert (signature.signer, signature.account, signature.method) == ("chloe", "chloe2", Method.API.value)
    assert re.fullmatch(r"token:\d+", signature.auth) and signature.proof["alg"] == "ed25519"
    result = verify(store.db, store.anchors_file, root=store.root)
    assert result.ok, result.problem


# ------------------------------------------------------------------ 2. a viewer signs through every channel


@pytest.fixture
def viewer(store: QmsContext) -> str:
    """dev, a designated approver of the request below, with a viewer account of their own."""
    account(store.db, "dev", role="viewer")
    return open_request(store, ["dev", "ana"])


def test_a_viewer_cannot_sign_through_the_api(store: QmsContext, viewer: str) -> None:
    client = TestClient(create_app(store))
    answer = client.post(
        f"/api/approvals/{viewer}/decision",
        json={"decision": "approve"},
        headers={"Authorization": f"Bearer {token(store.db, 'dev', role='viewer')}"},
    )
    assert answer.status_code == 403 and "viewers cannot sign" in answer.text
    assert [(r["kind"], r["method"]) for r in refusals(store, viewer)] == [("viewer", "api")]
    assert signatures(store, viewer) == []


def test_a_viewer_cannot_sign_with_qms_approve(store: QmsContext, viewer: str, qms) -> None:  # noqa: ANN001
    code, _, err = qms("approve", viewer, "--decision", "approve", token_value=token(store.db, "dev", role="viewer"))
    assert code == 1 and "viewers cannot sign" in err
    assert [(r["kind"], r["method"]) for r in refusals(store, viewer)] == [("viewer", "cli")]
    assert signatures(store, viewer) == []


def test_a_viewer_cannot_sign_in_the_dashboard(store: QmsContext, viewer: str) -> None:
    with TestClient(create_app(store), base_url="http://testserver") as client:
        form = client.get("/login").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
        signed_in = client.post(
            "/login",
            data={"username": "dev", "password": password_of("dev"), "next": "/", "csrf": csrf},
            follow_redirects=False,
        )
        assert signed_in.status_code == 303
        page = client.get(f"/approvals/{viewer}").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        answer = client.post(
            f"/approvals/{viewer}", data={"decision": "approve", "password": password_of("dev"), "csrf": csrf}
        )
    assert answer.status_code == 403 and "viewers cannot sign" in answer.text
    assert [(r["kind"], r["method"]) for r in refusals(store, viewer)] == [("viewer", "web")]
    assert signatures(store, viewer) == []


def slack_click(ctx: QmsContext, person: str, request_id: str, action: str = "approve") -> None:
    payload = {
        "type": "block_actions",
        "user": {"id": SLACK_IDS[person]},
        "trigger_id": "t1",
        "actions": [{"action_id": action, "value": request_id}],
    }
    SlackInteractions(ctx).handle(parse(payload))


def test_a_viewer_cannot_sign_from_slack(store: QmsContext, viewer: str) -> None:
    slack_click(store, "dev", viewer)
    assert [(r["kind"], r["method"]) for r in refusals(store, viewer)] == [("viewer", "slack")]
    assert signatures(store, viewer) == []


# ------------------------------------------------------------------ 3. a disabled account signs from Slack


def test_a_disabled_account_cannot_sign_from_slack(store: QmsContext, qms) -> None:  # noqa: ANN001
    account(store.db, "chloe")
    request_id = open_request(store, ["chloe", "ana"])
    code, _, err = qms("user", "disable", "chloe", token_value=admin_token(store))
    assert code == 0, err
    slack_click(store, "chloe", request_id)
    assert [(r["kind"], r["method"], r["person"]) for r in refusals(store, request_id)] == [
        ("disabled", "slack", "chloe")
    ]
    slack_click(store, "chloe", request_id, action="reject")  # the reject button is refused before the modal
    assert [r["kind"] for r in refusals(store, request_id)] == ["disabled"]  # the same refusal, once
    assert signatures(store, request_id) == []


def test_slack_signs_with_the_persons_single_active_account(store: QmsContext) -> None:
    account(store.db, "chloe")
    request_id = open_request(store, ["chloe"])
    slack_click(store, "chloe", request_id)
    [signature] = signatures(store, request_id)
    assert (signature.account, signature.auth, signature.method) == ("chloe", "slack:U0CHLOE1", "slack")


def test_a_person_without_an_account_cannot_sign_from_slack(store: QmsContext) -> None:
    request_id = open_request(store, ["chloe"])
    slack_click(store, "chloe", request_id)
    assert [r["kind"] for r in refusals(store, request_id)] == ["no-account"]
    assert signatures(store, request_id) == []


# ------------------------------------------------------------------ 5. a forged signature at the trail head


def forge_signature(ctx: QmsContext, request_id: str, seal=None) -> None:  # noqa: ANN001
    """What the database credential alone can do: append a correctly chained signature event and its row."""
    with UnitOfWork(ctx.db, "ana") as uow:
        row, _ = approvals.load(uow, request_id)
        signature = Signature(
            signer="ana",
            printed_name="Ana Alves",
            at=uow.now(),
            meaning=row.meaning,
            decision=Decision.APPROVE,
            method=Method.WEB,
            content_sha256=row.content_sha256,
            account="ana",
            auth="password",
        )
        event = uow.record("approval.signed", f"approval:{request_id}", None, signature.state(), actor="ana", seal=seal)
        proof = event.after.get("proof")
        uow.session.add(
            SignatureRow(request_id=request_id, trail_seq=event.seq, **{**signature.model_dump(), "proof": proof})
        )
        uow.commit()


def test_a_forged_signature_appended_at_the_head_fails_verify(store: QmsContext) -> None:
    account(store.db, "ben")
    sign_request = open_request(store, ["ben"], author="chloe", key="genuine")
    with UnitOfWork(store.db, "ben") as uow:
        sign(uow, store.config, sign_request, "ben")  # a genuine, sealed signature registers the key
    assert verify(store.db, store.anchors_file, root=store.root).ok
    forged = open_request(store, ["ana"], key="forged")
    forge_signature(store, forged)
    result = verify(store.db, store.anchors_file, root=store.root)
    assert not result.ok and result.report.ok  # the chain holds: only the seal gives it away
    assert any("carries no seal" in p for p in result.seal_problems), result.seal_problems


def test_a_signature_sealed_with_the_attackers_own_key_fails_verify(store: QmsContext, tmp_path: Path) -> None:
    """The attacker registers a key of their own in the trail (but cannot commit it to git)."""
    forged = open_request(store, ["ana"])
    mine = keys.generate(tmp_path / "mine.pem")
    with UnitOfWork(store.db, "qmsflow") as uow:
        uow.record(
            "signing.key-added", "store:signing-keys", None, {"key": mine.id, "alg": "ed25519", "public": mine.public}
        )
        uow.commit()
    forge_signature(store, forged, seal=lambda message: {"alg": "ed25519", "key": mine.id, "sig": mine.sign(message)})
    result = verify(store.db, store.anchors_file, root=store.root)
    assert not result.ok
    assert any(mine.id in p and "records/signing-keys.jsonl" in p for p in result.seal_problems), result.seal_problems


def test_an_edited_sealed_signature_fails_verify(store: QmsContext) -> None:
    """Re-chaining after an edit needs the chain rewritten; the seal no longer matches the event either."""
    account(store.db, "ana")
    request_id = open_request(store, ["ana"])
    with UnitOfWork(store.db, "ana") as uow:
        sign(uow, store.config, request_id, "ana")
    [row] = signatures(store, request_id)
    with store.db.read() as s:
        canonical = s.scalar(select(TrailEventRow.canonical).where(TrailEventRow.seq == row.trail_seq))
    from qmsflow.domain.seals import unsealed

    message, proof = unsealed(canonical)
    with store.db.read() as s:
        public = next(
            json.loads(e.after_json)["public"]
            for e in s.scalars(select(TrailEventRow).where(TrailEventRow.action == "signing.key-added"))
        )
    assert keys.check(public, message, proof["sig"])
    assert not keys.check(public, message.replace(b"Ana Alves", b"Ana Alvez"), proof["sig"])


def test_decide_refuses_when_the_process_holds_no_signing_key(store: QmsContext) -> None:
    account(store.db, "ana")
    request_id = open_request(store, ["ana"])
    sealer, store.db.sealer = store.db.sealer, None
    try:
        with UnitOfWork(store.db, "ana") as uow, pytest.raises(DomainError, match="no signing key"):
            sign(uow, store.config, request_id, "ana")
    finally:
        store.db.sealer = sealer
    assert signatures(store, request_id) == []


def test_a_retired_key_seals_nothing_and_rotation_keeps_old_signatures_valid(
    store: QmsContext, qms, tmp_path: Path
) -> None:  # noqa: ANN001
    admin = admin_token(store)  # ana, an admin, also signs
    first = open_request(store, ["ana"], key="before")
    with UnitOfWork(store.db, "ana") as uow:
        sign(uow, store.config, first, "ana")
    code, out, err = qms("key", "status")
    assert code == 0 and "this process seals with" in out, err
    old = re.search(r"seals with (\S+)", out).group(1)
    code, _, err = qms("key", "retire", old, "--reason", "rotation", token_value=admin)
    assert code == 1 and "only active signing key" in err
    new_file = tmp_path / "new-key.pem"
    code, out, err = qms("key", "add", "--key-file", str(new_file), token_value=admin)
    assert code == 0 and "registered at trail seq" in out, err
    code, out, err = qms("key", "retire", old, "--reason", "rotation", token_value=admin)
    assert code == 0, err
    second = open_request(store, ["ana"], key="after")
    with UnitOfWork(store.db, "ana") as uow, pytest.raises(DomainError, match="was retired"):
        sign(uow, store.config, second, "ana")  # this process still holds the retired key
    store.db.sealer.path, store.db.sealer._key = new_file, None  # the key installed, as after a restart
    with UnitOfWork(store.db, "ana") as uow:
        sign(uow, store.config, second, "ana")
    result = verify(store.db, store.anchors_file, root=store.root)
    assert result.ok and result.seals.sealed == 2, result.problem
    code, out, _ = qms("verify")
    assert code == 0 and "signatures sealed: 2" in out


def test_key_commands_are_for_admins_and_the_refusal_is_recorded(store: QmsContext, qms, tmp_path: Path) -> None:  # noqa: ANN001
    code, _, err = qms("key", "add", "--key-file", str(tmp_path / "k.pem"), token_value=token(store.db, "ben"))
    assert code != 0 and "only an admin may add a signing key" in err
    assert not (tmp_path / "k.pem").exists()
    with store.db.read() as s:
        assert s.scalars(select(TrailEventRow).where(TrailEventRow.action == "account.refused")).first() is not None


# ------------------------------------------------------------------ 6. the anchor check cannot be switched off


@pytest.fixture
def anchored(store: QmsContext) -> QmsContext:
    done = anchor(store.db, store.anchors_file, store.root)
    assert done is not None
    assert verify(store.db, store.anchors_file, root=store.root).ok
    return store


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


def test_anchors_file_removed_from_git_fails_verify(anchored: QmsContext) -> None:
    git(anchored.root, "rm", "-q", "records/trail-anchors.jsonl")
    git(anchored.root, "commit", "-qm", "remove the anchors")
    result = verify(anchored.db, anchored.anchors_file, root=anchored.root)
    assert not result.ok and any("records/trail-anchors.jsonl" in p for p in result.anchor_problems), (
        result.anchor_problems
    )


def test_records_folder_deleted_fails_verify(anchored: QmsContext) -> None:
    import shutil

    shutil.rmtree(anchored.root / "records")
    result = verify(anchored.db, anchored.anchors_file, root=anchored.root)
    assert not result.ok and any("records/trail-anchors.jsonl" in p for p in result.anchor_problems), (
        result.anchor_problems
    )


def test_anchors_file_emptied_fails_verify(anchored: QmsContext) -> None:
    anchored.anchors_file.write_text("")
    git(anchored.root, "commit", "-qam", "empty the anchors")
    result = verify(anchored.db, anchored.anchors_file, root=anchored.root)
    assert not result.ok and any("records/trail-anchors.jsonl" in p for p in result.anchor_problems), (
        result.anchor_problems
    )


def test_anchors_file_pointed_elsewhere_fails_verify(anchored: QmsContext) -> None:
    config = anchored.root / "qms.yaml"
    body = config.read_text().replace(
        "anchors_file: records/trail-anchors.jsonl", "anchors_file: records/elsewhere.jsonl", 1
    )
    assert "elsewhere" in body
    config.write_text(body)
    moved = open_context(config, migrate=False)
    try:
        result = verify(moved.db, moved.anchors_file, root=moved.root)
    finally:
        moved.close()
    assert not result.ok and any("stays where it was first anchored" in p for p in result.anchor_problems), (
        result.anchor_problems
    )


def test_the_anchoring_is_itself_in_the_trail(anchored: QmsContext) -> None:
    with anchored.db.read() as s:
        [event] = s.scalars(select(TrailEventRow).where(TrailEventRow.action == "store.anchored"))
    assert json.loads(event.after_json) == {"file": "records/trail-anchors.jsonl"}


def test_verifications_are_append_only(anchored: QmsContext) -> None:
    with anchored.db.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM verifications")).scalar() >= 1
    for statement in ("UPDATE verifications SET head_seq = 0", "DELETE FROM verifications"):
        with pytest.raises(Exception, match=r"(?i)append-only|not allowed|verifications"):  # noqa: PT011, B017
            with anchored.db.engine.begin() as conn:
                conn.execute(text(statement))


# ------------------------------------------------------------------ 7. small ones


def test_approvals_show_prints_the_request_and_its_signatures(store: QmsContext, qms) -> None:  # noqa: ANN001
    account(store.db, "ana")
    request_id = open_request(store, ["ana"])
    with UnitOfWork(store.db, "ana") as uow:
        sign(uow, store.config, request_id, "ana")
    code, out, err = qms("approvals", "show", request_id)
    assert code == 0, err
    assert request_id in out and "signed by Ana Alves" in out and "(account ana, token:test)" in out


def test_a_5000_digit_number_in_qms_yaml_names_the_line_and_field(store: QmsContext, qms) -> None:  # noqa: ANN001
    config = store.root / "qms.yaml"
    lines = config.read_text().splitlines()
    number = next(i for i, line in enumerate(lines) if line.strip().startswith("years:"))
    lines[number] = f"  years: {'9' * 5000}"
    config.write_text("\n".join(lines) + "\n")
    code, _, err = qms("check")
    assert code == 2 and f"qms.yaml:{number + 1} retention.years" in err and "5,000 digits" in err, err


@pytest.fixture
def gitrepo(store: QmsContext) -> QmsContext:
    git(store.root, "config", "user.name", "Ana Alves")
    git(store.root, "config", "user.email", "ana@example.com")
    return store


def edit_and_commit(root: Path, path: str, email: str, name: str, line: str, *extra: str) -> None:
    target = root / path
    target.write_text(target.read_text() + f"\n{line}\n")
    git(root, "-c", f"user.email={email}", "-c", f"user.name={name}", *extra, "commit", "-qam", line)


def submit(ctx: QmsContext, who: str, document_id: str = "SOP-DAT-001"):  # noqa: ANN201
    with UnitOfWork(ctx.db, who) as uow:
        row = review.submit_document(uow, ctx.config, ctx.root, document_id=document_id, submitted_by=who)
        uow.commit()
        return row.id, dict(row.data)


def test_a_review_no_approver_may_sign_is_refused_at_submit(gitrepo: QmsContext) -> None:
    # SOP-RSK-001: approvers [ben]; ben authors the change
    doc = next(d for d in gitrepo.config.documents if d.id == "SOP-RSK-001")
    edit_and_commit(gitrepo.root, doc.path, "ben@example.com", "Ben Brandt", "Ben's edit.")
    with pytest.raises(
        DomainError, match=r"SOP-RSK-001 cannot be reviewed as submitted: .*only 0 approver\(s\) may sign"
    ):
        submit(gitrepo, "ana", "SOP-RSK-001")
    with pytest.raises(DomainError, match="cannot be reviewed as submitted"):
        submit(gitrepo, "ben", "SOP-RSK-001")  # the submitter is an author too


def test_authorship_typed_by_the_committer_is_named_unverified(gitrepo: QmsContext) -> None:
    """ana commits as ben; chloe submits: chloe and ben are authors, ben's authorship shown as unverified."""
    doc = next(d for d in gitrepo.config.documents if d.id == "SOP-DAT-001")  # approvers chloe, ana
    edit_and_commit(gitrepo.root, doc.path, "ben@example.com", "Ben Brandt", "Written by ana, typed as ben.")
    _, data = submit(gitrepo, "dev")
    assert data["authors"] == ["dev", "ben"]
    [unverified] = data["unverified_authors"]
    assert unverified.startswith("Ben Brandt <ben@example.com> (commit ") and "not signed" in unverified


def _require_signed(ctx: QmsContext, ssh_key: str | None = None, person: str = "ben") -> QmsContext:
    config = ctx.root / "qms.yaml"
    body = config.read_text().replace("security:\n", "security:\n  require_signed_commits: true\n", 1)
    if "require_signed_commits" not in body:
        body += "security:\n  require_signed_commits: true\n"
    if ssh_key:
        body = body.replace(
            f"    email: {person}@example.com\n",
            f"    email: {person}@example.com\n    signing_keys: ['{ssh_key}']\n",
            1,
        )
    config.write_text(body)
    git(ctx.root, "commit", "-qam", "require signed commits")
    return open_context(config, migrate=False)


def test_require_signed_commits_refuses_an_unsigned_commit(gitrepo: QmsContext) -> None:
    doc = next(d for d in gitrepo.config.documents if d.id == "SOP-DAT-001")
    edit_and_commit(gitrepo.root, doc.path, "ben@example.com", "Ben Brandt", "Unsigned.")
    strict = _require_signed(gitrepo)
    try:
        with pytest.raises(
            DomainError, match=r"require_signed_commits is on and commit [0-9a-f]{10} by Ben Brandt .*not signed"
        ):
            submit(strict, "dev")
    finally:
        strict.close()


def test_a_commit_signed_with_the_authors_registered_ssh_key_is_verified(gitrepo: QmsContext, tmp_path: Path) -> None:
    key = tmp_path / "ben_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key), "-C", "ben"], check=True)
    public = (tmp_path / "ben_ed25519.pub").read_text().strip()
    strict = _require_signed(gitrepo, public)
    try:
        doc = next(d for d in strict.config.documents if d.id == "SOP-DAT-001")
        sign_with = ("-c", "gpg.format=ssh", "-c", f"user.signingkey={key}", "-c", "commit.gpgsign=true")
        edit_and_commit(strict.root, doc.path, "ben@example.com", "Ben Brandt", "Signed by ben.", *sign_with)
        _, data = submit(strict, "dev")
        assert data["authors"] == ["dev", "ben"] and data["unverified_authors"] == []
        # the same key signing a commit that claims to be chloe's: not chloe's key, refused
        other = next(d for d in strict.config.documents if d.id == "SOP-DES-001")
        edit_and_commit(strict.root, other.path, "chloe@example.com", "Chloe Chen", "Claims chloe.", *sign_with)
        with pytest.raises(DomainError, match="signed by a key qms.yaml does not register for chloe"):
            submit(strict, "dev", "SOP-DES-001")
    finally:
        strict.close()


def test_a_refused_signature_never_reaches_the_signature_table(store: QmsContext) -> None:
    """The rule is in the service: a credential naming a disabled account is refused whatever the channel."""
    account(store.db, "ana")
    request_id = open_request(store, ["ana"])
    with UnitOfWork(store.db, "admin") as uow:
        accounts.set_disabled(uow, "ana", True)
    for method in (Method.API, Method.CLI, Method.WEB):
        credential = Credential(method, "password" if method is Method.WEB else "token:1", "ana", username="ana")
        with UnitOfWork(store.db, "ana") as uow, pytest.raises(NotAuthorized, match="is disabled"):
            approvals.decide(uow, store.config, request_id, credential, Decision.APPROVE, None)
    assert signatures(store, request_id) == []
