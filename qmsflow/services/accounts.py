"""Accounts (argon2-hashed passwords), roles, sign-in and server-side sessions.

Every change of an account appends one trail event on ``user:<username>`` whose ``after`` is the
full state of the row, with the argon2 hash replaced by its SHA-256 (``user_state``): never a secret.
Sign-in goes through the throttle (``throttle.py``); argon2 checks run at most ``VERIFY_SLOTS`` at a
time in a process, whoever asks.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from ..domain import limits
from ..domain.approvals import Account
from ..domain.errors import DomainError
from ..store.db import Database
from ..store.tables import IntegrationStateRow, PersonRow, UserRow, WebSessionRow
from ..store.uow import UnitOfWork
from . import throttle
from .common import row_values
from .throttle import TooManyAttempts

__all__ = ["TooManyAttempts"]

ROLES = ("viewer", "approver", "admin")
SESSION_HOURS = 8
MAX_SESSIONS = 3  # a sign-in ends the user's oldest sessions beyond this many
MIN_PASSWORD, MAX_PASSWORD = 12, 1024
VERIFY_SLOTS = 2  # argon2 checks at once per process (each takes ~50 ms and 64 MiB)
VERIFY_WAIT_S = 20

_hasher = PasswordHasher()
# verifying against this keeps the time of "no such user" equal to "wrong password"
_DUMMY_HASH = _hasher.hash("not a password of anyone")
_slots = threading.BoundedSemaphore(VERIFY_SLOTS)


class SignInFailed(DomainError):
    """Unknown user, wrong password or disabled account: one message for all three."""


class Busy(DomainError):
    """Too many password checks at once; try again in a moment."""

    retry_after = 5


@dataclass(frozen=True)
class SignedIn:
    username: str
    person: str
    name: str
    role: str
    csrf_token: str
    must_change_password: bool = False

    def may(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


def may(role: str, needed: str) -> bool:
    return ROLES.index(role) >= ROLES.index(needed)


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def user_state(row: UserRow) -> dict[str, Any]:
    """The full state of an account for its trail event: the argon2 hash only as a SHA-256."""
    state = row_values(row, exclude=("password_hash",))
    state["password_hash_sha256"] = _digest(row.password_hash)
    return state


def check_new_password(password: str, username: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise DomainError(f"the password must have at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise DomainError(f"the password must have at most {MAX_PASSWORD} characters")
    if password.strip().lower() == username.lower():
        raise DomainError("the password must not be the user name")


def any_users(db: Database) -> bool:
    with db.read() as session:
        return session.scalar(select(UserRow.username).limit(1)) is not None


def add_user(
    uow: UnitOfWork,
    username: str,
    person: str,
    role: str,
    password: str,
    *,
    must_change: bool = True,
    password_set_by: str | None = None,
) -> UserRow:
    """Create an account: one active account per person (a second one is refused, naming the first).

    The password is recorded as set by ``password_set_by`` (default: the unit of work's actor, the admin
    who creates the account). An account whose password its person did not set cannot sign
    (``domain.approvals.check_account_may_sign``) until that person has changed it.
    """
    limits.check_text("user name", username, limits.ID)
    if role not in ROLES:
        raise DomainError(f"role {role!r} is not allowed (allowed: {', '.join(ROLES)})")
    if not username or len(username) > 64 or not username.isprintable() or username != username.strip():
        raise DomainError("the user name must be 1 to 64 printable characters without surrounding spaces")
    check_new_password(password, username)
    person_row = uow.session.get(PersonRow, person)
    if person_row is None or not person_row.active:
        raise DomainError(f"{person!r} is not a person of this QMS (run 'qms sync' after editing qms.yaml)")
    uow.trail.lock()  # serialised with every writer: two accounts for one person cannot both see none
    if uow.session.get(UserRow, username) is not None:
        raise DomainError(f"user {username!r} exists already")
    others = active_accounts_of(uow.session, person)
    if others:
        raise DomainError(
            f"{person} has the active account {others[0]!r} already: one account per person "
            f"(disable it first with 'qms user disable {others[0]}', or reset its password)"
        )
    now = uow.now()
    set_by = password_set_by or uow.actor
    row = UserRow(
        username=username,
        person=person,
        role=role,
        password_hash=_hash(password),
        created_at=now,
        must_change_password=must_change,
        password_changed_at=None if must_change else now,
        password_set_by=set_by,
    )
    uow.session.add(row)
    uow.record("user.created", f"user:{username}", None, user_state(row))
    uow.commit()
    return row


def add_first_admin(uow: UnitOfWork, username: str, person: str, password: str) -> UserRow:
    """The first account of an empty store: an admin, allowed without any credential, once. Its person
    types the password (``qms init --admin``), so it is their own."""
    uow.trail.lock()  # serialise with every writer: two first admins cannot both see an empty table
    if uow.session.scalar(select(func.count()).select_from(UserRow)):
        raise DomainError("accounts exist already: only an admin can add users (sign in as an admin with 'qms login')")
    return add_user(uow, username, person, "admin", password, must_change=False, password_set_by=person)


def active_accounts_of(session: Session, person: str) -> list[str]:
    """The user names of the person's accounts that are not disabled (one, normally)."""
    return list(
        session.scalars(
            select(UserRow.username)
            .where(UserRow.person == person, UserRow.disabled_at.is_(None))
            .order_by(UserRow.created_at, UserRow.username)
        )
    )


