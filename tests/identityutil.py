"""Accounts and tokens for tests, made through the same services as `qms user add` and `qms login`."""

from __future__ import annotations

from qmsflow.services import accounts, tokens
from qmsflow.store.db import Database
from qmsflow.store.tables import UserRow
from qmsflow.store.uow import UnitOfWork


def password_of(username: str) -> str:
    return f"{username}-password-123"


def account(db: Database, username: str, person: str | None = None, role: str = "approver") -> str:
    """An account whose password is already the person's own (no change needed); returns the password."""
    with db.read() as session:
        exists = session.get(UserRow, username) is not None
    if not exists:
        with UnitOfWork(db, "test-setup") as uow:
            accounts.add_user(
                uow,
                username,
                person or username,
                role,
                password_of(username),
                must_change=False,
                password_set_by=person or username,  # the person's own password, as after a first sign-in
            )
    return password_of(username)


def token(db: Database, username: str, person: str | None = None, role: str = "approver", days: int = 30) -> str:
    """A personal token of ``username`` (account created if missing), issued with its password."""
    password = account(db, username, person, role)
    user = accounts.sign_in(db, username, password, address="test", channel="test")
    with UnitOfWork(db, user.person) as uow:
        value, _ = tokens.issue(uow, user, "test", days)
    return value


def sign(uow: UnitOfWork, config, request_id: str, person: str, decision="approve", comment: str | None = None):  # noqa: ANN001, ANN201
    """Sign ``request_id`` as ``person`` through the shared signing service, the way a channel does.

    Tests of procedures sign through this one helper, so that how a signer proves who they are is decided
    in one place: the person's account (made here, with a password of their own, when they have none)
    signs with a personal token's credential, like ``qms approve``.
    """
    from qmsflow.domain.approvals import Decision, Method
    from qmsflow.services import approvals
    from qmsflow.services.signers import Credential

    names = accounts.active_accounts_of(uow.session, person)
    if not names:
        accounts.add_user(
            uow, person, person, "approver", password_of(person), must_change=False, password_set_by=person
        )
        names = [person]
    choice = decision if isinstance(decision, Decision) else Decision(decision)
    credential = Credential(Method.CLI, "token:test", f"test:{person}", username=names[0])
    return approvals.decide(uow, config, request_id, credential, choice, comment)
