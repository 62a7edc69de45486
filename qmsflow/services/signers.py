"""Who signs: a channel's credential resolved to one person's one account, by one rule (issue 22).

Every channel that signs (dashboard, approvals API, ``qms approve``, Slack) builds a ``Credential``
from what it authenticated and hands it to ``approvals.decide``, which resolves it here and applies
``domain.approvals.check_account_may_sign``: the same rule whatever the channel says about roles.

- dashboard: the session's account, its password entered again (``auth="password"``);
- API and CLI: the account of a personal token (``auth="token:<id>"``);
- Slack: the Slack user mapped to a person, and that person's single active account (``auth="slack:<U…>"``);
- trusted single-user mode (``--as``, demos only): the named person's active account (``auth="trusted:<os user>"``),
  refused unless ``security.trusted_single_user`` is on.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..domain.approvals import Method, NotAuthorized, check_account_may_sign
from ..domain.capabilities import declare
from ..domain.organisation import QmsConfig
from ..store.tables import PersonRow
from ..store.uow import UnitOfWork
from .accounts import signing_account

SIGNING_ACCOUNTS = declare(
    "approval.signing_accounts",
    "qmsflow accepts a signature only under the signer's own authenticated account: in the dashboard with "
    "the password entered again, with a personal API token (`qms approve`), or from Slack by the Slack user "
    "mapped to the person (with `approvals.slack_signing: reauth`, a Slack click only opens the dashboard's "
    "signing page). The account must be the person's only active account, not disabled, with the approver "
    "or admin role, and with a password the person set themselves; any other attempt is refused and "
    "recorded in the audit trail.",
    proved_by=(
        "tests/integration/test_web.py::test_approve_from_the_inbox_with_the_password_again",
        "tests/integration/test_signatures_bound.py::test_an_account_an_admin_made_cannot_sign_until_its_person_sets_a_password",
        "tests/integration/test_signed_content.py::test_reauth_mode_signs_only_in_the_dashboard",
    ),
    module=__name__,
)


@dataclass(frozen=True)
class Credential:
    """What a channel authenticated: an account (``username``), or a person whose account signs (``person``)."""

    method: Method
    auth: str  # "password", "token:7", "slack:U123", "trusted:ana"
    claimed: str  # how the channel names the actor, for refusals ("web:ana", "token:7", "slack:U123")
    username: str | None = None
    person: str | None = None

    @classmethod
    def web(cls, username: str) -> Credential:
        return cls(Method.WEB, "password", f"web:{username}", username=username)

    @classmethod
    def token(cls, method: Method, username: str, token_id: int) -> Credential:
        return cls(method, f"token:{token_id}", f"token:{token_id}", username=username)

    @classmethod
    def slack(cls, slack_user: str, person: str | None) -> Credential:
        return cls(Method.SLACK, f"slack:{slack_user}", f"slack:{slack_user}", person=person)

    @classmethod
    def trusted(cls, person: str, os_user: str) -> Credential:
        return cls(Method.CLI, f"trusted:{os_user}", f"trusted:{os_user}", person=person)

    @property
    def is_trusted(self) -> bool:
        return self.auth.startswith("trusted:")


@dataclass(frozen=True)
class Signer:
    person: str
    name: str
    account: str
    auth: str


def claimed_person(uow: UnitOfWork, credential: Credential) -> str | None:
    """The person a credential names (for recording a refusal), before any rule is applied."""
    if credential.person is not None:
        return credential.person
    account = signing_account(uow.session, username=credential.username) if credential.username else None
    return account.person if account else None


def resolve(uow: UnitOfWork, config: QmsConfig, request_id: str, credential: Credential) -> Signer:
    """The person and account that sign, or ``NotAuthorized`` naming why not (the caller records it)."""
    if credential.is_trusted and not config.security.trusted_single_user:
        raise NotAuthorized(
            f"{request_id}: --as is accepted only in trusted single-user mode (security.trusted_single_user)",
            kind="not-trusted",
        )
    if credential.username is None and credential.person is None:
        raise NotAuthorized(f"{request_id}: the signer is not a known person of this QMS", kind="unknown-signer")
    account = signing_account(uow.session, username=credential.username, person=credential.person)
    check_account_may_sign(request_id, credential.person, account)
    person = uow.session.get(PersonRow, account.person)
    if person is None or not person.active:
        raise NotAuthorized(
            f"{request_id}: {account.person} is not an active person of this QMS", kind="unknown-signer"
        )
    return Signer(person.id, person.name, account.username, credential.auth)
