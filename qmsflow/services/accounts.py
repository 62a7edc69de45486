"""Web accounts (argon2-hashed passwords), roles and server-side sessions."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select

from ..domain.errors import DomainError
from ..store.db import Database
from ..store.state import state_of
from ..store.tables import PersonRow, UserRow, WebSessionRow
from ..store.uow import UnitOfWork

ROLES = ("viewer", "approver", "admin")
SESSION_HOURS = 8
_hasher = PasswordHasher()
# verifying against this keeps the time of "no such user" equal to "wrong password"
_DUMMY_HASH = _hasher.hash("not a password of anyone")


@dataclass(frozen=True)
class SignedIn:
    username: str
    person: str
    name: str
    role: str
    csrf_token: str

    def may(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


def add_user(uow: UnitOfWork, username: str, person: str, role: str, password: str) -> None:
    if role not in ROLES:
        raise DomainError(f"role {role!r} is not allowed (allowed: {', '.join(ROLES)})")
    if len(password) < 12:
        raise DomainError("the password must have at least 12 characters")
    if uow.session.get(PersonRow, person) is None:
        raise DomainError(f"{person!r} is not a person of this QMS (run 'qms sync' after editing qms.yaml)")
    if uow.session.get(UserRow, username) is not None:
        raise DomainError(f"user {username!r} exists already")
    user = UserRow(
        username=username, person=person, role=role, password_hash=_hasher.hash(password), created_at=uow.now()
    )
    uow.session.add(user)
    uow.record("user.created", f"user:{username}", None, state_of(user))  # the password hash only as a SHA-256
    uow.commit()


def check_password(db: Database, username: str, password: str) -> UserRow | None:
    with db.read() as session:
        user = session.get(UserRow, username)
    try:
        _hasher.verify(user.password_hash if user and user.disabled_at is None else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    return user if user and user.disabled_at is None else None


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def start_session(db: Database, username: str, now: datetime | None = None) -> str:
    """A new session; returns the cookie value (only its hash is stored)."""
    now = now or datetime.now(UTC)
    cookie = secrets.token_urlsafe(32)
    with db.session() as session, session.begin():
        session.execute(delete(WebSessionRow).where(WebSessionRow.expires_at < now))
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
    return SignedIn(user.username, user.person, name, user.role, web_session.csrf_token)


def end_session(db: Database, cookie: str | None) -> None:
    if cookie:
        with db.session() as session, session.begin():
            session.execute(delete(WebSessionRow).where(WebSessionRow.id_hash == _digest(cookie)))


def expire_session(db: Database, cookie: str) -> None:
    """Tests and admins: make a session expired now."""
    from sqlalchemy import update

    with db.session() as session, session.begin():
        session.execute(
            update(WebSessionRow)
            .where(WebSessionRow.id_hash == _digest(cookie))
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
