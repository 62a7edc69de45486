"""Document control (SOP-DOC-001): review and signed approval of a controlled document.

Started by ``qms document submit DOC_ID`` after a change in git, or by the daily due scan for a
periodic review ("still valid"). Steps: snapshot the document and request approval (idempotent,
keyed by this flow run), notify the approvers, suspend until the request is decided (Slack, web or
CLI), then make the version effective (previous one obsolete, next review date set) or send it
back to draft with the comment, render the controlled copy (HTML + PDF) and notify the owner.
Resuming re-runs this body from the top: every step before the wait returns what it did the first
time.
"""

from __future__ import annotations

import importlib
import multiprocessing
import sys
import threading

import prefect.cache_policies  # noqa: F401 - what tasks.approvals needs of Prefect, imported here first
from prefect import flow, get_run_logger, task  # noqa: F401
from prefect.flow_runs import suspend_flow_run
from prefect.runtime import flow_run
from pydantic import BaseModel

# The tasks bring the records store, SQLAlchemy and the config models (about 0.3 s of imports). A
# resumed run is a new process, started by the runner: there, import them in the background while
# Prefect starts the run, and let the body's own import below wait for that one
# (docs/adr/0008-decision-before-rendering.md). The thread imports only what the process has not
# imported yet (ours, SQLAlchemy, ruamel), not Prefect's modules; if it fails, the body's import
# reports why. Elsewhere (the runner itself, tests, tools) the module imports nothing in the background.
if multiprocessing.parent_process() is not None and "tasks.approvals" not in sys.modules:
    threading.Thread(target=importlib.import_module, args=("tasks.approvals",), name="qms-import", daemon=True).start()

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
    from tasks.approvals import deliver_outbox_task, render_copy_task, review_step_task

    logger = get_run_logger()
    submission = (config, document_id, submitted_by, major, still_valid, comment, str(flow_run.id))
    request = review_step_task(*submission)  # opens the request; on the re-run after approval, applies it
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
        request = review_step_task(*submission)
    outcome = request["outcome"]  # the decision is applied and committed
    logger.info("%s: %s", request["id"], outcome)
    outcome.update(render_copy_task(config, request["id"]))
    outcome["notices"] = deliver_outbox_task(config)  # the owner's notice, queued with the decision
    return outcome