def signing_account(session: Session, *, username: str | None = None, person: str | None = None) -> Account | None:
    """The account a signature would be made with, as the domain's signing rule sees it: the named account,
    or else the person's active account (Slack, trusted single-user mode); a person whose accounts are all
    disabled gets the last of them (refused as disabled, the reason a user can act on). None when there is none."""
    if username is not None:
        row = session.get(UserRow, username, populate_existing=True)
    else:
        names = active_accounts_of(session, person or "")
        if names:
            row = session.get(UserRow, names[0], populate_existing=True)
        else:
            row = session.scalars(
                select(UserRow)
                .where(UserRow.person == (person or ""))
                .order_by(UserRow.disabled_at.desc(), UserRow.created_at.desc())
                .limit(1)
                .execution_options(populate_existing=True)
            ).first()
    if row is None:
        return None
    others = [u for u in active_accounts_of(session, row.person) if u != row.username]
    return Account(
        username=row.username,
        person=row.person,
        role=row.role,
        disabled=row.disabled_at is not None,
        must_change_password=bool(row.must_change_password),
        password_set_by=row.password_set_by,
        others_active=others,
    )


def _load(uow: UnitOfWork, username: str) -> UserRow:
    row = uow.session.get(UserRow, username, with_for_update=True)
    if row is None:
        raise DomainError(f"no user {username!r} (see 'qms user list')")
    return row


def _admins_left(uow: UnitOfWork, without: str) -> int:
    return uow.session.scalar(
        select(func.count())
        .select_from(UserRow)
        .where(UserRow.role == "admin", UserRow.disabled_at.is_(None), UserRow.username != without)
    )


def change_password(uow: UnitOfWork, username: str, new_password: str) -> None:
    """Set a password the user chose; the caller checked the current one with ``sign_in`` (and ends
    the user's other web sessions with ``end_other_sessions``)."""
    row = _load(uow, username)
    check_new_password(new_password, username)
    if _verify(row.password_hash, new_password):
        raise DomainError("the new password must differ from the current one")
    before = user_state(row)
    row.password_hash = _hash(new_password)
    row.must_change_password = False
    row.password_changed_at = uow.now()
    row.password_set_by = row.person  # checked with the current password by the caller: the person's own
    uow.record("user.password-changed", f"user:{username}", before, user_state(row))
    uow.commit()


def reset_password(uow: UnitOfWork, username: str, new_password: str) -> list[int]:
    """Admin: a new first password that must be changed at the next sign-in. Ends the user's sessions,
    revokes their tokens (returns the revoked ids) and lifts a sign-in lock of the account."""
    from .tokens import revoke_all_of

    row = _load(uow, username)
    check_new_password(new_password, username)
    before = user_state(row)
    row.password_hash = _hash(new_password)
    row.must_change_password = True
    row.password_changed_at = uow.now()
    row.password_set_by = uow.actor
    uow.record("user.password-reset", f"user:{username}", before, user_state(row))
    revoked = revoke_all_of(uow, username)
    uow.session.execute(delete(WebSessionRow).where(WebSessionRow.username == username))
    uow.commit()
    throttle.clear(uow.db, f"user:{username}")
    return revoked


