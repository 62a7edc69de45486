"""CAPA use cases: open, advance (signed stages through approval requests), escalate, Jira events.

The CAPA is a generic QMS record of kind ``capa`` (status = stage). Every change is trailed and,
when Jira is switched on, queued in the outbox for Jira in the same transaction.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from sqlalchemy import select

from ..domain.capa import SEVERITIES, SIGNED_STAGES, SOURCES, Capa, closure_signers, stage_due
from ..domain.errors import DomainError, InvalidTransition
from ..domain.organisation import QmsConfig
from ..store.tables import ApprovalRequestRow, OutboxRow, RecordRow
from ..store.uow import UnitOfWork
from .approvals import notify, open_request
from .common import row_values
from .outbox import enqueue
from .records import NotFound, create_record, update_record


def _capa(row: RecordRow) -> Capa:
    return Capa(
        id=row.id,
        title=row.title,
        source=row.data.get("source", "other"),
        owner=row.owner or "",
        process=row.process or "capa",
        severity=row.data.get("severity", "medium"),
        stage=row.status,
        due=row.due_date,
        data=row.data.get("stages", {}),
    )


def load(uow: UnitOfWork, capa_id: str) -> tuple[RecordRow, Capa]:
    row = uow.session.get(RecordRow, capa_id)
    if row is None or row.kind != "capa":
        raise NotFound(f"no CAPA {capa_id}")
    return row, _capa(row)


def _quality_leads(config: QmsConfig) -> list[str]:
    return [p.id for p in config.people if "quality-lead" in p.roles]


def open_capa(
    uow: UnitOfWork,
    config: QmsConfig,
    *,
    title: str,
    source: str,
    owner: str,
    process: str = "capa",
    severity: str = "medium",
    description: str = "",
    systems: list[str] | None = None,
    key: str | None = None,
    links: list[str] | None = None,
) -> RecordRow:
    people = {p.id for p in config.people}
    if source not in SOURCES:
        raise DomainError(f"source {source!r} is not allowed (allowed: {', '.join(SOURCES)})")
    if severity not in SEVERITIES:
        raise DomainError(f"severity {severity!r} is not allowed (allowed: {', '.join(SEVERITIES)})")
    if owner not in people:
        raise DomainError(f"owner {owner!r} is not a person (people: {', '.join(sorted(people))})")
    if process not in {p.key for p in config.processes}:
        raise DomainError(
            f"process {process!r} is not a QMS process (processes: {', '.join(p.key for p in config.processes)})"
        )
    unknown = [s for s in systems or [] if s not in {x.id for x in config.systems}]
    if unknown:
        raise DomainError(f"unknown AI system(s) {', '.join(unknown)}")
    today = uow.now().date()
    row, created = create_record(
        uow,
        "capa",
        title,
        key=key,
        owner=owner,
        process=process,
        due_date=stage_due(today, severity),
        systems=systems or [],
        links=links or [],
        status="opened",
        data={
            "source": source,
            "severity": severity,
            "description": description,
            "stages": {},
            "stage_since": today.isoformat(),
        },
    )
    if created:
        jira_sync(uow, config, row, "create")
    return row


def advance(uow: UnitOfWork, config: QmsConfig, capa_id: str, target: str, fields: dict[str, Any]) -> dict[str, Any]:
    """Move a CAPA to ``target``; a signed stage opens an approval request and waits for it."""
    row, capa = load(uow, capa_id)
    if row.data.get("pending"):
        pending = row.data["pending"]
        raise InvalidTransition(f"{capa_id} waits for approval {pending['request']} to enter {pending['target']}")
    stage_data = capa.check_advance(target, fields)
    if target in SIGNED_STAGES:
        process_owner = config.process(capa.process).owner
        approvers = closure_signers(capa.owner, process_owner, _quality_leads(config))
        if not approvers:
            raise DomainError(f"{capa_id}: nobody but the CAPA owner could sign; add a quality lead to qms.yaml")
        content = _digest({"capa": capa_id, "target": target, "data": stage_data})
        attempt = len(row.data.get("requests", []))
        request, _ = open_request(
            uow,
            config,
            key=f"capa:{capa_id}:{target}:{attempt}",
            subject=f"capa:{capa_id}@{target}",
            title=f"{capa_id} {row.title}: {'close' if target == 'closed' else 'approve the action plan'}",
            content_sha256=content,
            approvers=approvers,
            author=capa.owner,
            meaning=("close " if target == "closed" else "approve the action plan of ") + capa_id,
            data={"capa": capa_id, "target": target, "fields": stage_data},
            process=capa.process,
        )
        update_record(
            uow,
            row,
            "approval-requested",
            data={
                **row.data,
                "pending": {"target": target, "request": request.id},
                "requests": [*row.data.get("requests", []), request.id],
            },
        )
        return {"capa": capa_id, "stage": row.status, "awaiting": request.id}
    _apply(uow, config, row, capa, target, stage_data)
    return {"capa": capa_id, "stage": row.status}


def _apply(
    uow: UnitOfWork, config: QmsConfig, row: RecordRow, capa: Capa, target: str, stage_data: dict[str, Any]
) -> None:
    previous = row.status
    capa.apply(target, stage_data)
    today = uow.now().date()
    data = {**row.data, "stages": capa.data, "stage_since": today.isoformat()}
    data.pop("pending", None)
    if target == "implementation":
        due = today + timedelta(days=max(EFFECTIVENESS_DAYS, 1))
    elif target == "effectiveness_check":
        due = today + timedelta(days=EFFECTIVENESS_DAYS)
        data["effectiveness_due"] = due.isoformat()
    elif target == "closed":
        due = None
    else:
        due = stage_due(today, capa.severity)
    update_record(uow, row, "advanced", status=target, due_date=due, data=data)
    jira_sync(uow, config, row, "transition", previous=previous)


EFFECTIVENESS_DAYS = 30


def on_request_decided(uow: UnitOfWork, config: QmsConfig, request: ApprovalRequestRow, signer: str) -> None:
    """Apply (approved) or drop (rejected, changes requested) the transition a CAPA request waited for."""
    capa_id = request.data.get("capa")
    row, capa = load(uow, capa_id)
    pending = row.data.get("pending")
    if not pending or pending.get("request") != request.id:
        return  # already applied (idempotent)
    if request.status == "approved":
        stage_data = {**request.data["fields"], "signed_by": signer, "approval": request.id}
        _apply(uow, config, row, capa, pending["target"], stage_data)
    else:
        data = {**row.data}
        data.pop("pending", None)
        update_record(uow, row, "approval-declined", data=data)
        notify(
            uow,
            config,
            row.owner,
            f"slack:{request.id}:capa-declined",
            f"capa:{capa_id}:{row.owner}",
            "notice",
            text=f"{capa_id}: {pending['target']} was {request.status.replace('_', ' ')} ({request.id}).",
            link=None,
        )


def escalate_overdue(uow: UnitOfWork, config: QmsConfig, today: date, manager_after_days: int = 7) -> list[tuple]:
    """Overdue stages: tell the owner, then the owner's manager; each once per stage; recorded."""
    managers = {p.id: p.manager for p in config.people}
    done = []
    rows = uow.session.scalars(
        select(RecordRow)
        .where(RecordRow.kind == "capa", RecordRow.status != "closed", RecordRow.due_date < today)
        .order_by(RecordRow.due_date)
    )
    for row in rows:
        overdue_days = (today - row.due_date).days
        targets = [("owner", row.owner)]
        if overdue_days >= manager_after_days and managers.get(row.owner):
            targets.append(("manager", managers[row.owner]))
        sent = list(row.data.get("escalations", []))
        for level, person in targets:
            key = f"{row.status}:{row.due_date.isoformat()}:{level}"
            if key in sent or not person:
                continue
            sent.append(key)
            text = (
                f"{row.id} ({row.title}) is overdue in {row.status} since {row.due_date.isoformat()}"
                + ("" if level == "owner" else f"; owner {row.owner}")
                + "."
            )
            uow.record(
                "capa.escalated",
                f"record:{row.id}",
                None,
                {"to": person, "level": level, "stage": row.status, "due": row.due_date.isoformat()},
                actor="qmsflow",
            )
            notify(
                uow,
                config,
                person,
                f"slack:{row.id}:escalate:{key}",
                f"capa:{row.id}:{person}",
                "notice",
                text=text,
                link=f"{config.web.base_url.rstrip('/')}/capas",
            )
            jira_enqueue(uow, config, row, f"comment:{key}", "comment", {"body": f"qmsflow escalation: {text}"})
            done.append((row.id, level, person))
        if len(sent) != len(row.data.get("escalations", [])):
            update_record(uow, row, "escalations-recorded", data={**row.data, "escalations": sent})
    return done


