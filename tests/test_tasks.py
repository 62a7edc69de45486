"""Shared Prefect tasks: which failures Prefect may retry."""

from __future__ import annotations

from prefect.states import Failed

from qmsflow.domain.errors import DomainError
from tasks.approvals import review_step_task, unless_refused


def test_a_refusal_by_the_domain_is_not_retried_but_other_failures_are() -> None:
    assert review_step_task.retries == 2 and review_step_task.retry_condition_fn is unless_refused
    refused = Failed(data=DomainError("procedures/x.md is unchanged since version 1.0: nothing to approve"))
    assert unless_refused(review_step_task, None, refused) is False
    assert unless_refused(review_step_task, None, Failed(data=OSError("database is locked"))) is True
