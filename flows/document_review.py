"""Document control (SOP-DOC-001): review and signed approval of a controlled document.

Started by ``qms document submit DOC_ID`` (the submission, made by an authenticated person, holds the
text under review and the authors of the change) or by the daily due scan for a periodic review
("still valid"). The run receives only the submission's id. Steps, as the SOP says them:

1. open the approval request from the submission, and ask the approvers (Slack, dashboard, CLI);
2. wait for the decision (the run is suspended; the deciding signature resumes it);
3. apply the decision (it took effect when it was signed: the version is effective and the previous one
   obsolete, or the version is back to draft; this step confirms it);
4. render the controlled copy (HTML + PDF) and re-issue the superseded copy stamped OBSOLETE;
5. tell the document owner.

Resuming re-runs this body from the top: every step before the wait returns what it did the first time.
"""

from __future__ import annotations

import prefect.cache_policies  # noqa: F401 - what tasks.approvals needs of Prefect, imported here first
from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from tasks.human import import_in_background, wait_for_decision
from tasks.runs import record_refused_run

# a resumed run is a new process: the tasks' imports start while Prefect starts the run
import_in_background("tasks.approvals")

FLOW_NAME = "document-review"


@flow(
    name=FLOW_NAME,
    description=__doc__,
    persist_result=True,
    log_prints=False,
    on_failure=[record_refused_run],
    on_crashed=[record_refused_run],
)
def document_review(submission_id: str) -> dict:
    from tasks.approvals import (
        apply_decision_task,
        deliver_outbox_task,
        open_review_task,
        render_copy_task,
        request_status_task,
    )

    # 1. open the approval request from the submission, and ask the approvers
    request = open_review_task(submission_id, str(flow_run.id))
    if request["status"] == "pending":
        deliver_outbox_task()  # the approvers' messages now; the outbox flow retries what fails
    # 2. wait for the decision (suspended; the deciding signature resumes the run)
    request = wait_for_decision(request, request_status_task)
    # 3. apply the decision (it took effect when it was signed: confirmed here)
    outcome = apply_decision_task(request["id"])
    get_run_logger().info("%s: %s", request["id"], outcome["text"])
    # 4. render the controlled copy, and re-issue the superseded one stamped OBSOLETE
    outcome.update(render_copy_task(request["id"]))
    # 5. tell the document owner (the notice was queued with the decision)
    outcome["notices"] = deliver_outbox_task()
    return outcome
