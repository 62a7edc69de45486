"""Who may sign, segregation of duties, outcomes and follow-ups, without a database."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from qmsflow.domain.approvals import (
    AlreadyDecided,
    ApprovalRequest,
    Decision,
    Method,
    NotAuthorized,
    RequestStatus,
    Signature,
    describe_rule,
    required_signatures,
)
from qmsflow.domain.deadlines import Level
from qmsflow.domain.errors import DomainError
from qmsflow.domain.organisation import ApprovalSettings

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
    with pytest.raises(
        DomainError, match="only 0 approver\\(s\\) may sign: approvers chloe \\(authors of this change: chloe\\)"
    ):
        required_signatures("all", ["chloe"], ["chloe"])
    with pytest.raises(DomainError, match="needs 2 approval"):
        required_signatures(2, ["ana", "chloe"], ["chloe"])
    assert required_signatures(1, ["ana", "chloe"], ["chloe"]) == 1


def test_all_means_every_named_approver_who_did_not_author_the_change() -> None:
    assert required_signatures("all", ["ana", "ben", "chloe"], ["chloe", "dev"]) == 2
    assert required_signatures(2, ["ana", "ben", "chloe"], []) == 2
    assert describe_rule("all") == "all named approvers who are not authors of the change"
    assert describe_rule(1) == "one of the named approvers who is not an author of the change"
    assert describe_rule(2) == "2 of the named approvers who are not authors of the change"


def test_every_author_of_a_change_is_refused_not_only_the_submitter() -> None:
    r = request(authors=["ben"])  # ben's git commits are part of the change chloe submitted
    with pytest.raises(NotAuthorized, match="ben is an author of this change"):
        r.check_may_sign("ben")
    with pytest.raises(NotAuthorized, match="chloe is an author"):
        r.check_may_sign("chloe")
    assert r.pending_approvers() == ["ana"]


def test_the_meaning_follows_the_decision() -> None:
    r = request(what="SOP-DOC-001 v1.1", meaning="approves SOP-DOC-001 v1.1 for use")
    assert r.meaning_for(Decision.APPROVE) == "approves SOP-DOC-001 v1.1 for use"
    assert r.meaning_for(Decision.REJECT) == "rejects SOP-DOC-001 v1.1"
    assert r.meaning_for(Decision.CHANGES) == "requests changes to SOP-DOC-001 v1.1"


def test_refusals_carry_the_kind_of_reason() -> None:
    r = request()
    r.sign(sig("ana"))
    with pytest.raises(AlreadyDecided) as decided:
        r.check_may_sign("ben")
    assert decided.value.kind == "already-decided"
    with pytest.raises(NotAuthorized) as unknown:
        request().check_may_sign(None)
    assert unknown.value.kind == "unknown-signer"


@pytest.mark.parametrize(
    ("age_days", "expected"),
    [
        (2.9, []),
        (3, [Level.REMIND]),
        (6.9, [Level.REMIND]),
        (7, [Level.REMIND, Level.ESCALATE]),
        (400, [Level.REMIND, Level.ESCALATE]),
    ],
)
def test_follow_ups_climb_the_approvals_ladder(age_days: float, expected: list[Level]) -> None:
    ladder = ApprovalSettings().ladder()  # remind after 3 days, escalate after 7, no further rung by default
    assert [r.level for r in ladder.due(T0, T0 + timedelta(days=age_days))] == expected
