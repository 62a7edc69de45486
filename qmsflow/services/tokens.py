"""Personal API tokens for the CLI and CI. Only the SHA-256 of a token is stored; it is shown once."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime

from sqlalchemy import select

from ..domain.approvals import NotAuthorized
from ..domain.errors import DomainError
from ..store.db import Database
from ..store.state import state_of
from ..store.tables import ApiTokenRow, PersonRow
from ..store.uow import UnitOfWork

PREFIX = "qms_"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(uow: UnitOfWork, person_id: str, name: str = "cli") -> str:
    person = uow.session.get(PersonRow, person_id)
    if person is None or not person.active:
        raise DomainError(f"{person_id!r} is not an active person of this QMS (run 'qms sync' after editing qms.yaml)")
    token = PREFIX + secrets.token_urlsafe(32)
    row = ApiTokenRow(person=person_id, name=name, token_hash=_digest(token), created_at=uow.now())
    uow.session.add(row)
    uow.session.flush()
    uow.record("token.created", f"token:{row.id}", None, state_of(row))
    uow.commit()
    return token


def authenticate(db: Database, token: str | None) -> str:
    """The person a token belongs to; ``NotAuthorized`` for a missing, unknown or revoked token."""
    if not token:
        raise NotAuthorized("no API token: pass --token or set QMS_TOKEN (create one with 'qms token create PERSON')")
    with db.session() as session, session.begin():
        row = session.scalar(select(ApiTokenRow).where(ApiTokenRow.token_hash == _digest(token.strip())))
        if row is None or row.revoked_at is not None:
            raise NotAuthorized("the API token is unknown or revoked")
        person = session.get(PersonRow, row.person)
        if person is None or not person.active:
            raise NotAuthorized(f"the API token belongs to {row.person}, who is no longer an active person")
        row.last_used_at = datetime.now(UTC)
        return row.person


def revoke(uow: UnitOfWork, token_id: int) -> None:
    row = uow.session.get(ApiTokenRow, token_id)
    if row is None:
        raise DomainError(f"no token {token_id}")
    if row.revoked_at is None:
        before = state_of(row)
        row.revoked_at = uow.now()
        uow.record("token.revoked", f"token:{row.id}", before, state_of(row))
    uow.commit()


def list_tokens(db: Database) -> list[ApiTokenRow]:
    with db.read() as session:
        return list(session.scalars(select(ApiTokenRow).order_by(ApiTokenRow.id)))
