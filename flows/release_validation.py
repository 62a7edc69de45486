"""Release validation (SOP-TST-001): the evidence of one release judged against criteria fixed in advance.

Started by ``qms release validate`` (run by CI with a personal or service token), which keeps the evidence
files in the records store and records the validation ``REL-YYYY-NNNN``; the run receives only its id.
Steps, as the SOP says them:

1. judge the evidence against the system's criteria in qms.yaml, whose version must be in the trail before
   the evidence was produced; fail closed (a missing metric, group or test is a failed criterion). A failed
   validation opens a CAPA (source release); one that met its criteria while a CAPA of severity high or
   critical is open on the system is blocked, and the quality leads are asked for a signed override;
   otherwise the responsible persons named in qms.yaml are asked to sign the report;
2. render the report (HTML + PDF) as judged;
3. wait for the override (while blocked) and for the signatures (suspended; each signature resumes the run);
4. render the report again with its signatures.

Resuming re-runs this body from the top: every step before the wait returns what it did the first time.
"""

from __future__ import annotations

import prefect.cache_policies  # noqa: F401 - what tasks.approvals needs of Prefect, imported here first
from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from tasks.human import import_in_background, wait_for_decision
from tasks.runs import record_refused_run

import_in_background("tasks.release")

FLOW_NAME = "release-validation"


@flow(
    name=FLOW_NAME,
    description=__doc__,
    persist_result=True,
    log_prints=False,
    on_failure=[record_refused_run],
    on_crashed=[record_refused_run],
)
def release_validation(release_id: str) -> dict:
    from tasks.approvals import deliver_outbox_task, request_status_task
    from tasks.release import evaluate_task, render_report_task, waiting_request_task

    # 1. judge the evidence against the pre-registered criteria
    verdict = evaluate_task(release_id, str(flow_run.id))
    get_run_logger().info("%s: %s %s", release_id, verdict["status"], "; ".join(verdict["failed"]))
    # 2. the report as judged
    render_report_task(release_id)
    deliver_outbox_task()
    # 3. wait for the override (while blocked) and the signatures
    request = waiting_request_task(release_id)
    while request is not None and request["status"] == "pending":
        wait_for_decision(request, request_status_task)
        request = waiting_request_task(release_id)  # after an override: the report's signatures
    # 4. the report with its signatures
    outcome = render_report_task(release_id)
    deliver_outbox_task()
    return outcome
