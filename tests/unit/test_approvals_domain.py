"""Who may sign, segregation of duties, outcomes and follow-ups, without a database."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from qmsflow.domain.approvals import (
    AlreadyDecided,
    ApprovalRequest,
    Decision,
    FollowUp,
    Method,
    NotAuthorized,
    RequestStatus,
    Signature,
    eligible_count_ok,
    follow_ups_due,
)

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
HASH = "ab" * 32


def request(**kw) -> ApprovalRequest:  # noqa: ANN003
    base = dict(
        id="APR-2026-0001",
        subject="document-version:SOP-DOC-001@1.1",
        content_sha256=HASH,
        approvers=["ana", "ben"],
        required=1,
        meaning="approve SOP-DOC-001 v1.1 for use",
        author="chloe",
        due=date(2026, 11, 16),
        created_at=T0,
    )
    return ApprovalRequest(**{**base, **kw})


def sig(signer: str, decision: Decision = Decision.APPROVE, content: str = HASH) -> Signature:
    return Signature(
        signer=signer,
        printed_name=signer.title(),
        at=T0 + timedelta(hours=1),
        meaning="m",
        decision=decision,
        method=Method.CLI,
        content_sha256=content,
    )


def test_designated_approver_approves() -> None:
    r = request()
    assert r.sign(sig("ana")) is RequestStatus.APPROVED
    assert r.decided and r.approvals == 1


def test_non_approver_is_refused_with_the_list_of_approvers() -> None:
    with pytest.raises(NotAuthorized, match=r"dev is not a designated approver \(approvers: ana, ben\)"):
        request().sign(sig("dev"))


def test_author_never_approves_own_change_even_when_listed() -> None:
    r = request(approvers=["ana", "chloe"], author="chloe")
    with pytest.raises(NotAuthorized, match="author of this change"):
        r.sign(sig("chloe"))
    assert r.pending_approvers() == ["ana"]


def test_unknown_signer_is_refused() -> None:
    with pytest.raises(NotAuthorized, match="not a known person"):
        request().check_may_sign(None)


def test_second_decision_is_already_decided() -> None:
    r = request(required=2)
    r.sign(sig("ana"))
    with pytest.raises(AlreadyDecided, match="already decided by Ana"):
        r.sign(sig("ana"))
    r.sign(sig("ben"))
    with pytest.raises(AlreadyDecided, match=r"was already decided \(approved\) by Ben"):
        r.sign(sig("ana", Decision.REJECT))


def test_rejection_or_change_request_ends_the_request() -> None:
    r = request(required=2)
    r.sign(sig("ana"))
    assert r.sign(sig("ben", Decision.CHANGES)) is RequestStatus.CHANGES_REQUESTED
    assert request().sign(sig("ben", Decision.REJECT)) is RequestStatus.REJECTED


def test_signature_must_bind_the_requested_content() -> None:
    with pytest.raises(NotAuthorized, match="content changed since the request"):
        request().sign(sig("ana", content="cd" * 32))


def test_requests_that_could_never_be_approved_are_refused_upfront() -> None:
    assert eligible_count_ok(["chloe"], "chloe", 1) == (
        "needs 1 approval(s) but only 0 approver(s) other than the author 'chloe': none"
    )
    assert eligible_count_ok(["ana", "chloe"], "chloe", 1) is None


@pytest.mark.parametrize(
    ("age_days", "expected"),
    [
        (2.9, []),
        (3, [FollowUp.REMIND]),
        (6.9, [FollowUp.REMIND]),
        (7, [FollowUp.REMIND, FollowUp.ESCALATE]),
    ],
)
def test_follow_ups(age_days: float, expected: list[FollowUp]) -> None:
    assert follow_ups_due(T0, T0 + timedelta(days=age_days), 3, 7) == expected
