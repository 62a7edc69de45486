"""Delivers queued Slack (and, later, Jira) messages: every minute and on demand.

An outage of Slack delays messages; they are retried with backoff and Retry-After, in order per
stream, and none is lost. Failures show in ``qms status``.
"""

from __future__ import annotations

from prefect import flow

from tasks.approvals import deliver_outbox_task
from tasks.runs import record_refused_run

FLOW_NAME = "outbox-delivery"


@flow(
    name=FLOW_NAME,
    description=__doc__,
    log_prints=False,
    on_failure=[record_refused_run],
    on_crashed=[record_refused_run],
)
def outbox_delivery() -> dict:
    return deliver_outbox_task()
