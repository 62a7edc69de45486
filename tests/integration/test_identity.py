"""Identity on the command line and sign-in that resists attack, on SQLite and PostgreSQL.

The attacks of issues 9 and 11 as tests: a shell minting a token for someone else, `qms user add`
without an admin, `--as` outside trusted mode, expired/revoked/unknown tokens, 100 wrong passwords,
parallel guesses. Every refusal is looked up in the trail.
"""

from __future__ import annotations

import io
import json
import os
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from identityutil import account, password_of, token
from sqlalchemy import select, update

from qmsflow.cli import credentials
from qmsflow.cli.main import run
from qmsflow.context import QmsContext, open_context
from qmsflow.domain.approvals import NotAuthorized
from qmsflow.domain.errors import DomainError
from qmsflow.services import accounts, throttle, tokens
from qmsflow.services.verify import verify
from qmsflow.store import UnitOfWork
from qmsflow.store.tables import ApiTokenRow, RecordRow, SignInThrottleRow, TrailEventRow, UserRow


@pytest.fixture
def store(synced_ctx: QmsContext) -> QmsContext:
    return synced_ctx


@pytest.fixture
def qms(store: QmsContext, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """Run a qms command in-process against ``store``; ``stdin`` feeds --password-stdin."""
    monkeypatch.setenv("COLUMNS", "200")

    def call(*args: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        code = run([*args, "-c", str(store.loaded.path)])
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err and "internal error" not in captured.err, captured.err
        return code, captured.out, captured.err

    return call


def events(ctx: QmsContext, action: str | None = None, ref: str | None = None) -> list[TrailEventRow]:
    with ctx.db.read() as s:
        query = select(TrailEventRow).order_by(TrailEventRow.seq)
        if action:
            query = query.where(TrailEventRow.action == action)
        if ref:
            query = query.where(TrailEventRow.record == ref)
        return list(s.scalars(query))


def trail_length(ctx: QmsContext) -> int:
    with ctx.db.read() as s:
        return len(s.scalars(select(TrailEventRow.seq)).all())


def first_admin(qms) -> None:  # noqa: ANN001
    code, _, err = qms(
        "user", "add", "ana", "--person", "ana", "--role", "admin", "--password-stdin", stdin="ana-password-123\n"
    )
    assert code == 0, err


# ------------------------------------------------------------------ tokens only for their own person


def test_a_shell_cannot_mint_a_token_for_someone_else(qms, store: QmsContext) -> None:  # noqa: ANN001
    first_admin(qms)
    account(store.db, "ben")
    code, _, err = qms("token", "create", "ben")  # the old way: a token for any person
    assert code == 2 and "unexpected extra argument" in err.lower()
    code, _, err = qms("token", "create", "--user", "ben", "--password-stdin", stdin="guessed-password-1\n")
    assert code == 1 and "unknown user or wrong password" in err
    code, _, err = qms("token", "create", "--user", "ben", "--password-stdin", stdin="\n")
    assert code == 1
    with store.db.read() as s:
        assert s.scalars(select(ApiTokenRow)).all() == []
    [failed] = events(store, "sign-in.failed", "security:sign-in:ben")
    assert json.loads(failed.after_json)["channel"] == "cli"
    code, out, err = qms(
        "token",
        "create",
        "--user",
        "ben",
        "--name",
        "ci",
        "--days",
        "7",
        "--password-stdin",
        stdin=password_of("ben") + "\n",
    )
    assert code == 0, err
    value = out.strip()
    identity = tokens.authenticate(store.db, value, source="test")
    assert (identity.person, identity.username, identity.token_name) == ("ben", "ben", "ci")
    assert timedelta(days=6, hours=23) < identity.expires_at - datetime.now(UTC) <= timedelta(days=7)
    code, _, err = qms(
        "token", "create", "--user", "ben", "--days", "400", "--password-stdin", stdin=password_of("ben") + "\n"
    )
    assert code == 1 and "1 to 365 days" in err


def test_token_events_carry_the_full_state_on_their_own_ref_and_no_secret(store: QmsContext) -> None:
    value = token(store.db, "ben")
    with store.db.read() as s:
        row = s.scalars(select(ApiTokenRow)).one()
        user = s.get(UserRow, "ben")
    [created] = events(store, "token.created")
    assert created.record == f"token:{row.id}"
    assert json.loads(created.after_json) == tokens.token_state(row)
    [user_created] = events(store, "user.created", "user:ben")
    assert json.loads(user_created.after_json) == accounts.user_state(user)
    with UnitOfWork(store.db, "ben") as uow:
        tokens.revoke(uow, row.id, "ben", by_admin=False)
    with store.db.read() as s:
        row = s.get(ApiTokenRow, row.id)
    [revoked] = events(store, "token.revoked", f"token:{row.id}")
    assert json.loads(revoked.after_json) == tokens.token_state(row) and row.revoked_at is not None
    everything = " ".join(e.before_json + e.after_json for e in events(store))
    for secret in (value, row.token_hash, user.password_hash, password_of("ben")):
        assert secret not in everything
    assert verify(store.db, store.anchors_file).ok


# ------------------------------------------------------------------ accounts


def test_user_add_needs_an_admin_once_an_account_exists(
    qms, store: QmsContext, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    code, _, err = qms(
        "user", "add", "ben", "--person", "ben", "--role", "viewer", "--password-stdin", stdin="x" * 20 + "\n"
    )
    assert code == 2 and "first account must be an admin" in err
    first_admin(qms)
    [created] = events(store, "user.created", "user:ana")
    assert created.actor.startswith("bootstrap:")
    code, _, err = qms(
        "user", "add", "eve", "--person", "dev", "--role", "admin", "--password-stdin", stdin="x" * 20 + "\n"
    )
    assert code == 1 and "not signed in" in err and "qms login" in err
    monkeypatch.setenv("QMS_TOKEN", token(store.db, "ben"))  # an approver, not an admin
    code, _, err = qms(
        "user", "add", "eve", "--person", "dev", "--role", "admin", "--password-stdin", stdin="x" * 20 + "\n"
    )
    assert code == 1 and "ben is not an admin" in err
    [refused] = events(store, "account.refused", "security:user:eve")
    assert refused.actor == "ben"
    monkeypatch.setenv("QMS_TOKEN", token(store.db, "ana", role="admin"))
    code, out, err = qms(
        "user", "add", "dev", "--person", "dev", "--role", "viewer", "--password-stdin", stdin="first-password-dev\n"
    )
    assert code == 0 and "must change the password" in out, err
    with store.db.read() as s:
        assert s.get(UserRow, "dev").must_change_password is True
        assert s.get(UserRow, "eve") is None
    [created] = events(store, "user.created", "user:dev")
    assert created.actor == "ana"


def test_first_admin_cannot_be_created_twice(store: QmsContext) -> None:
    with UnitOfWork(store.db, "bootstrap:test") as uow:
        accounts.add_first_admin(uow, "ana", "ana", "ana-password-123")
    with UnitOfWork(store.db, "bootstrap:test") as uow, pytest.raises(DomainError, match="only an admin can add"):
        accounts.add_first_admin(uow, "mallory", "dev", "mallory-password-1")


def test_init_creates_the_first_admin(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("QMS_DATABASE_URL", raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO("ana-password-123\n"))
    code = run(["init", str(tmp_path / "new"), "--no-git", "--admin", "ana", "--password-stdin"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "First admin ana created" in captured.out and "qms login --user ana" in captured.out
    text = (tmp_path / "new" / "qms.yaml").read_text()
    assert "trusted_single_user: false" in text and "token_days: 30" in text
    with open_context(tmp_path / "new" / "qms.yaml") as ctx:
        assert accounts.sign_in(ctx.db, "ana", "ana-password-123", address="t", channel="test").role == "admin"


def test_must_change_password_on_the_cli(qms, store: QmsContext, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    with UnitOfWork(store.db, "ana") as uow:
        accounts.add_user(uow, "ben", "ben", "approver", "first-password-ben")
    code, _, err = qms("token", "create", "--user", "ben", "--password-stdin", stdin="first-password-ben\n")
    assert code == 1 and "must change their password first" in err
    code, _, err = qms(
        "login",
        "--user",
        "ben",
        "--password-stdin",
        stdin="first-password-ben\nmy-own-password-ben\n",
    )
    assert code == 0, err
    assert "must choose a new password" in err
    with store.db.read() as s:
        user = s.get(UserRow, "ben")
    assert user.must_change_password is False
    [changed] = events(store, "user.password-changed", "user:ben")
    assert changed.actor == "ben" and json.loads(changed.after_json) == accounts.user_state(user)
    assert json.loads(changed.before_json)["must_change_password"] is True
    with pytest.raises(accounts.SignInFailed):
        accounts.sign_in(store.db, "ben", "first-password-ben", address="t", channel="test")
    code, out, _ = qms("whoami")
    assert code == 0 and "ben (Ben Brandt), account ben (approver)" in out


def test_admin_disables_and_resets_accounts(qms, store: QmsContext, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    admin = token(store.db, "ana", role="admin")
    ben = token(store.db, "ben")
    monkeypatch.setenv("QMS_TOKEN", admin)
    code, out, err = qms("user", "disable", "ben")
    assert code == 0 and "1 token(s) revoked" in out, err
    with pytest.raises(NotAuthorized, match="revoked"):
        tokens.authenticate(store.db, ben, source="test")
    with pytest.raises(accounts.SignInFailed):
        accounts.sign_in(store.db, "ben", password_of("ben"), address="t", channel="test")
    code, _, err = qms("user", "disable", "ana")
    assert code == 1 and "last active admin" in err
    assert qms("user", "enable", "ben")[0] == 0
    code, out, err = qms("user", "reset-password", "ben", "--password-stdin", stdin="temporary-password-1\n")
    assert code == 0 and "must change it" in out, err
    user = accounts.sign_in(store.db, "ben", "temporary-password-1", address="t", channel="test")
    assert user.must_change_password
    actions = [e.action for e in events(store) if e.record == "user:ben"]
    assert actions == ["user.created", "user.disabled", "user.enabled", "user.password-reset"]
    monkeypatch.setenv("QMS_TOKEN", token(store.db, "chloe"))
    code, _, err = qms("user", "reset-password", "ben", "--password-stdin", stdin="temporary-password-2\n")
    assert code == 1 and "only an admin may reset the password of the account ben" in err
    assert events(store, "account.refused", "security:user:ben")


def test_a_person_revokes_their_own_tokens_and_an_admin_any(
    qms, store: QmsContext, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    token(store.db, "ben")
    monkeypatch.setenv("QMS_TOKEN", token(store.db, "chloe"))
    with store.db.read() as s:
        ben_id = s.scalar(select(ApiTokenRow.id).where(ApiTokenRow.person == "ben"))
    code, _, err = qms("token", "revoke", str(ben_id))
    assert code == 1 and "only they or an admin may revoke it" in err
    assert events(store, "token.revoke-refused", f"security:token:{ben_id}")
    monkeypatch.setenv("QMS_TOKEN", token(store.db, "ana", role="admin"))
    code, out, err = qms("token", "revoke", str(ben_id))
    assert code == 0, err
    [revoked] = events(store, "token.revoked", f"token:{ben_id}")
    assert revoked.actor == "ana"
    code, out, _ = qms("token", "list")
    assert "revoked" in out and "active" in out


# ------------------------------------------------------------------ --as and the credential


def test_as_is_refused_outside_trusted_mode_with_the_login_hint(
    qms, store: QmsContext, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    capa = ("capa", "open", "--title", "Drift", "--source", "pms", "--owner", "ana")
    code, _, err = qms(*capa, "--as", "ana")
    assert code == 1 and "--as 'ana' is refused" in err and "qms login" in err
    monkeypatch.setenv("QMS_ACTOR", "ana")
    code, _, err = qms(*capa)
    assert code == 1 and "QMS_ACTOR 'ana' is refused" in err
    monkeypatch.delenv("QMS_ACTOR")
    code, _, err = qms(*capa, "--as", "qmsflow")
    assert code == 1 and "for system work" in err
    code, _, err = qms(*capa)
    assert code == 1 and "not signed in" in err
    code, _, err = qms("approve", "APR-2026-0001", "--decision", "approve", "--as", "ben")
    assert code == 1 and "is refused" in err
    with store.db.read() as s:
        assert s.scalars(select(RecordRow).where(RecordRow.kind != "ai-system")).all() == []  # no CAPA opened
    notes = events(store, "cli.as-refused")
    assert len(notes) == 1 and json.loads(notes[0].after_json)["count_in_window"] == 1  # aggregated
    assert qms("sync", "--as", "qmsflow")[0] == 0  # system work may name the system actor
    assert qms("document", "list")[0] == 0  # reading needs no credential
    monkeypatch.setenv("QMS_TOKEN", token(store.db, "chloe"))
    code, out, err = qms(*capa)
    assert code == 0, err
    [opened] = events(store, "capa.created")
    assert opened.actor == "chloe"


def test_trusted_single_user_mode_accepts_as(store: QmsContext, repo: Path, capsys: pytest.CaptureFixture) -> None:
    path = repo / "qms.yaml"
    path.write_text(path.read_text().replace("trusted_single_user: false", "trusted_single_user: true"))
    code = run(
        ["capa", "open", "--title", "Drift", "--source", "pms", "--owner", "ana", "--as", "dev", "-c", str(path)]
    )
    assert code == 0, capsys.readouterr().err
    [opened] = events(store, "capa.created")
    assert opened.actor == "dev"
    code = run(["capa", "open", "--title", "x", "--source", "pms", "--owner", "ana", "--as", "nobody", "-c", str(path)])
    assert code == 1 and "'nobody' is not a person" in capsys.readouterr().err


def test_login_keeps_a_user_only_credential_per_store_and_logout_revokes_it(
    qms, store: QmsContext, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    first_admin(qms)
    code, out, err = qms("login", "--user", "ana", "--password-stdin", "--days", "2", stdin="ana-password-123\n")
    assert code == 0, err
    assert "signed in as ana (ana, admin)" in out
    path = credentials.path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    entry = json.loads(path.read_text())["stores"][store.db.safe_url]
    assert entry["username"] == "ana" and entry["token"].startswith("qms_")
    code, out, _ = qms("whoami")
    assert code == 0 and "ana (Ana Alves), account ana (admin)" in out and "qms login" in out
    code, _, err = qms("capa", "open", "--title", "Drift", "--source", "pms", "--owner", "ana")
    assert code == 0, err
    assert events(store, "capa.created")[0].actor == "ana"
    # a second login replaces (and revokes) the first token
    assert qms("login", "--user", "ana", "--password-stdin", stdin="ana-password-123\n")[0] == 0
    with store.db.read() as s:
        states = [tokens.status_of(t) for t in s.scalars(select(ApiTokenRow).order_by(ApiTokenRow.id))]
    assert states == ["revoked", "active"]
    # QMS_TOKEN wins over the file
    monkeypatch.setenv("QMS_TOKEN", token(store.db, "ben"))
    assert "ben (Ben Brandt)" in qms("whoami")[1]
    monkeypatch.delenv("QMS_TOKEN")
    # a file others can read is refused, not used
    os.chmod(path, 0o644)
    code, _, err = qms("whoami")
    assert code == 1 and "can be read by other users" in err and "chmod 600" in err
    os.chmod(path, 0o600)
    code, out, _ = qms("logout")
    assert code == 0 and "revoked" in out
    assert store.db.safe_url not in json.loads(path.read_text())["stores"]
    with store.db.read() as s:
        assert all(
            tokens.status_of(t) == "revoked" for t in s.scalars(select(ApiTokenRow).where(ApiTokenRow.person == "ana"))
        )
    code, _, err = qms("whoami")
    assert code == 1 and "not signed in" in err


def test_token_file_and_stdin(qms, store: QmsContext, tmp_path: Path) -> None:  # noqa: ANN001
    value = token(store.db, "chloe")
    (tmp_path / "token").write_text(value + "\n")
    assert "chloe (Chloe Chen)" in qms("whoami", "--token-file", str(tmp_path / "token"))[1]
    assert "chloe (Chloe Chen)" in qms("whoami", "--token-file", "-", stdin=value + "\n")[1]
    code, _, err = qms("whoami", "--token-file", str(tmp_path / "missing"))
    assert code == 1 and "cannot read the token file" in err
    code, _, err = qms("approve", "APR-1", "--decision", "approve", "--token", value)  # never on the command line
    assert code == 2 and "no such option" in err.lower()


def test_expired_revoked_unknown_and_legacy_tokens_are_refused_and_recorded_aggregated(store: QmsContext) -> None:
    value = token(store.db, "ben")
    with store.db.engine.begin() as conn:  # as if issued a while ago
        conn.execute(update(ApiTokenRow).values(expires_at=datetime.now(UTC) - timedelta(minutes=1)))
    with pytest.raises(NotAuthorized, match="expired on"):
        tokens.authenticate(store.db, value, source="cli:test")
    with store.db.engine.begin() as conn:  # issued before tokens had an expiry (migration 0006)
        conn.execute(update(ApiTokenRow).values(expires_at=None))
    with pytest.raises(NotAuthorized, match="issued before tokens had an expiry"):
        tokens.authenticate(store.db, value, source="cli:test")
    fresh = token(store.db, "ben")
    with store.db.read() as s:
        fresh_id = s.scalar(select(ApiTokenRow.id).order_by(ApiTokenRow.id.desc()))
    with UnitOfWork(store.db, "ben") as uow:
        tokens.revoke(uow, fresh_id, "ben", by_admin=False)
    with pytest.raises(NotAuthorized, match="was revoked on"):
        tokens.authenticate(store.db, fresh, source="cli:test")
    before = trail_length(store)
    for n in range(30):
        with pytest.raises(NotAuthorized, match="unknown"):
            tokens.authenticate(store.db, f"qms_forged{n}", source="api:10.0.0.9")
    with pytest.raises(NotAuthorized, match="unknown"):
        tokens.authenticate(store.db, "\udcff" * 300, source="api:10.0.0.9")  # not even a token
    refused = [e for e in events(store, "token.refused") if e.seq > before]
    assert [json.loads(e.after_json)["count_in_window"] for e in refused] == [1, 10]  # 31 uses, 2 events
    assert {e.record for e in refused} == {"security:token:unknown"}


# ------------------------------------------------------------------ throttle


def test_100_wrong_passwords_lock_after_10_and_the_trail_grows_by_three(store: QmsContext) -> None:
    account(store.db, "ben")
    before = trail_length(store)
    outcomes = []
    for _ in range(100):
        try:
            accounts.sign_in(store.db, "ben", "wrong-password-x", address="10.0.0.7", channel="web")
        except accounts.SignInFailed:
            outcomes.append("failed")
        except accounts.TooManyAttempts as exc:
            outcomes.append("locked")
            assert 0 < exc.retry_after <= throttle.LOCK.total_seconds() + 1
    assert outcomes == ["failed"] * 10 + ["locked"] * 90
    with pytest.raises(accounts.TooManyAttempts, match="too many failed sign-ins"):  # the right one too
        accounts.sign_in(store.db, "ben", password_of("ben"), address="10.0.0.7", channel="web")
    with pytest.raises(accounts.TooManyAttempts):  # the account is locked from any address
        accounts.sign_in(store.db, "ben", password_of("ben"), address="10.0.0.8", channel="web")
    added = [e for e in events(store) if e.seq > before]
    assert [e.action for e in added] == ["sign-in.failed", "sign-in.locked", "sign-in.refused-while-locked"]
    assert {e.record for e in added} == {"security:sign-in:ben"}
    locked = json.loads(added[1].after_json)
    assert set(locked["locked_until"]) == {"user:ben", "address:10.0.0.7"}
    # once the lock is over, the right password works again and the account starts afresh
    with store.db.session() as s, s.begin():
        s.execute(update(SignInThrottleRow).values(locked_until=datetime.now(UTC) - timedelta(seconds=1)))
    assert accounts.sign_in(store.db, "ben", password_of("ben"), address="10.0.0.7", channel="web").username == "ben"
    assert throttle.state(store.db, "user:ben").failures == 0
    assert verify(store.db, store.anchors_file).ok


def test_an_address_spraying_user_names_is_locked_too(store: QmsContext) -> None:
    account(store.db, "ben")
    before = trail_length(store)
    for n in range(10):
        with pytest.raises(accounts.SignInFailed):
            accounts.sign_in(store.db, f"user{n}", "some-password-1", address="10.0.0.5", channel="web")
    with pytest.raises(accounts.TooManyAttempts):
        accounts.sign_in(store.db, "ben", password_of("ben"), address="10.0.0.5", channel="web")
    assert accounts.sign_in(store.db, "ben", password_of("ben"), address="10.0.0.6", channel="web")
    added = [(e.action, e.record) for e in events(store) if e.seq > before]
    assert added == [
        ("sign-in.failed-unknown-user", "security:sign-in"),  # 1st unknown name
        ("sign-in.failed-unknown-user", "security:sign-in"),  # 10th
        ("sign-in.address-locked", "security:sign-in"),
        ("sign-in.refused-while-locked", "security:sign-in"),
    ]


def test_many_names_from_many_addresses_grow_the_trail_logarithmically(
    store: QmsContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spoofed X-Forwarded-For per attempt and a new name per attempt: still O(log n) events."""
    monkeypatch.setattr(accounts, "check_password", lambda db, username, password: None)  # skip argon2: speed
    before = trail_length(store)
    for n in range(150):
        with pytest.raises(accounts.SignInFailed):
            accounts.sign_in(
                store.db, f"name{n}", "some-password-1", address=f"10.1.{n // 250}.{n % 250}", channel="web"
            )
    counts = [json.loads(e.after_json)["count_in_window"] for e in events(store) if e.seq > before]
    assert counts == [1, 10, 100]


def test_the_right_password_refunds_its_attempt(store: QmsContext) -> None:
    account(store.db, "ben")
    for _ in range(9):
        with pytest.raises(accounts.SignInFailed):
            accounts.sign_in(store.db, "ben", "wrong-password-x", address="10.0.0.4", channel="web")
    for _ in range(3):
        assert accounts.sign_in(store.db, "ben", password_of("ben"), address="10.0.0.4", channel="web")
    assert throttle.state(store.db, "address:10.0.0.4").failures == 9
    assert throttle.state(store.db, "user:ben").failures == 0


def test_parallel_guesses_cannot_overshoot_the_limit_and_argon2_runs_two_at_a_time(
    store: QmsContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    account(store.db, "ben")
    real = accounts._hasher
    lock = threading.Lock()
    state = {"now": 0, "max": 0, "checks": 0}

    class CountingHasher:
        """argon2's hasher, counting the checks running at once."""

        def verify(self, hashed: str, password: str) -> bool:
            with lock:
                state["now"] += 1
                state["checks"] += 1
                state["max"] = max(state["max"], state["now"])
            try:
                return real.verify(hashed, password)
            finally:
                with lock:
                    state["now"] -= 1

        def hash(self, password: str) -> str:
            return real.hash(password)

    monkeypatch.setattr(accounts, "_hasher", CountingHasher())
    barrier = threading.Barrier(30)
    outcomes: list[str] = []

    def guess() -> None:
        barrier.wait()
        try:
            accounts.sign_in(store.db, "ben", "wrong-password-x", address="10.0.0.3", channel="web")
        except accounts.SignInFailed:
            outcomes.append("failed")
        except accounts.TooManyAttempts:
            outcomes.append("locked")

    threads = [threading.Thread(target=guess) for _ in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(outcomes) == ["failed"] * 10 + ["locked"] * 20
    assert state["checks"] == 10  # no password check beyond the limit
    assert 1 <= state["max"] <= accounts.VERIFY_SLOTS


def test_demo_is_in_trusted_mode_with_ready_sign_ins(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("QMS_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    assert run(["demo", "demo"]) == 0
    out = capsys.readouterr().out
    assert "dashboard user 'ben' (approver), password 'demo-ben-password'" in out and "trusted single-user" in out
    assert "trusted_single_user: true" in (tmp_path / "demo" / "qms.yaml").read_text()
    cfg = str(tmp_path / "demo" / "qms.yaml")
    assert (
        run(["capa", "open", "--title", "Drift", "--source", "pms", "--owner", "ana", "--as", "chloe", "-c", cfg]) == 0
    )
    with open_context(cfg) as ctx:
        assert not accounts.sign_in(
            ctx.db, "ben", "demo-ben-password", address="t", channel="test"
        ).must_change_password
        with ctx.db.read() as s:
            opened = s.scalars(select(TrailEventRow).where(TrailEventRow.action == "capa.created")).one()
        assert opened.actor == "chloe"


def test_two_first_admins_at_once_make_one(store: QmsContext) -> None:
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def add(username: str, person: str) -> None:
        barrier.wait()
        try:
            with UnitOfWork(store.db, f"bootstrap:{username}") as uow:
                accounts.add_first_admin(uow, username, person, f"{username}-password-123")
            outcomes.append("created")
        except DomainError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=add, args=args) for args in (("ana", "ana"), ("mallory", "dev"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert (
        sorted(outcomes)[0]
        == "accounts exist already: only an admin can add users (sign in as an admin with 'qms login')"
    )
    assert outcomes.count("created") == 1
    with store.db.read() as s:
        assert len(s.scalars(select(UserRow)).all()) == 1


def test_stale_throttle_rows_are_cleaned_up_and_busy_rows_kept(
    store: QmsContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime.now(UTC)
    with store.db.session() as s, s.begin():
        s.add_all(
            [
                SignInThrottleRow(key="user:old", window_start=now - timedelta(hours=1), failures=3, refused=0),
                SignInThrottleRow(
                    key="user:was-locked",
                    window_start=now - timedelta(hours=1),
                    failures=10,
                    refused=4,
                    locked_until=now - timedelta(minutes=1),
                ),
                SignInThrottleRow(
                    key="user:locked",
                    window_start=now - timedelta(minutes=15),
                    failures=10,
                    refused=0,
                    locked_until=now + timedelta(minutes=5),
                ),
                SignInThrottleRow(key="user:recent", window_start=now - timedelta(minutes=2), failures=1, refused=0),
            ]
        )
    monkeypatch.setattr(throttle, "_last_cleanup", [datetime.min.replace(tzinfo=UTC)])
    throttle.note(store.db, "x", actor="test", action="test.note", ref="security:test", detail={})
    with store.db.read() as s:
        keys = set(s.scalars(select(SignInThrottleRow.key)))
    assert keys == {"user:locked", "user:recent", "note:x"}


def test_concurrent_failures_on_shared_rows_never_deadlock(store: QmsContext, monkeypatch: pytest.MonkeyPatch) -> None:
    """Known and unknown names, shared addresses, cleanup on every call: every attempt ends in a refusal
    a user can read, never a database error (PostgreSQL would abort one side of a lock cycle)."""
    account(store.db, "ben")
    monkeypatch.setattr(accounts, "check_password", lambda db, username, password: None)
    monkeypatch.setattr(throttle, "_CLEANUP_EVERY", timedelta(0))
    barrier = threading.Barrier(24)
    problems: list[BaseException] = []

    def attempt(n: int) -> None:
        barrier.wait()
        for round_ in range(6):
            try:
                accounts.sign_in(
                    store.db,
                    "ben" if n % 3 == 0 else f"ghost{n % 5}",
                    "x" * 12,
                    address=f"10.2.0.{(n + round_) % 3}",
                    channel="web",
                )
            except (accounts.SignInFailed, accounts.TooManyAttempts):
                pass
            except BaseException as exc:  # noqa: BLE001 - what the test is looking for
                problems.append(exc)

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert problems == []
    assert verify(store.db, store.anchors_file).ok


def test_qms_login_is_throttled_like_the_dashboard(qms, store: QmsContext) -> None:  # noqa: ANN001
    account(store.db, "ben")
    for _ in range(10):
        code, _, err = qms("login", "--user", "ben", "--password-stdin", stdin="wrong-password-x\n")
        assert code == 1 and "unknown user or wrong password" in err
    code, _, err = qms("login", "--user", "ben", "--password-stdin", stdin=password_of("ben") + "\n")
    assert code == 1 and "too many failed sign-ins: try again in 10 minutes" in err
    assert not credentials.path().exists() or store.db.safe_url not in credentials.path().read_text()
    assert [e.action for e in events(store) if e.record == "security:sign-in:ben"] == [
        "sign-in.failed",
        "sign-in.locked",
    ]
