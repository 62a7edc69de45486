"""Corrective and preventive action (SOP-CAPA-001): daily escalation and Jira synchronisation.

The CAPA lifecycle itself is worked through `qms capa open/advance`, the dashboard and Jira; its
signed stages (action plan, closure) wait for approval requests like every other signature.
- ``capa_escalation`` (daily): overdue stages climb the deadline ladder (``capa`` in qms.yaml: the
  CAPA owner, after 7 days the owner's manager, optionally theirs), through Slack and as a Jira
  comment; each rung once per stage, recorded in the trail.
- ``jira_sync`` (every minute and on demand): delivers queued changes to Jira in order, with
  backoff and Retry-After, then reconciles changes made in Jira (JQL ``updated >= last sync``).
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from tasks.approvals import deliver_outbox_task
from tasks.capa import escalate_task, reconcile_task
from tasks.runs import record_refused_run


@flow(name="capa-escalation", log_prints=False, on_failure=[record_refused_run], on_crashed=[record_refused_run])
def capa_escalation() -> dict:
    done = escalate_task()
    delivered = deliver_outbox_task()
    for capa_id, level, person in done:
        get_run_logger().info("%s escalated to %s (%s)", capa_id, person, level)
    return {"escalations": len(done), "delivery": delivered}


@flow(name="jira-sync", log_prints=False, on_failure=[record_refused_run], on_crashed=[record_refused_run])
def jira_sync() -> dict:
    delivered = deliver_outbox_task()
    reconciled = reconcile_task()
    return {"delivery": delivered, "reconciled": reconciled}
