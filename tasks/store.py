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
def sync_config_task(config: str | None) -> list[str]:
    """Bring people, processes and documents in line with qms.yaml."""
    with open_context(config) as ctx:
        with UnitOfWork(ctx.db, SYSTEM_ACTOR) as uow:
            report = sync_config(uow, ctx.config, ctx.root)
            uow.commit()
        return report.changes


@task(name="scan-due-reviews", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def scan_due_reviews_task(
    config: str | None, today: date, window_days: int, process: str | None
) -> list[dict[str, Any]]:
    """Record each document whose review falls due within the window or is overdue."""
    with open_context(config) as ctx:
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
    config: str | None,
    process: str,
    flow_name: str,
    flow_run_id: str,
    state: str,
    started_at: datetime,
    finished_at: datetime | None,
    summary: dict[str, Any],
) -> None:
    with open_context(config) as ctx:
        with UnitOfWork(ctx.db, SYSTEM_ACTOR) as uow:
            record_run(uow, process, flow_name, flow_run_id, state, started_at, finished_at, summary)
            uow.commit()


@task(name="start-periodic-reviews", cache_policy=NO_CACHE)
def start_periodic_reviews_task(config: str | None, due: list[dict[str, Any]]) -> list[str]:
    """Start a "still valid" review for each newly due document whose effective version is unchanged.

    Idempotent: the Prefect idempotency key is the due record, so a re-run starts nothing twice.
    A document changed since its effective version needs its owner's submission instead.
    """
    from qmsflow.adapters import prefect_api
    from qmsflow.services.common import sha256_file
    from qmsflow.services.documents import effective_version

    started = []
    with open_context(config) as ctx:
        url = prefect_api.api_url(ctx.loaded.state_dir)
        for item in due:
            with UnitOfWork(ctx.db, SYSTEM_ACTOR) as uow:
                current = effective_version(uow, item["document"])
            file = ctx.root / current.path if current else None
            if current is None or not file.is_file() or sha256_file(file) != current.content_sha256:
                continue
            prefect_api.start_run(
                url,
                "document-review/on-demand",
                {
                    "document_id": item["document"],
                    "submitted_by": SYSTEM_ACTOR,
                    "still_valid": True,
                    "comment": f"periodic review ({item['record']})",
                    "config": str(ctx.loaded.path),
                },
                idempotency_key=f"periodic-review:{item['record']}",
            )
            started.append(item["document"])
        return started
