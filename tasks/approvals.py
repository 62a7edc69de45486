"""Tasks of approval steps and document review: thin wrappers over qmsflow.services, all idempotent."""

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
    name="document-review-step",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[1, 5],
    retry_condition_fn=unless_refused,
)
def review_step_task(
    config: str | None,
    document_id: str,
    submitted_by: str,
    major: bool,
    still_valid: bool,
    comment: str | None,
    flow_run_id: str,
) -> dict[str, Any]:
    """The step before and after each wait for approval, idempotent (keyed by the flow run id).

    The first time: snapshot the document (path, git commit, SHA-256) and request approval, in the
    submitter's name. Once the request is decided: apply the decision (effective/obsolete, or back to
    draft) in one commit, in qmsflow's name (``conclude_review`` does nothing twice). Returns the
    request summary, with the ``outcome`` once the decision has been applied.
    """
    with open_context(config) as ctx:
        with UnitOfWork(ctx.db, submitted_by) as uow:
            request = review.open_review(
                uow,
                ctx.config,
                ctx.root,
                document_id=document_id,
                submitted_by=submitted_by,
                major=major,
                still_valid=still_valid,
                comment=comment,
                flow_run_id=flow_run_id,
            )
        if request["status"] == "pending":
            return request
        with UnitOfWork(ctx.db, SYSTEM_ACTOR) as uow:
            return {**request, "outcome": review.conclude_review(uow, ctx.config, ctx.root, request["id"])}


@task(name="render-controlled-copy", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def render_copy_task(config: str | None, request_id: str) -> dict[str, Any]:
    """HTML + PDF controlled copy of the approved version (rendered again by 'qms document render')."""
    with open_context(config) as ctx:
        with UnitOfWork(ctx.db, SYSTEM_ACTOR) as uow:
            return review.render_approved_copy(uow, ctx.config, ctx.root, ctx.loaded.state_dir / "rendered", request_id)


@task(name="deliver-outbox", cache_policy=NO_CACHE)
def deliver_outbox_task(config: str | None) -> dict[str, Any]:
    """One delivery pass; failures stay queued for the next pass (never fail the flow)."""
    with open_context(config) as ctx:
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
def follow_up_task(config: str | None) -> list[tuple[str, str, str]]:
    with open_context(config) as ctx:
        with UnitOfWork(ctx.db, SYSTEM_ACTOR) as uow:
            done = approvals.follow_up(uow, ctx.config, datetime.now(UTC))
            uow.commit()
        return done


@task(name="resume-decided-runs", cache_policy=NO_CACHE)
def resume_decided_task(config: str | None) -> list[str]:
    """Resume runs whose request was decided while Prefect was unreachable (the decision is in our store)."""
    resumed = []
    with open_context(config) as ctx:
        url = prefect_api.api_url(ctx.loaded.state_dir)
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