# ------------------------------------------------------------------ Jira


def jira_sync(uow: UnitOfWork, config: QmsConfig, row: RecordRow, what: str, previous: str | None = None) -> None:
    """Queue the Jira side of a change: the issue (create) or its status (transition, when it differs)."""
    from ..adapters import jira

    settings = jira.settings(config)
    if settings is None:
        return
    if what == "create":
        jira_enqueue(
            uow,
            config,
            row,
            "create",
            "create",
            {
                "summary": f"{row.id} {row.title}"[:250],
                "description": _description(config, row),
                "issue_type": settings.issue_type("capa"),
                "labels": ["qms", f"qms-{row.id}"],
            },
        )
    status = settings.status_for(row.status)
    if what == "transition" and status and status != settings.status_for(previous or ""):
        jira_enqueue(
            uow,
            config,
            row,
            f"status:{row.status}:{len(row.data.get('stages', {}))}",
            "transition",
            {"status": status, "stage": row.status},
        )


def jira_enqueue(
    uow: UnitOfWork, config: QmsConfig, row: RecordRow, suffix: str, action: str, payload: dict[str, Any]
) -> None:
    from ..adapters import jira

    if jira.settings(config) is None:
        return
    enqueue(
        uow,
        f"jira:{row.id}:{suffix}",
        jira.TARGET,
        action,
        f"jira:{row.id}",
        {"record": row.id, "create_key": f"jira:{row.id}:create", **payload},
    )


