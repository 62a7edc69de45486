"""Corrective and preventive action (SOP-CAPA-001): daily escalation and Jira synchronisation.

The CAPA lifecycle itself is worked through `qms capa open/advance`, the dashboard and Jira; its
signed stages (action plan, closure) wait for approval requests like every other signature.
- ``capa_escalation`` (daily): overdue stages go to the CAPA owner, after 7 days to the owner's
  manager, through Slack and as a Jira comment; each once per stage, recorded in the trail.
- ``jira_sync`` (every minute and on demand): delivers queued changes to Jira in order, with
  backoff and Retry-After, then reconciles changes made in Jira (JQL ``updated >= last sync``).
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from tasks.approvals import deliver_outbox_task
from tasks.capa import escalate_task, reconcile_task


@flow(name="capa-escalation", log_prints=False)
def capa_escalation(config: str | None = None) -> dict:
    done = escalate_task(config)
    delivered = deliver_outbox_task(config)
    for capa_id, level, person in done:
        get_run_logger().info("%s escalated to %s (%s)", capa_id, person, level)
    return {"escalations": len(done), "delivery": delivered}


@flow(name="jira-sync", log_prints=False)
def jira_sync(config: str | None = None) -> dict:
    delivered = deliver_outbox_task(config)
    reconciled = reconcile_task(config)
    return {"delivery": delivered, "reconciled": reconciled}
