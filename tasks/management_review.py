"""Tasks of the management review (QMS-001 4.6): start the quarter's review when it is due, escalate
overdue actions (idempotent: a review is started once per quarter, each rung fires once)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from qmsflow.context import open_context
from qmsflow.domain.management_review import review_due_on, reviewed_period
from qmsflow.services import management_review as mr
from qmsflow.store.uow import UnitOfWork


@task(name="start-due-management-review", cache_policy=NO_CACHE)
def start_due_review_task() -> dict[str, Any]:
    with open_context() as ctx:
        settings = ctx.config.management_review
        today = mr.today_in(ctx.config, datetime.now(UTC))
        if settings.schedule == "first-working-day":
            period = review_due_on(today, settings.non_working_days)
            if period is None:
                return {"started": None, "reason": f"{today.isoformat()} is not the first working day of a quarter"}
        else:
            period = reviewed_period(today)
        with ctx.db.read() as session:
            existing = mr.find(session, period)
            if existing is not None:
                return {"started": None, "review": existing.id, "reason": f"{period} was already started"}
        with UnitOfWork(ctx.db, "qmsflow") as uow:
            row = mr.start(uow, ctx.config, period)
            return {"started": row.id, "review": row.id, "period": str(period), "pack": row.data["pack"]}


@task(name="escalate-overdue-review-actions", cache_policy=NO_CACHE)
def escalate_actions_task() -> list[tuple]:
    with open_context() as ctx:
        with UnitOfWork(ctx.db, "qmsflow") as uow:
            return mr.escalate_overdue_actions(uow, ctx.config, mr.today_in(ctx.config, datetime.now(UTC)))
