"""Management review (QMS-001 4.6): the quarterly start, and the deadline ladder of its actions.

- ``management_review_quarterly`` (07:00 on days 1-7 of January, April, July and October, in
  ``organisation.timezone``): on the first working day of a quarter, starts the review of the quarter
  before it: the inputs are gathered from the records into a frozen, hashed pack and open actions of
  earlier reviews roll in. On the other days, and when the quarter was already started, it does nothing.
  The chair then records the minutes (`qms management-review decide`) and submits them for the signatures
  of top management (`qms management-review submit`): people's steps, not the flow's.
- ``management_review_actions`` (daily): overdue actions climb the deadline ladder (``management_review``
  in qms.yaml): their owner, then the owner's manager; each rung once, recorded in the trail.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from tasks.approvals import deliver_outbox_task
from tasks.management_review import escalate_actions_task, start_due_review_task
from tasks.runs import record_refused_run


@flow(
    name="management-review-quarterly",
    log_prints=False,
    on_failure=[record_refused_run],
    on_crashed=[record_refused_run],
)
def management_review_quarterly() -> dict:
    # 1. on the first working day of a quarter, start the review of the quarter before (inputs frozen)
    outcome = start_due_review_task()
    get_run_logger().info("management review: %s", outcome.get("started") or outcome.get("reason"))
    return outcome


@flow(
    name="management-review-actions", log_prints=False, on_failure=[record_refused_run], on_crashed=[record_refused_run]
)
def management_review_actions() -> dict:
    done = escalate_actions_task()
    delivered = deliver_outbox_task()
    return {"escalations": len(done), "delivery": delivered}
