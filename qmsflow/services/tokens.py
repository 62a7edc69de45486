"""Personal API tokens for the CLI, CI and the approvals API.

A token is issued only to the person of the account whose password was just checked (``qms login``,
``qms token create``), carries an expiry (``security.token_days``, at most ``MAX_TOKEN_DAYS``), and
is stored only as a SHA-256; it is shown once. Issuance and revocation append a trail event on
``token:<id>`` with the full row state (the stored hash again only as its SHA-256); refused uses of a
bad token are aggregated notes on ``security:token:…`` (see ``throttle.note``).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from ..domain import limits
from ..domain.approvals import NotAuthorized
from ..domain.errors import DomainError
from ..domain.organisation import MAX_TOKEN_DAYS
from ..store.db import Database
from ..store.tables import ApiTokenRow, PersonRow, UserRow
from ..store.uow import UnitOfWork
from . import throttle
from .common import row_values

PREFIX = "qms_"
MAX_TOKEN_LENGTH = 200
LAST_USED_RESOLUTION = timedelta(minutes=1)  # last_used_at is written at most this often per token


@dataclass(frozen=True)
class TokenIdentity:
    """Who a valid token authenticates."""

    token_id: int
    person: str
    name: str  # the person's printed name
    username: str
    role: str
    expires_at: datetime
    token_name: str


@dataclass(frozen=True)
class Issued:
    """A token just issued (its value is returned beside this, once)."""

    id: int
    person: str
    username: str
    name: str
    expires_at: datetime


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_state(row: ApiTokenRow) -> dict[str, Any]:
    """The full state of a token row for its trail event: the stored hash only as a SHA-256;
    ``last_used_at`` is operational and left out."""
    state = row_values(row, exclude=("token_hash", "last_used_at"))
    state["token_hash_sha256"] = _digest(row.token_hash)
    return state


def issue(uow: UnitOfWork, user: UserRow, name: str, days: int) -> tuple[str, Issued]:
    """A new token for ``user``'s person; the caller checked the user's password just now."""
    if not 1 <= days <= MAX_TOKEN_DAYS:
        raise DomainError(f"a token lasts 1 to {MAX_TOKEN_DAYS} days, not {days}")
    limits.check_text("token name", name, limits.TOKEN_NAME)
    if not name:
        raise DomainError("the token name must be 1 to 100 printable characters")
    account = uow.session.get(UserRow, user.username)
    if account is None or account.disabled_at is not None:
        raise NotAuthorized(f"the account {user.username} is disabled")
    if account.must_change_password:
        raise NotAuthorized(
            f"{user.username} must change their password first ('qms login' asks for a new one, or the dashboard)"
        )
    person = uow.session.get(PersonRow, account.person)
    if person is None or not person.active:
        raise NotAuthorized(f"{account.person!r} is not an active person of this QMS")
    token = PREFIX + secrets.token_urlsafe(32)
    now = uow.now()
    row = ApiTokenRow(
        person=account.person,
        username=account.username,
        name=name,
        token_hash=_digest(token),
        created_at=now,
        expires_at=now + timedelta(days=days),
    )
    uow.session.add(row)
    uow.session.flush()
    uow.record("token.created", f"token:{row.id}", None, token_state(row))
    issued = Issued(row.id, row.person, row.username, row.name, row.expires_at)
    uow.commit()
    return token, issued


def authenticate(db: Database, token: str | None, *, source: str) -> TokenIdentity:
    """The identity of a valid token; ``NotAuthorized`` (recorded, aggregated per ``source``) for a
    missing, malformed, unknown, revoked or expired token, or one of a disabled account."""
    if not token or not token.strip():
        raise NotAuthorized("no API token")
    token = token.strip()
    now = datetime.now(UTC)
    problem, row_id = None, None
    with db.session() as session, session.begin():
        row = None
        if len(token) <= MAX_TOKEN_LENGTH and token.isascii():
            row = session.scalar(select(ApiTokenRow).where(ApiTokenRow.token_hash == _digest(token)))
        user = session.get(UserRow, row.username) if row is not None and row.username else None
        person = session.get(PersonRow, row.person) if row is not None else None
        if row is None:
            problem = "the API token is unknown (mistyped, or from another store)"
        else:
            row_id = row.id
            if row.revoked_at is not None:
                problem = f"the API token {row.id} ({row.name}) was revoked on {row.revoked_at:%Y-%m-%d %H:%M} UTC"
            elif row.expires_at is None or row.username is None:
                problem = f"the API token {row.id} was issued before tokens had an expiry and is no longer accepted"
            elif row.expires_at <= now:
                problem = f"the API token {row.id} ({row.name}) expired on {row.expires_at:%Y-%m-%d %H:%M} UTC"
            elif user is None or user.disabled_at is not None:
                problem = f"the API token {row.id} belongs to the account {row.username}, which is disabled"
            elif person is None or not person.active:
                problem = f"the API token {row.id} belongs to {row.person}, who is no longer an active person"
        if problem is None:
            if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
                row.last_used_at = now
            identity = TokenIdentity(
                row.id, row.person, person.name, user.username, user.role, row.expires_at, row.name
            )
    if problem is not None:
        ref = f"security:token:{row_id if row_id is not None else 'unknown'}"
        throttle.note(
            db,
            f"token:{source[:100]}",
            actor=source[:200],
            action="token.refused",
            ref=ref,
            detail={"source": source[:200], "reason": problem},
        )
        raise NotAuthorized(problem)
    return identity


def revoke(uow: UnitOfWork, token_id: int, by_person: str, by_admin: bool) -> ApiTokenRow:
    """Revoke a token: its own person may, an admin may revoke any. A refusal is recorded."""
    row = uow.session.get(ApiTokenRow, token_id, with_for_update=True)
    if row is None:
        raise DomainError(f"no token {token_id} (see 'qms token list')")
    if row.person != by_person and not by_admin:
        uow.record(
            "token.revoke-refused",
            f"security:token:{token_id}",
            None,
            {"token_id": token_id, "owner": row.person, "reason": "only its own person or an admin may revoke it"},
        )
        uow.commit()
        raise NotAuthorized(f"token {token_id} belongs to {row.person}: only they or an admin may revoke it")
    if row.revoked_at is None:
        before = token_state(row)
        row.revoked_at = uow.now()
        uow.record("token.revoked", f"token:{row.id}", before, token_state(row))
    uow.commit()
    return row


def revoke_value(uow: UnitOfWork, token: str) -> int | None:
    """Revoke the token with this value, if it is live (``qms logout``); returns its id. No commit."""
    row = uow.session.scalar(select(ApiTokenRow).where(ApiTokenRow.token_hash == _digest(token.strip())))
    if row is None or row.revoked_at is not None:
        return None
    before = token_state(row)
    row.revoked_at = uow.now()
    uow.record("token.revoked", f"token:{row.id}", before, token_state(row))
    return row.id


def revoke_all_of(uow: UnitOfWork, username: str) -> list[int]:
    """Revoke every live token of an account (its password was reset, or it was disabled); no commit."""
    rows = uow.session.scalars(
        select(ApiTokenRow).where(ApiTokenRow.username == username, ApiTokenRow.revoked_at.is_(None))
    ).all()
    for row in rows:
        before = token_state(row)
        row.revoked_at = uow.now()
        uow.record("token.revoked", f"token:{row.id}", before, token_state(row))
    return [row.id for row in rows]


def list_tokens(db: Database, person: str | None = None) -> list[ApiTokenRow]:
    with db.read() as session:
        query = select(ApiTokenRow).order_by(ApiTokenRow.id)
        if person:
            query = query.where(ApiTokenRow.person == person)
        return list(session.scalars(query))


def status_of(row: ApiTokenRow, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at is None or row.username is None:
        return "legacy (refused)"
    return "expired" if row.expires_at <= now else "active"