def set_disabled(uow: UnitOfWork, username: str, disabled: bool) -> list[int]:
    """Admin: disable (sessions ended, tokens revoked) or enable an account. The last admin stays."""
    from .tokens import revoke_all_of

    uow.trail.lock()  # serialised: two admins disabling each other cannot leave none
    row = _load(uow, username)
    if disabled and row.role == "admin" and _admins_left(uow, username) == 0:
        raise DomainError(f"{username} is the last active admin: make another admin first")
    if (row.disabled_at is not None) == disabled:
        raise DomainError(f"user {username} is {'disabled' if disabled else 'enabled'} already")
    others = [u for u in active_accounts_of(uow.session, row.person) if u != username]
    if not disabled and others:
        raise DomainError(
            f"{row.person} has the active account {others[0]!r}: one account per person (disable {others[0]} first)"
        )
    before = user_state(row)
    row.disabled_at = uow.now() if disabled else None
    uow.record("user.disabled" if disabled else "user.enabled", f"user:{username}", before, user_state(row))
    revoked: list[int] = []
    if disabled:
        revoked = revoke_all_of(uow, username)
        uow.session.execute(delete(WebSessionRow).where(WebSessionRow.username == username))
    uow.commit()
    return revoked


# ------------------------------------------------------------------ passwords and sign-in


def _verify(password_hash: str | None, password: str) -> bool:
    """One argon2 check, at most ``VERIFY_SLOTS`` at a time in this process."""
    if not _slots.acquire(timeout=VERIFY_WAIT_S):
        raise Busy("too many sign-ins are being checked right now: try again in a few seconds")
    try:
        _hasher.verify(password_hash or _DUMMY_HASH, password)
        return password_hash is not None
    except (VerificationError, InvalidHashError):
        return False
    finally:
        _slots.release()


def _hash(password: str) -> str:
    """An argon2 hash, in the same slots as the checks (hashing costs as much)."""
    if not _slots.acquire(timeout=VERIFY_WAIT_S):
        raise Busy("too many passwords are being checked right now: try again in a few seconds")
    try:
        return _hasher.hash(password)
    finally:
        _slots.release()


def check_password(db: Database, username: str, password: str) -> UserRow | None:
    """The active account if the password is right (no throttle: for re-authentication of a signed-in
    user, e.g. to sign; use ``sign_in`` for anything that starts a session or issues a token)."""
    with db.read() as session:
        user = session.get(UserRow, username)
    active = user is not None and user.disabled_at is None
    ok = _verify(user.password_hash if active else None, password)
    return user if ok and active else None


def sign_in(db: Database, username: str, password: str, *, address: str, channel: str) -> UserRow:
    """Check a user name and password, throttled per account and per client ``address``.

    Raises ``TooManyAttempts`` (with ``retry_after``) before any password is checked when the account
    or the address is locked, ``SignInFailed`` for a wrong password, unknown user or disabled account
    (aggregated in the trail), ``Busy`` when too many checks run at once. The returned account may
    have ``must_change_password`` set: the caller asks for a new password before anything else.
    """
    username, address = username[:64], address[:100]
    actor = f"{channel}:{address}"
    detail = {"username": username, "address": address, "channel": channel}
    with db.read() as session:
        known = session.get(UserRow, username) is not None
    attempt = throttle.reserve(db, username, address, known=known, actor=actor, detail=detail)
    try:
        user = check_password(db, username, password)
    except Busy:
        throttle.refund(db, attempt)  # not checked: not a failure
        raise
    if user is None:
        throttle.failed(db, attempt, actor=actor, detail=detail)
        raise SignInFailed("unknown user or wrong password")
    throttle.succeeded(db, attempt)
    return user


def confirm_password(db: Database, username: str, password: str, *, address: str, channel: str) -> bool:
    """Re-authentication of a signed-in user (e.g. to sign): the password checked through the same
    throttle as a sign-in, so a stolen session is no password oracle. ``TooManyAttempts``/``Busy`` pass."""
    try:
        sign_in(db, username, password, address=address, channel=channel)
    except SignInFailed:
        return False
    return True


# ------------------------------------------------------------------ the sign-in form's CSRF token

LOGIN_FORM_MAX_AGE = timedelta(hours=2)
_LOGIN_FORM_KEY = "web.login-form-key"


def login_form_key(db: Database) -> bytes:
    """The HMAC key of sign-in form tokens, made once per records store (so every web process agrees)."""
    with db.read() as session:
        row = session.get(IntegrationStateRow, _LOGIN_FORM_KEY)
    if row is None:
        insert = pg_insert if db.dialect == "postgresql" else sqlite_insert
        with db.session() as session, session.begin():
            session.execute(
                insert(IntegrationStateRow.__table__)
                .values(name=_LOGIN_FORM_KEY, value={"key": secrets.token_hex(32)})
                .on_conflict_do_nothing(index_elements=["name"])
            )
        with db.read() as session:
            row = session.get(IntegrationStateRow, _LOGIN_FORM_KEY)
    return bytes.fromhex(row.value["key"])


