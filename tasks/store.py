"""Tasks that read and write the records store."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from qmsflow.context import open_context
from qmsflow.services.documents import scan_due_reviews
from qmsflow.services.status import record_run
from qmsflow.services.sync import sync_config
from qmsflow.store.uow import UnitOfWork

SYSTEM_ACTOR = "qmsflow"


@task(name="sync-config", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def sync_config_task() -> list[str]:
    """Bring people, processes and documents in line with qms.yaml."""
    with open_context() as ctx:
        with UnitOfWork(ctx.db, SYSTEM_ACTOR) as uow:
            report = sync_config(uow, ctx.config, ctx.root)
            uow.commit()
        return report.changes


@task(name="scan-due-reviews", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def scan_due_reviews_task(today: date, window_days: int, process: str | None) -> list[dict[str, Any]]:
    """Record each document whose review falls due within the window or is overdue."""
    with open_context() as ctx:
        with UnitOfWork(ctx.db, SYSTEM_ACTOR) as uow:
            found = scan_due_reviews(uow, today, process=process, window_days=window_days)
            uow.commit()
        return [
            {
                "record": d.record_id,
                "document": d.document_id,
                "state": d.state,
                "due": d.due.isoformat(),
                "new": d.created,
            }
            for d in found
        ]


@task(name="record-process-run", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def record_run_task(
    process: str,
    flow_name: str,
    flow_run_id: str,
    state: str,
    started_at: datetime,
    finished_at: datetime | None,
    summary: dict[str, Any],
) -> None:
    with open_context() as ctx:
        with UnitOfWork(ctx.db, SYSTEM_ACTOR) as uow:
            record_run(uow, process, flow_name, flow_run_id, state, started_at, finished_at, summary)
            uow.commit()


@task(name="start-periodic-reviews", cache_policy=NO_CACHE)
def start_periodic_reviews_task(due: list[dict[str, Any]]) -> list[str]:
    """Start a "still valid" review for each newly due document whose effective version is unchanged.

    Each review is a submission in qmsflow's name, and its run gets only the submission's id. Idempotent:
    a due record already submitted is not submitted again, and the Prefect idempotency key is the
    submission. A document changed since its effective version needs its owner's submission instead.
    """
    from qmsflow.adapters import prefect_api
    from qmsflow.domain.errors import DomainError
    from qmsflow.services import review

    started = []
    with open_context() as ctx:
        url = prefect_api.locate(ctx.loaded.state_dir)
        for item in due:
            with UnitOfWork(ctx.db, SYSTEM_ACTOR) as uow:
                try:
                    submission = review.periodic_submission(uow, ctx.config, ctx.root, item["document"], item["record"])
                except DomainError:
                    continue  # changed since it became effective, never approved, or already in review
                uow.commit()
                submission_id = submission.id
            prefect_api.start_run(
                url,
                "document-review/on-demand",
                {"submission_id": submission_id},
                idempotency_key=f"submission:{submission_id}",
            )
            started.append(item["document"])
        return started
