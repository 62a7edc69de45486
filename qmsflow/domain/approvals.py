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

from .errors import DomainError


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    CHANGES = "changes"

    @property
    def label(self) -> str:
        return {"approve": "approved", "reject": "rejected", "changes": "changes requested"}[self.value]


class Method(StrEnum):
    SLACK = "slack"
    WEB = "web"
    CLI = "cli"


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


class Signature(BaseModel):
    signer: str
    printed_name: str
    at: datetime
    meaning: str
    decision: Decision
    comment: str | None = None
    method: Method
    content_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


ALL = "all"
RequiredRule = int | str  # a number of signatures, or "all" named approvers who are not authors


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