def new_login_form_token(key: bytes, now: datetime | None = None) -> str:
    """A signed double-submit token: sent as a cookie and as a hidden field of the sign-in form."""
    issued = int((now or datetime.now(UTC)).timestamp())
    body = f"{issued}.{secrets.token_urlsafe(16)}"
    return f"{body}.{hmac.new(key, body.encode(), hashlib.sha256).hexdigest()}"


def login_form_token_ok(key: bytes, cookie: str | None, field: str | None, now: datetime | None = None) -> bool:
    """The form's token equals the cookie's, carries our signature and is not older than two hours."""
    if not cookie or not field or len(field) > 200:
        return False
    if not hmac.compare_digest(cookie.encode("utf-8", "replace"), field.encode("utf-8", "replace")):
        return False
    body, _, signature = field.rpartition(".")
    issued, _, _nonce = body.partition(".")
    expected = hmac.new(key, body.encode("utf-8", "replace"), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")) or not issued.isdigit():
        return False
    age = (now or datetime.now(UTC)).timestamp() - int(issued)
    return 0 <= age <= LOGIN_FORM_MAX_AGE.total_seconds()


# ------------------------------------------------------------------ web sessions


def start_session(db: Database, username: str, now: datetime | None = None, replaces: str | None = None) -> str:
    """A new session; returns the cookie value (only its hash is stored).

    The session of ``replaces`` (the cookie presented at sign-in) is ended, and so are the user's
    oldest sessions beyond ``MAX_SESSIONS``.
    """
    now = now or datetime.now(UTC)
    cookie = secrets.token_urlsafe(32)
    with db.session() as session, session.begin():
        session.execute(delete(WebSessionRow).where(WebSessionRow.expires_at < now))
        if replaces:
            session.execute(delete(WebSessionRow).where(WebSessionRow.id_hash == _digest(replaces)))
        keep = session.scalars(
            select(WebSessionRow.id_hash)
            .where(WebSessionRow.username == username)
            .order_by(WebSessionRow.created_at.desc(), WebSessionRow.id_hash)
            .limit(MAX_SESSIONS - 1)
        ).all()
        session.execute(
            delete(WebSessionRow).where(WebSessionRow.username == username, WebSessionRow.id_hash.not_in(keep))
        )
        session.add(
            WebSessionRow(
                id_hash=_digest(cookie),
                username=username,
                csrf_token=secrets.token_urlsafe(32),
                created_at=now,
                expires_at=now + timedelta(hours=SESSION_HOURS),
            )
        )
    return cookie


def session_user(db: Database, cookie: str | None, now: datetime | None = None) -> SignedIn | None:
    """The signed-in user of a cookie; None when missing, unknown (tampered) or expired."""
    if not cookie:
        return None
    now = now or datetime.now(UTC)
    with db.read() as session:
        row = session.execute(
            select(WebSessionRow, UserRow, PersonRow.name)
            .join(UserRow, UserRow.username == WebSessionRow.username)
            .join(PersonRow, PersonRow.id == UserRow.person)
            .where(WebSessionRow.id_hash == _digest(cookie))
        ).first()
    if row is None:
        return None
    web_session, user, name = row
    if web_session.expires_at <= now or user.disabled_at is not None:
        return None
    return SignedIn(
        user.username, user.person, name, user.role, web_session.csrf_token, bool(user.must_change_password)
    )


def end_session(db: Database, cookie: str | None) -> None:
    if cookie:
        with db.session() as session, session.begin():
            session.execute(delete(WebSessionRow).where(WebSessionRow.id_hash == _digest(cookie)))


def end_other_sessions(db: Database, username: str, keep_cookie: str | None) -> None:
    """After a password change: every other session of the user ends."""
    with db.session() as session, session.begin():
        query = delete(WebSessionRow).where(WebSessionRow.username == username)
        if keep_cookie:
            query = query.where(WebSessionRow.id_hash != _digest(keep_cookie))
        session.execute(query)


def expire_session(db: Database, cookie: str) -> None:
    """Tests and admins: make a session expired now."""
    from sqlalchemy import update

    with db.session() as session, session.begin():
        session.execute(
            update(WebSessionRow)
            .where(WebSessionRow.id_hash == _digest(cookie))
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )


def list_users(db: Database) -> list[UserRow]:
    with db.read() as session:
        return list(session.scalars(select(UserRow).order_by(UserRow.username)))
