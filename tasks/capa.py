"""Tasks of the CAPA procedure: escalation and Jira reconciliation (idempotent)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from qmsflow.adapters import jira
from qmsflow.context import open_context
from qmsflow.services import capa, jira_sync
from qmsflow.services.delivery import deliver
from qmsflow.store.uow import UnitOfWork


@task(name="escalate-overdue-capas", cache_policy=NO_CACHE)
def escalate_task() -> list[tuple]:
    with open_context() as ctx:
        with UnitOfWork(ctx.db, "qmsflow") as uow:
            done = capa.escalate_overdue(uow, ctx.config, datetime.now(UTC).date())
            uow.commit()
        return done


@task(name="reconcile-jira", cache_policy=NO_CACHE)
def reconcile_task() -> dict[str, Any]:
    with open_context() as ctx:
        settings = jira.settings(ctx.config)
        if settings is None:
            return {"jira": "off"}
        report = jira_sync.reconcile(ctx, jira.JiraAdapter(jira.make_client(settings), settings))
        out: dict[str, Any] = {"seen": report.seen, "outcomes": report.outcomes}
        if report.outcomes:  # a refusal's comment and revert, an applied stage: sent in this run, not the next
            delivered = deliver(ctx.db, ctx.config)
            out["delivered"] = {"sent": len(delivered.sent), "failed": len(delivered.failed)}
        return out
