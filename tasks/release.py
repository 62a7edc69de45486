"""Tasks of release validation: thin, idempotent wrappers over qmsflow.services.release."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from qmsflow.context import open_context
from qmsflow.services import release
from qmsflow.store.uow import UnitOfWork
from tasks.approvals import unless_refused

SYSTEM_ACTOR = "qmsflow"


@task(
    name="judge-release-evidence",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[1, 5],
    retry_condition_fn=unless_refused,
)
def evaluate_task(release_id: str, flow_run_id: str) -> dict[str, Any]:
    """Judge the submitted evidence once against the pre-registered criteria (a CAPA on failure, the
    override request while blocked, the signature request when met); on a re-run return the verdict."""
    with open_context() as ctx, UnitOfWork(ctx.db, SYSTEM_ACTOR) as uow:
        return release.evaluate_release(uow, ctx.config, release_id, flow_run_id)


@task(name="read-release-request", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5])
def waiting_request_task(release_id: str) -> dict[str, Any] | None:
    """The request the validation waits for now (override while blocked, else the signatures), or None."""
    with open_context() as ctx, UnitOfWork(ctx.db, SYSTEM_ACTOR) as uow:
        return release.request_of(uow, release_id)


@task(name="render-release-report", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def render_report_task(release_id: str) -> dict[str, Any]:
    """HTML + PDF of the validation report, from the store (with the signatures so far)."""
    with open_context() as ctx, UnitOfWork(ctx.db, SYSTEM_ACTOR) as uow:
        rendered = release.render_report(uow, ctx.config, ctx.loaded.state_dir / "rendered", release_id)
        return {**rendered, **release.summary(uow, release.load(uow, release_id))}
