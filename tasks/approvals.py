"""Tasks of approval steps and document review: thin wrappers over qmsflow.services, all idempotent.

No task takes a configuration or an identity as a parameter: the configuration and the records store
come from the worker's own environment (``QMS_CONFIG``), identities from records written by an
authenticated action (a submission, a signature).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from qmsflow.adapters import prefect_api
from qmsflow.context import open_context
from qmsflow.domain.errors import DomainError
from qmsflow.services import approvals, review
from qmsflow.services.delivery import deliver
from qmsflow.store.uow import UnitOfWork

SYSTEM_ACTOR = "qmsflow"


def unless_refused(task, task_run, state) -> bool:  # noqa: ANN001 - Prefect's retry_condition_fn signature
    """Retry a failed step unless the domain refused it (a refusal does not change on a retry)."""
    return not isinstance(state.data, DomainError)


@task(
    name="open-review-request",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[1, 5],
    retry_condition_fn=unless_refused,
)
def open_review_task(submission_id: str, flow_run_id: str) -> dict[str, Any]:
    """Check the submission this run was started for and open its approval request, once, in the name of
    the person who submitted it; on a re-run (after a resume) return the same request as it is now."""
    with open_context() as ctx, UnitOfWork(ctx.db, SYSTEM_ACTOR) as uow:
        return review.open_review(uow, ctx.config, submission_id, flow_run_id)


@task(name="read-approval-request", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5])
def request_status_task(request_id: str) -> dict[str, Any]:
    with open_context() as ctx, UnitOfWork(ctx.db, SYSTEM_ACTOR) as uow:
        return review.request_summary(uow, request_id)


@task(
    name="apply-review-decision",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[1, 5],
    retry_condition_fn=unless_refused,
)
def apply_decision_task(request_id: str) -> dict[str, Any]:
    """The decision took effect when it was signed; confirm it and return the outcome (applies a decision of
    an earlier qmsflow that did not apply it at signing)."""
    with open_context() as ctx, UnitOfWork(ctx.db, SYSTEM_ACTOR) as uow:
        return review.conclude_review(uow, request_id)


@task(name="render-controlled-copy", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def render_copy_task(request_id: str) -> dict[str, Any]:
    """HTML + PDF controlled copy of the approved version, from the store; the superseded one re-issued OBSOLETE."""
    with open_context() as ctx, UnitOfWork(ctx.db, SYSTEM_ACTOR) as uow:
        return review.render_approved_copy(uow, ctx.config, ctx.root, ctx.loaded.state_dir / "rendered", request_id)


@task(name="deliver-outbox", cache_policy=NO_CACHE)
def deliver_outbox_task() -> dict[str, Any]:
    """One delivery pass; failures stay queued for the next pass (never fail the flow)."""
    with open_context() as ctx:
        report = deliver(ctx.db, ctx.config)
        if report.failed:
            get_run_logger().warning(
                "outbox: %d delivery failure(s), will retry: %s", len(report.failed), report.failed[0][1]
            )
        for key, error in report.parked:
            get_run_logger().error("outbox: %s parked (see 'qms outbox list'): %s", key, error)
        return {
            "sent": len(report.sent),
            "failed": len(report.failed),
            "waiting": report.waiting,
            "parked": len(report.parked),
        }


@task(name="approval-follow-ups", cache_policy=NO_CACHE)
def follow_up_task() -> list[tuple[str, str, str]]:
    with open_context() as ctx:
        with UnitOfWork(ctx.db, SYSTEM_ACTOR) as uow:
            done = approvals.follow_up(uow, ctx.config, datetime.now(UTC))
            uow.commit()
        return done


@task(name="start-unstarted-reviews", cache_policy=NO_CACHE)
def start_unstarted_reviews_task() -> list[str]:
    """Start the review runs of submissions made while Prefect was unreachable (idempotent per submission)."""
    started = []
    with open_context() as ctx:
        url = prefect_api.locate(ctx.loaded.state_dir)
        with UnitOfWork(ctx.db, SYSTEM_ACTOR) as uow:
            waiting = review.unstarted_submissions(uow)
        for submission_id in waiting:
            try:
                prefect_api.start_run(
                    url,
                    "document-review/on-demand",
                    {"submission_id": submission_id},
                    idempotency_key=f"submission:{submission_id}",
                )
                started.append(submission_id)
            except prefect_api.PrefectUnavailable as exc:
                get_run_logger().warning("%s: review not started: %s", submission_id, exc)
        return started


@task(name="resume-decided-runs", cache_policy=NO_CACHE)
def resume_decided_task() -> list[str]:
    """Resume runs whose request was decided while Prefect was unreachable (the decision is in our store)."""
    resumed = []
    with open_context() as ctx:
        url = prefect_api.locate(ctx.loaded.state_dir)
        with UnitOfWork(ctx.db, SYSTEM_ACTOR) as uow:
            rows = approvals.decided_requests_with_runs(uow)
        for row in rows:
            try:
                if prefect_api.state_of(url, row.flow_run_id) == "PAUSED" and prefect_api.resume(
                    url, row.flow_run_id, {"request_id": row.id, "status": row.status}
                ):
                    resumed.append(row.id)
            except Exception as exc:  # noqa: BLE001 - one run that cannot be resumed (or was deleted) keeps no other waiting
                get_run_logger().warning("%s: flow run %s not resumed: %s", row.id, row.flow_run_id, exc)
        return resumed
