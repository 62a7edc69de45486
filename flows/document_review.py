"""Document control (SOP-DOC-001): review and signed approval of a controlled document.

Started by ``qms document submit DOC_ID`` after a change in git, or by the daily due scan for a
periodic review ("still valid"). Steps: snapshot the document and request approval (idempotent,
keyed by this flow run), notify the approvers, suspend until the request is decided (Slack, web or
CLI), then make the version effective (previous one obsolete, next review date set, PDF rendered)
or send it back to draft with the comment. Resuming re-runs this body from the top: every step
before the wait returns what it did the first time.
"""

from __future__ import annotations

import threading

from prefect import flow, get_run_logger
from prefect.flow_runs import suspend_flow_run
from prefect.runtime import flow_run
from pydantic import BaseModel

from tasks.approvals import (
    conclude_review_task,
    deliver_outbox_task,
    open_review_task,
    prewarm,
    request_status_task,
)

FLOW_NAME = "document-review"


class ApprovalDecided(BaseModel):
    """Run input given on resume; the records store stays the source of truth."""

    request_id: str
    status: str


@flow(name=FLOW_NAME, description=__doc__, persist_result=True, log_prints=False)
def document_review(
    document_id: str,
    submitted_by: str,
    major: bool = False,
    still_valid: bool = False,
    comment: str | None = None,
    config: str | None = None,
) -> dict:
    logger = get_run_logger()
    run_id = str(flow_run.id)
    # load the PDF renderer while Prefect orchestrates the first task (it is needed once decided)
    threading.Thread(target=prewarm, name="prewarm-renderer", daemon=True).start()
    request = open_review_task(config, document_id, submitted_by, major, still_valid, comment, run_id)
    if request["status"] == "pending":
        deliver_outbox_task(config)  # ask the approvers now; the outbox flow retries what fails
    attempt = 0
    while request["status"] == "pending":
        logger.info("%s waits for approval of %s", request["id"], request["subject"])
        suspend_flow_run(
            wait_for_input=ApprovalDecided,
            timeout=None,
            key=f"approval-{request['id'].lower()}-{request['signatures']}-{attempt}",
        )
        attempt += 1
        request = request_status_task(config, request["id"])
    outcome = conclude_review_task(config, request["id"])  # also delivers the owner's notice
    logger.info("%s: %s", request["id"], outcome)
    return outcome
