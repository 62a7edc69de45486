"""Approvals (SOP-DOC-001, SOP-CAPA-001): reminders, escalation, and recovery of decided runs.

Pending signatures climb the deadline ladder (``approvals`` in qms.yaml): remind the approver, escalate
to their manager, optionally to theirs (each rung once, recorded in the trail); resumes runs whose
request was decided while Prefect was unreachable; starts the reviews of submissions made while it
was unreachable; delivers queued notifications.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from tasks.approvals import deliver_outbox_task, follow_up_task, resume_decided_task, start_unstarted_reviews_task
from tasks.runs import record_refused_run

FLOW_NAME = "approval-follow-ups"


@flow(
    name=FLOW_NAME,
    description=__doc__,
    log_prints=False,
    on_failure=[record_refused_run],
    on_crashed=[record_refused_run],
)
def approval_follow_ups() -> dict:
    logger = get_run_logger()
    done = follow_up_task()
    resumed = resume_decided_task()
    started = start_unstarted_reviews_task()
    delivered = deliver_outbox_task()
    for request_id, kind, to in done:
        logger.info("%s: %s sent to %s", request_id, kind, to)
    return {"follow_ups": len(done), "resumed": resumed, "started": started, "delivery": delivered}
