"""Document control (SOP-DOC-001): the daily scan for controlled documents due for review.

Records every controlled document whose periodic review falls due within 30 days or is overdue (a
``document-review-due`` record, DRD-YYYY-NNNN), once per document and due date, and starts a periodic
("still valid") document review for each one whose effective version is unchanged; a changed document
waits for its owner's `qms document submit`. Takes no parameters: the date is today (UTC), the rest
comes from qms.yaml and the records store.
"""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from tasks.runs import record_refused_run
from tasks.store import record_run_task, scan_due_reviews_task, start_periodic_reviews_task, sync_config_task

FLOW_NAME = "document-review-due-scan"
PROCESS = "document-control"
WINDOW_DAYS = 30


@flow(
    name=FLOW_NAME,
    description=__doc__,
    log_prints=False,
    on_failure=[record_refused_run],
    on_crashed=[record_refused_run],
)
def document_review_due_scan() -> dict:
    logger = get_run_logger()
    started = datetime.now(UTC)
    run_id = str(flow_run.id or f"local-{started.isoformat()}")
    today = started.date()
    changes = sync_config_task()
    if changes:
        logger.info("synced qms.yaml: %d change(s)", len(changes))
    due = scan_due_reviews_task(today, WINDOW_DAYS, PROCESS)
    reviews = start_periodic_reviews_task(due)
    summary = {
        "today": today.isoformat(),
        "reviews_started": len(reviews),
        "overdue": sum(1 for d in due if d["state"] == "overdue"),
        "due_soon": sum(1 for d in due if d["state"] == "due-soon"),
        "new_records": sum(1 for d in due if d["new"]),
    }
    for item in due:
        logger.info("%s %s: review %s (due %s)", item["record"], item["document"], item["state"], item["due"])
    record_run_task(PROCESS, FLOW_NAME, run_id, "COMPLETED", started, datetime.now(UTC), summary)
    return {"due": due, **summary}
