"""Tasks of the internal audit procedure (SOP-AUD-001): thin, idempotent, one context each."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from qmsflow.adapters import prefect_api
from qmsflow.context import open_context
from qmsflow.services import audit, review
from qmsflow.store.uow import UnitOfWork

SYSTEM_ACTOR = "qmsflow"
DEPLOYMENT = "internal-audit/on-demand"


@task(name="build-audit-checklist", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5])
def start_audit_task(audit_id: str, flow_run_id: str) -> dict[str, Any]:
    """Build the checklist and draw the sample once (seed recorded first); a re-run returns the audit as it is."""
    with open_context() as ctx, UnitOfWork(ctx.db, SYSTEM_ACTOR) as uow:
        return audit.start(uow, ctx.config, audit_id, flow_run_id)


@task(name="read-audit", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5])
def read_audit_task(audit_id: str) -> dict[str, Any]:
    with open_context() as ctx, UnitOfWork(ctx.db, SYSTEM_ACTOR) as uow:
        return audit.summary(audit.load(uow, audit_id))


@task(name="read-report-request", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5])
def report_request_task(request_id: str) -> dict[str, Any]:
    with open_context() as ctx, UnitOfWork(ctx.db, SYSTEM_ACTOR) as uow:
        return review.request_summary(uow, request_id)


@task(name="write-audit-report", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def write_report_task(audit_id: str) -> dict[str, Any]:
    """The signed report (HTML, PDF when WeasyPrint is installed) from the store; written again on a re-run."""
    with open_context() as ctx, UnitOfWork(ctx.db, SYSTEM_ACTOR) as uow:
        return audit.write_report(uow, ctx.config, audit_id, ctx.loaded.state_dir / "rendered")


@task(name="escalate-overdue-audits", cache_policy=NO_CACHE)
def escalate_task() -> list[tuple[str, str, str]]:
    with open_context() as ctx, UnitOfWork(ctx.db, SYSTEM_ACTOR) as uow:
        return audit.escalate_overdue(uow, ctx.config, datetime.now(UTC).date())


@task(name="start-due-audits", cache_policy=NO_CACHE)
def start_due_audits_task() -> list[str]:
    """Start one internal-audit run per planned audit whose date has come (idempotent per audit)."""
    started = []
    with open_context() as ctx:
        with UnitOfWork(ctx.db, SYSTEM_ACTOR) as uow:
            due = audit.due_to_start(uow, datetime.now(UTC).date())
        if not due:
            return started
        url = prefect_api.locate(ctx.loaded.state_dir)
        for audit_id in due:
            try:
                prefect_api.start_run(url, DEPLOYMENT, {"audit_id": audit_id}, idempotency_key=f"audit:{audit_id}")
                started.append(audit_id)
            except prefect_api.PrefectUnavailable as exc:
                get_run_logger().warning("%s: audit run not started: %s", audit_id, exc)
    return started