def _description(config: QmsConfig, row: RecordRow) -> str:
    return (
        f"{row.data.get('description', '')}\n\nQMS record {row.id} (source {row.data.get('source')}, severity "
        f"{row.data.get('severity')}, owner {row.owner}). qmsflow is the system of record: stage changes are "
        f"checked there. {config.web.base_url.rstrip('/')}/capas"
    )


def on_jira_status(uow: UnitOfWork, config: QmsConfig, capa_id: str, jira_status: str, source: str) -> str:
    """A status change made in Jira: apply it when the QMS allows it, else refuse, explain and revert."""
    from ..adapters import jira

    settings = jira.settings(config)
    row, capa = load(uow, capa_id)
    if settings is None or jira_status == settings.status_for(row.status):
        return "unchanged"  # Jira shows the stage the QMS has (e.g. our own transition echoed back)
    in_flight = uow.session.scalar(
        select(OutboxRow.id).where(OutboxRow.stream == f"jira:{capa_id}", OutboxRow.status != "sent").limit(1)
    )
    if in_flight is not None:
        return "deferred"  # our newer change is still on its way to Jira; it will overwrite this status
    target = settings.stage_for(jira_status)
    if target is None or target == row.status:
        return "unchanged"
    reason = None
    if target in SIGNED_STAGES:
        reason = f"{target} needs a signed approval in qmsflow"
    else:
        try:
            stage_data = capa.check_advance(target, {})
        except DomainError as exc:
            reason = str(exc)
    if reason is None:
        _apply(uow, config, row, capa, target, {**stage_data, "via": f"jira:{source}"})
        return "applied"
    uow.record(
        "capa.jira-transition-refused",
        f"record:{capa_id}",
        None,
        {"jira_status": jira_status, "stage": row.status, "reason": reason, "via": source},
        actor="jira",
    )
    attempt = len([k for k in row.data.get("jira_refusals", [])])
    update_record(
        uow,
        row,
        "jira-refusal-recorded",
        data={**row.data, "jira_refusals": [*row.data.get("jira_refusals", []), jira_status]},
    )
    jira_enqueue(
        uow,
        config,
        row,
        f"refusal:{attempt}:comment",
        "comment",
        {
            "body": f"qmsflow refused the move to '{jira_status}': {reason}. The QMS keeps {capa_id} in "
            f"'{row.status}'" + (" and reverts the Jira status." if settings.on_refused == "revert" else ".")
        },
    )
    back = settings.status_for(row.status)
    if settings.on_refused == "revert" and back:
        jira_enqueue(uow, config, row, f"refusal:{attempt}:revert", "transition", {"status": back, "stage": row.status})
    return "refused"


def _digest(value: Any) -> str:
    import hashlib

    from ..domain.trail import canonical_json

    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def show(uow: UnitOfWork, capa_id: str) -> dict[str, Any]:
    row, capa = load(uow, capa_id)
    return {**row_values(row), "next": capa.next_stages()}
