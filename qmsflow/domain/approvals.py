"""Approvals and electronic signatures (21 CFR Part 11 §11.50, §11.70, §11.200 as the reference).

An approval request names a subject (what is approved), the SHA-256 of its content, who may sign
(people resolved from named people and roles when the request is made), how many approvals are
needed, and the meaning of the signature. A signature binds signer, printed name, UTC time,
meaning, decision and the content hash; it is appended to the audit trail.

Rules enforced here, for every channel (Slack, web, CLI):
- only designated approvers sign;
- the author of a change never signs its approval (so is never its sole approver);
- one decision per person per request; a decided request takes no more decisions;
- any rejection or change request ends the request; enough approvals approve it.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
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


class NotAuthorized(DomainError):
    """A person may not sign this request; the message says why (and is recorded)."""


class AlreadyDecided(DomainError):
    """The request, or this person's part of it, was already decided."""


class Signature(BaseModel):
    signer: str
    printed_name: str
    at: datetime
    meaning: str
    decision: Decision
    comment: str | None = None
    method: Method
    content_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class ApprovalRequest(BaseModel):
    id: str
    subject: str
    content_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    approvers: list[str] = Field(min_length=1)
    required: int = Field(default=1, ge=1)
    meaning: str
    author: str | None = None
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

    def pending_approvers(self) -> list[str]:
        signed = {s.signer for s in self.signatures}
        return [p for p in self.approvers if p not in signed and p != self.author]

    def check_may_sign(self, person: str | None) -> None:
        """Raise ``AlreadyDecided`` or ``NotAuthorized`` with the reason; return when ``person`` may sign."""
        if self.decided:
            last = self.signatures[-1] if self.signatures else None
            who = f" by {last.printed_name} at {last.at:%Y-%m-%d %H:%M} UTC" if last else ""
            raise AlreadyDecided(f"{self.id} was already decided ({self.status.value.replace('_', ' ')}){who}")
        if person is None:
            raise NotAuthorized(f"{self.id}: the signer is not a known person of this QMS")
        mine = next((s for s in self.signatures if s.signer == person), None)
        if mine is not None:
            raise AlreadyDecided(
                f"{self.id}: already decided by {mine.printed_name} at {mine.at:%Y-%m-%d %H:%M} UTC ({mine.decision.label})"
            )
        if person == self.author:
            raise NotAuthorized(
                f"{self.id}: {person} is the author of this change and may not approve it (segregation of duties)"
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
                f"requested {self.content_sha256[:12]}…); a new review is needed"
            )
        self.signatures.append(signature)
        if signature.decision is Decision.REJECT:
            self.status = RequestStatus.REJECTED
        elif signature.decision is Decision.CHANGES:
            self.status = RequestStatus.CHANGES_REQUESTED
        elif self.approvals >= self.required:
            self.status = RequestStatus.APPROVED
        return self.status


def eligible_count_ok(approvers: list[str], author: str | None, required: int) -> str | None:
    """Why a request could never be approved (too few approvers besides the author), or None."""
    others = [p for p in approvers if p != author]
    if len(others) < required:
        return (
            f"needs {required} approval(s) but only {len(others)} approver(s) other than the author "
            f"{author!r}: {', '.join(others) or 'none'}"
        )
    return None


class FollowUp(StrEnum):
    REMIND = "remind"
    ESCALATE = "escalate"


def follow_ups_due(
    created: datetime, now: datetime, remind_after_days: int, escalate_after_days: int
) -> list[FollowUp]:
    """Which follow-ups are due for a pending request of age ``now - created``."""
    age = now - created
    due = []
    if age >= timedelta(days=remind_after_days):
        due.append(FollowUp.REMIND)
    if age >= timedelta(days=escalate_after_days):
        due.append(FollowUp.ESCALATE)
    return due
