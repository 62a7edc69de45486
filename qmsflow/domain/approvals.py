"""Approvals and electronic signatures (21 CFR Part 11 §11.50, §11.70, §11.200 as the reference).

An approval request names a subject (what is approved), the SHA-256 of its content, who may sign
(people resolved from named people and roles when the request is made), how many approvals are
needed, and the meaning of the signature. A signature binds signer, printed name, UTC time,
meaning, decision and the content hash; it is appended to the audit trail.

Rules enforced here, for every channel (Slack, web, CLI):
- only designated approvers sign;
- no author of a change signs its approval: the person who submitted it and everyone whose work it
  contains (for a document, the git authors of the commits since the last approved version);
- one decision per person per request; a decided request takes no more decisions;
- any rejection or change request ends the request; enough approvals approve it, where "enough" is
  the rule declared in qms.yaml: all named approvers who are not authors (the default), or a number;
- the meaning of a signature follows its decision ("approves …", "rejects …", "requests changes to …").
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from .capabilities import declare
from .errors import DomainError


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    CHANGES = "changes"

    @property
    def label(self) -> str:
        return {"approve": "approved", "reject": "rejected", "changes": "changes requested"}[self.value]


class Method(StrEnum):
    """The channel a signature came through."""

    SLACK = "slack"
    WEB = "web"  # the dashboard, password entered again
    CLI = "cli"
    API = "api"  # POST /api/approvals/{id}/decision with a personal token


class RequestStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    CHANGES_REQUESTED = "changes_requested"


class Refusal(DomainError):
    """A signature that is not accepted; ``kind`` names the reason for the record (once per kind and person)."""

    kind = "refused"

    def __init__(self, message: str, kind: str | None = None):
        super().__init__(message)
        if kind:
            self.kind = kind
        self.recorded = False


class NotAuthorized(Refusal):
    """A person may not sign this request; the message says why (and is recorded)."""

    kind = "not-authorized"


class AlreadyDecided(Refusal):
    """The request, or this person's part of it, was already decided."""

    kind = "already-decided"


class Proof(BaseModel):
    """A signing key's signature over a signature's trail event (ADR 0018): what the database credential
    alone cannot produce. ``key`` names a key registered in the trail and in the git-committed keys file."""

    alg: str = "ed25519"
    key: str
    sig: str


# fields of a signature added after signatures were first stored (migration 0013): absent from the
# state of older signatures, so a stored signature keeps the state its event was hashed with
OPTIONAL_SIGNATURE_FIELDS = ("account", "auth", "proof")


SIGNATURE_MANIFEST = declare(
    "approval.signature_manifest",
    "Every electronic signature in qmsflow records the signer, their printed name, the date and time (UTC), "
    'the decision, the meaning of the signature, which follows the decision ("approves …", "rejects …", '
    '"requests changes to …"), the comment, the channel, the account that signed and how it authenticated. '
    "The controlled copy of a document shows each signature's printed name, meaning, date and time, and "
    "channel. A rejection or a change request needs a comment.",
    proved_by=(
        "tests/unit/test_approvals_domain.py::test_the_meaning_follows_the_decision",
        "tests/integration/test_render.py::test_html_has_control_block_signatures_and_escaped_body",
        "tests/integration/test_signed_content.py::test_the_meaning_follows_the_decision",
    ),
    module=__name__,
)

CONTENT_BOUND = declare(
    "approval.content_bound",
    "qmsflow binds each signature to the SHA-256 hash of the exact content signed and refuses a signature "
    "whose content differs from the content under review. Each signature is also sealed with a signing key "
    "that the database does not hold, and `qms verify` reports a signature whose seal, record or signed "
    "content no longer matches.",
    proved_by=(
        "tests/unit/test_approvals_domain.py::test_signature_must_bind_the_requested_content",
        "tests/integration/test_signatures_bound.py::test_an_edited_sealed_signature_fails_verify",
        "tests/integration/test_signatures_bound.py::test_a_signature_sealed_with_the_attackers_own_key_fails_verify",
    ),
    module=__name__,
)


