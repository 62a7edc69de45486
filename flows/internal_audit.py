"""Internal audit (SOP-AUD-001): one run per planned audit, on demand or started by the daily scan.

The run receives only the audit's id. Steps, as the SOP says them:

1. build the checklist from the versioned data file and draw the sample (the seed is recorded in the
   trail first); the auditor and the auditee were notified when the audit was planned;
2. wait for the auditor to record every item and conclude (``qms audit record`` / ``conclude``, or the
   dashboard); the run is suspended, and the conclusion (or the report's signatures) resumes it;
3. wait for the report's signatures: the auditor signs it and a quality lead approves it through the
   shared approval step; a report sent back returns to step 2;
4. write the signed report (HTML, and PDF when WeasyPrint is installed) and deliver the notices.

Resuming re-runs this body from the top: every step before a wait returns what it did the first time.
"""

from __future__ import annotations

import prefect.cache_policies  # noqa: F401 - what tasks.audit needs of Prefect, imported here first
from prefect import flow, get_run_logger
from prefect.flow_runs import suspend_flow_run
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict

from tasks.human import import_in_background, wait_for_decision
from tasks.runs import record_refused_run

import_in_background("tasks.audit")

FLOW_NAME = "internal-audit"


class AuditWake(BaseModel):
    """Run input on resume: the conclusion ({audit_id, stage}) or a signature ({request_id, status})."""

    model_config = ConfigDict(extra="allow")


@flow(
    name=FLOW_NAME,
    description=__doc__,
    persist_result=True,
    on_failure=[record_refused_run],
    on_crashed=[record_refused_run],
)
def internal_audit(audit_id: str) -> dict:
    from tasks.approvals import deliver_outbox_task
    from tasks.audit import read_audit_task, report_request_task, start_audit_task, write_report_task

    log = get_run_logger()
    # 1. the checklist and its sample
    state = start_audit_task(audit_id, str(flow_run.id))
    attempt = 0
    while state["stage"] in ("in_progress", "reporting"):
        if state["stage"] == "in_progress":
            # 2. wait for every item and the conclusion
            log.info("%s waits for items %s and the conclusion", audit_id, state["open_items"] or "-")
            suspend_flow_run(
                wait_for_input=AuditWake,
                timeout=None,
                key=f"audit-{audit_id.lower()}-items-{state['requests']}-{attempt}",
            )
            attempt += 1
        else:
            # 3. the report's signatures (auditor, quality lead)
            request = wait_for_decision(report_request_task(state["pending"]), report_request_task)
            log.info("%s: report %s %s", audit_id, request["id"], request["status"])
        state = read_audit_task(audit_id)
    if state["stage"] == "cancelled":
        return {"audit": audit_id, "stage": "cancelled"}
    # 4. the signed report, and the notices
    outcome = {"audit": audit_id, "stage": state["stage"], "report": write_report_task(audit_id)}
    outcome["notices"] = deliver_outbox_task()
    return outcome


@flow(name="audit-scan", on_failure=[record_refused_run], on_crashed=[record_refused_run])
def audit_scan() -> dict:
    """Daily: start the run of each planned audit whose date has come; climb the deadline ladder of overdue
    audits and of findings past their re-check or without a CAPA."""
    from tasks.approvals import deliver_outbox_task
    from tasks.audit import escalate_task, start_due_audits_task

    started = start_due_audits_task()
    escalated = escalate_task()
    return {"started": started, "escalations": len(escalated), "delivery": deliver_outbox_task()}
