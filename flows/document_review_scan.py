"""Document control (SOP-DOC-001): the daily scan for controlled documents due for review.

Records every controlled document whose periodic review falls due within ``window_days`` or is
overdue (a ``document-review-due`` record, DRD-YYYY-NNNN), once per document and due date, and
starts a periodic ("still valid") document review for each one whose effective version is
unchanged; a changed document waits for its owner's `qms document submit`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from tasks.store import record_run_task, scan_due_reviews_task, start_periodic_reviews_task, sync_config_task

FLOW_NAME = "document-review-due-scan"


@flow(name=FLOW_NAME, description=__doc__, log_prints=False)
def document_review_due_scan(
    config: str | None = None,
    today: date | None = None,
    window_days: int = 30,
    process: str = "document-control",
    start_reviews: bool = True,
) -> dict:
    """Scan the documents register; ``config`` defaults to QMS_CONFIG, ``today`` to the UTC date."""
    logger = get_run_logger()
    started = datetime.now(UTC)
    run_id = str(flow_run.id or f"local-{started.isoformat()}")
    today = today or started.date()
    changes = sync_config_task(config)
    if changes:
        logger.info("synced qms.yaml: %d change(s)", len(changes))
    due = scan_due_reviews_task(config, today, window_days, process)
    reviews = start_periodic_reviews_task(config, due) if start_reviews else []
    summary = {
        "today": today.isoformat(),
        "reviews_started": len(reviews),
        "overdue": sum(1 for d in due if d["state"] == "overdue"),
        "due_soon": sum(1 for d in due if d["state"] == "due-soon"),
        "new_records": sum(1 for d in due if d["new"]),
    }
    for item in due:
        logger.info("%s %s: review %s (due %s)", item["record"], item["document"], item["state"], item["due"])
    record_run_task(config, process, FLOW_NAME, run_id, "COMPLETED", started, datetime.now(UTC), summary)
    return {"due": due, **summary}
