"""Shared Prefect tasks: which failures Prefect may retry."""

from __future__ import annotations

from prefect.states import Failed

from qmsflow.domain.errors import DomainError
from tasks.approvals import apply_decision_task, open_review_task, unless_refused


def test_a_refusal_by_the_domain_is_not_retried_but_other_failures_are() -> None:
    for step in (open_review_task, apply_decision_task):
        assert step.retries == 2 and step.retry_condition_fn is unless_refused
    refused = Failed(data=DomainError("procedures/x.md is unchanged since version 1.0: nothing to approve"))
    assert unless_refused(open_review_task, None, refused) is False
    assert unless_refused(open_review_task, None, Failed(data=OSError("database is locked"))) is True