class Signature(BaseModel):
    signer: str
    printed_name: str
    at: datetime
    meaning: str
    decision: Decision
    comment: str | None = None
    method: Method
    content_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    # the account that signed and how it authenticated (e.g. "password", "token:7", "slack:U123")
    account: str | None = None
    auth: str | None = None
    proof: Proof | None = None

    def state(self) -> dict:
        """The signature as its ``approval.signed`` event holds it (optional fields only when set)."""
        state = self.model_dump(mode="json")
        for name in OPTIONAL_SIGNATURE_FIELDS:
            if state.get(name) is None:
                state.pop(name, None)
        return state


ALL = "all"
RequiredRule = int | str  # a number of signatures, or "all" named approvers who are not authors


SIGNING_ROLES = ("approver", "admin")


class Account(BaseModel):
    """The account a person signs with, as the records store holds it."""

    username: str
    person: str
    role: str
    disabled: bool = False
    must_change_password: bool = False
    # who last set its password: the person themselves, or the admin who created or reset it
    password_set_by: str | None = None
    # the person's other active accounts (one account per person: a second one signs nothing)
    others_active: list[str] = Field(default_factory=list)


def check_account_may_sign(request_id: str, person: str | None, account: Account | None) -> None:
    """Raise ``NotAuthorized`` unless ``account`` may sign for ``person``: one rule for every channel.

    The account must exist, be the person's only active account, not be disabled, hold a signing role
    (approver or admin, never viewer), and carry a password its person set themselves: an account an
    admin made (or reset) for someone else signs nothing until that person has chosen their password.
    """
    if account is None:
        raise NotAuthorized(
            f"{request_id}: {person or 'the signer'} has no active qmsflow account to sign with "
            "(an admin creates one with 'qms user add')",
            kind="no-account",
        )
    if person is not None and account.person != person:
        raise NotAuthorized(
            f"{request_id}: the account {account.username} belongs to {account.person}, not to {person}",
            kind="wrong-account",
        )
    if account.disabled:
        raise NotAuthorized(
            f"{request_id}: the account {account.username} is disabled: it cannot sign", kind="disabled"
        )
    if account.others_active:
        raise NotAuthorized(
            f"{request_id}: {account.person} has more than one active account ({account.username}, "
            f"{', '.join(account.others_active)}): one account per person signs; an admin disables the others",
            kind="duplicate-account",
        )
    if account.role not in SIGNING_ROLES:
        raise NotAuthorized(
            f"{request_id}: the account {account.username} has the role {account.role}: viewers cannot sign approvals",
            kind="viewer",
        )
    if account.must_change_password or account.password_set_by != account.person:
        by = account.password_set_by or "an admin"
        raise NotAuthorized(
            f"{request_id}: the account {account.username} cannot sign until {account.person} has set their own "
            f"password (it was set by {by}; sign in and change it: 'qms login' or the dashboard)",
            kind="password-not-own",
        )


SIGNATURE_RULE = declare(
    "approval.signature_rule",
    "qmsflow accepts a signature on an approval request only from one of its designated approvers who is "
    "not an author of the change, once per person, while the request is undecided. It counts the approvals a "
    "request needs by the rule in qms.yaml (`required_signatures`: by default all named approvers who are "
    "not authors of the change, or a number of them), and refuses at submission a review that no approver "
    "could complete. One rejection or change request decides the request; every refused signature is "
    "recorded in the audit trail with who tried and why.",
    proved_by=(
        "tests/unit/test_approvals_domain.py::test_all_means_every_named_approver_who_did_not_author_the_change",
        "tests/unit/test_approvals_domain.py::test_rejection_or_change_request_ends_the_request",
        "tests/integration/test_approvals_service.py::test_refusals_are_recorded_with_who_and_why",
    ),
    module=__name__,
)


