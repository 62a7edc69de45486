"""Deployment definitions: which flows run, on which schedule, for which QMS process.

``qms up`` serves every deployment listed in ``DEPLOYMENTS``. A deployment linked to a process
takes that process's ``schedule`` from qms.yaml when it has one, else its default cron.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flows.approval_followups import approval_follow_ups
from flows.capa import capa_escalation, jira_sync
from flows.document_review import document_review
from flows.document_review_scan import document_review_due_scan
from flows.internal_audit import audit_scan, internal_audit
from flows.management_review import management_review_actions, management_review_quarterly
from flows.outbox_delivery import outbox_delivery
from flows.release_validation import release_validation
from flows.trail_anchor import trail_anchor


@dataclass(frozen=True)
class DeploymentSpec:
    name: str
    flow: Callable[..., Any]
    process: str | None
    cron: str | None
    description: str
    parameters: dict[str, Any] = field(default_factory=dict)
    with_schedule: bool = True
    # integrations that must be on for the schedule to run (else the deployment is on demand only)
    needs: frozenset[str] = frozenset()
    # at most this many runs at once on a work pool (`qms deploy`); None: no limit (reviews wait for people)
    concurrency_limit: int | None = 1
    # the cron is read in the organisation's time zone (organisation.timezone in qms.yaml), not UTC
    local_time: bool = False


DEPLOYMENTS: list[DeploymentSpec] = [
    DeploymentSpec(
        name="daily",
        flow=document_review_due_scan,
        process="document-control",
        cron="0 6 * * *",
        description="Records every controlled document whose review is due within 30 days or overdue.",
    ),
    DeploymentSpec(
        name="on-demand",
        flow=document_review,
        process="document-control",
        cron=None,
        description="Review and signed approval of one controlled document (qms document submit).",
        with_schedule=False,
        concurrency_limit=None,
    ),
    DeploymentSpec(
        name="hourly",
        flow=approval_follow_ups,
        process=None,
        cron="17 * * * *",
        description="Reminds and escalates pending approvals; resumes runs decided while Prefect was down.",
    ),
    DeploymentSpec(
        name="daily",
        flow=capa_escalation,
        process="capa",
        cron="30 6 * * *",
        description="Escalates overdue CAPA stages to the owner, then the owner's manager (Slack, Jira comment).",
    ),
    DeploymentSpec(
        name="on-demand",
        flow=internal_audit,
        process="internal-audit",
        cron=None,
        description="One internal audit: checklist and sample, the auditor's items, the signed report (SOP-AUD-001).",
        with_schedule=False,
        concurrency_limit=None,
    ),
    DeploymentSpec(
        name="daily",
        flow=audit_scan,
        process=None,  # daily whatever the internal-audit process's own cadence in qms.yaml
        cron="45 6 * * *",
        description="Starts the run of each audit whose date has come; escalates overdue audits and findings.",
    ),
    DeploymentSpec(
        name="every-minute",
        flow=jira_sync,
        process=None,
        cron="* * * * *",
        description="Delivers queued changes to Jira and reconciles changes made in Jira.",
        needs=frozenset({"jira"}),
    ),
    DeploymentSpec(
        name="every-5-minutes",
        flow=outbox_delivery,
        process=None,
        cron="*/5 * * * *",
        description="Retries queued Slack/Jira messages with backoff (every change also delivers at once).",
        needs=frozenset({"slack", "jira"}),
    ),
    DeploymentSpec(
        name="on-demand",
        flow=release_validation,
        process="verification-validation",
        cron=None,
        description="Judges a release's evidence against its pre-registered criteria; signed report (qms release validate).",
        with_schedule=False,
        concurrency_limit=None,
    ),
    DeploymentSpec(
        name="quarterly",
        flow=management_review_quarterly,
        process="qms-governance",
        cron="0 7 1-7 1,4,7,10 *",  # domain.management_review.QUARTERLY_CRON; starts on the first working day
        description="Starts the quarter's management review on its first working day: inputs gathered and frozen.",
        local_time=True,
    ),
    DeploymentSpec(
        name="daily",
        flow=management_review_actions,
        process=None,
        cron="45 6 * * *",
        description="Escalates overdue management review actions to their owner, then the owner's manager.",
    ),
    DeploymentSpec(
        name="hourly",
        flow=trail_anchor,
        process=None,
        cron="41 * * * *",
        description="Anchors the audit trail's head in the anchors file and commits it to git (a witness).",
    ),
]


def schedule_for(
    spec: DeploymentSpec, schedules: dict[str, str | None], enabled: frozenset[str] = frozenset()
) -> str | None:
    """The cron of a deployment: its process's schedule in qms.yaml, else its default; none on demand,
    and none while none of the integrations it needs is on."""
    if not spec.with_schedule or (spec.needs and not spec.needs & enabled):
        return None
    return schedules.get(spec.process or "") or spec.cron


def schedules_of(config: Any) -> dict[str, str | None]:
    """The schedules qms.yaml gives the deployments: each process's ``schedule``; the management review's
    from ``management_review.schedule`` (a cron, or the default first working day of each quarter)."""
    schedules = {p.key: p.schedule for p in config.processes}
    custom = config.management_review.schedule
    schedules["qms-governance"] = None if custom == "first-working-day" else custom
    return schedules


def build(schedules: dict[str, str | None], enabled: frozenset[str] = frozenset(), timezone: str = "UTC") -> list:
    """RunnerDeployments for ``prefect.serve``, importable by module path from anywhere.

    No deployment carries the configuration as a parameter: a flow run reads qms.yaml from the worker's
    own environment (``QMS_CONFIG``), so nobody who can reach Prefect's API can point it at another one.
    """
    from prefect.schedules import Cron
    from prefect.types.entrypoint import EntrypointType

    out = []
    for spec in DEPLOYMENTS:
        cron = schedule_for(spec, schedules, enabled)
        when: dict[str, Any] = {"cron": cron}
        if cron and spec.local_time:
            when = {"schedule": Cron(cron, timezone=timezone)}
        out.append(
            spec.flow.to_deployment(
                name=spec.name,
                **when,
                parameters=dict(spec.parameters),
                description=spec.description,
                tags=["qmsflow"] + ([f"process:{spec.process}"] if spec.process else []),
                entrypoint_type=EntrypointType.MODULE_PATH,
            )
        )
    return out