class ApprovalRequest(BaseModel):
    id: str
    subject: str
    content_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    approvers: list[str] = Field(min_length=1)
    required: int = Field(default=1, ge=1)
    meaning: str
    what: str = ""
    author: str | None = None
    authors: list[str] = Field(default_factory=list)
    due: date
    created_at: datetime
    status: RequestStatus = RequestStatus.PENDING
    signatures: list[Signature] = Field(default_factory=list)

    @property
    def decided(self) -> bool:
        return self.status is not RequestStatus.PENDING

    @property
    def approvals(self) -> int:
        return sum(1 for s in self.signatures if s.decision is Decision.APPROVE)

    @property
    def all_authors(self) -> list[str]:
        return list(dict.fromkeys([*([self.author] if self.author else []), *self.authors]))

    def pending_approvers(self) -> list[str]:
        signed = {s.signer for s in self.signatures}
        authors = set(self.all_authors)
        return [p for p in self.approvers if p not in signed and p not in authors]

    def meaning_for(self, decision: Decision) -> str:
        """What a signature with this decision means: the request's own meaning for an approval."""
        what = self.what or self.subject
        if decision is Decision.REJECT:
            return f"rejects {what}"
        if decision is Decision.CHANGES:
            return f"requests changes to {what}"
        return self.meaning

    def check_may_sign(self, person: str | None) -> None:
        """Raise ``AlreadyDecided`` or ``NotAuthorized`` with the reason; return when ``person`` may sign."""
        if self.decided:
            last = self.signatures[-1] if self.signatures else None
            who = f" by {last.printed_name} at {last.at:%Y-%m-%d %H:%M} UTC" if last else ""
            raise AlreadyDecided(f"{self.id} was already decided ({self.status.value.replace('_', ' ')}){who}")
        if person is None:
            raise NotAuthorized(f"{self.id}: the signer is not a known person of this QMS", kind="unknown-signer")
        mine = next((s for s in self.signatures if s.signer == person), None)
        if mine is not None:
            raise AlreadyDecided(
                f"{self.id}: already decided by {mine.printed_name} at {mine.at:%Y-%m-%d %H:%M} UTC ({mine.decision.label})"
            )
        if person in self.all_authors:
            raise NotAuthorized(
                f"{self.id}: {person} is an author of this change and may not approve it (segregation of duties; "
                f"authors: {', '.join(self.all_authors)})"
            )
        if person not in self.approvers:
            raise NotAuthorized(
                f"{self.id}: {person} is not a designated approver (approvers: {', '.join(self.approvers)})"
            )

    def sign(self, signature: Signature) -> RequestStatus:
        """Add a signature after ``check_may_sign``; returns the new status."""
        self.check_may_sign(signature.signer)
        if signature.content_sha256 != self.content_sha256:
            raise NotAuthorized(
                f"{self.id}: the content changed since the request (signed {signature.content_sha256[:12]}…, "
                f"requested {self.content_sha256[:12]}…); a new review is needed",
                kind="content-changed",
            )
        self.signatures.append(signature)
        if signature.decision is Decision.REJECT:
            self.status = RequestStatus.REJECTED
        elif signature.decision is Decision.CHANGES:
            self.status = RequestStatus.CHANGES_REQUESTED
        elif self.approvals >= self.required:
            self.status = RequestStatus.APPROVED
        return self.status


def eligible(approvers: list[str], authors: list[str]) -> list[str]:
    """The approvers who may sign: every named approver who is not an author of the change."""
    return [p for p in approvers if p not in set(authors)]


def required_signatures(rule: RequiredRule, approvers: list[str], authors: list[str]) -> int:
    """How many approvals a request needs under ``rule``; ``DomainError`` when it could never be met.

    ``"all"``: every named approver who is not an author of the change; a number: that many of them.
    """
    from .errors import DomainError

    others = eligible(approvers, authors)
    wanted = len(others) if rule == ALL else int(rule)
    if not others or wanted > len(others):
        named = ", ".join(approvers) or "none"
        by = f" (authors of this change: {', '.join(authors)})" if authors else ""
        raise DomainError(
            f"needs {'all named approvers' if rule == ALL else f'{wanted} approval(s)'} but only {len(others)} "
            f"approver(s) may sign: approvers {named}{by}; add an approver who did not author the change"
        )
    return max(wanted, 1)


def describe_rule(rule: RequiredRule) -> str:
    """The rule in words, as the SOPs state it."""
    if rule == ALL:
        return "all named approvers who are not authors of the change"
    count = int(rule)
    return (
        f"{count} of the named approvers who are not authors of the change"
        if count > 1
        else ("one of the named approvers who is not an author of the change")
    )
