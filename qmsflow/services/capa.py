"""CAPA use cases: open, advance (signed stages through approval requests), escalate, Jira events.

The CAPA is a generic QMS record of kind ``capa`` (status = stage). Every change is trailed and,
when Jira is switched on, queued in the outbox for Jira in the same transaction.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..domain import limits
from ..domain.approvals import Signature
from ..domain.capa import (
    AGE_BUCKETS,
    MACHINE,
    SEVERITIES,
    SIGNED_STAGES,
    SOURCES,
    STAGE_TITLES,
    Capa,
    Facts,
    closure_signers,
    stage_due,
)
from ..domain.deadlines import Level, Notice
from ..domain.errors import DomainError, InvalidTransition
from ..domain.organisation import QmsConfig
from ..domain.records import CLOSED_STATUSES, is_overdue
from ..domain.refs import capa_step
from ..store.tables import ApprovalRequestRow, RecordRow, record_is_open
from ..store.uow import UnitOfWork
from . import contents, mirror
from .approvals import notify, open_request
from .common import row_values
from .deadlines import climb
from .reactions import on_decided
from .records import NotFound, create_record, update_record
from .review_inputs import Figure, Window, provides, trail_events


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
        effectiveness_due=row.data.get("effectiveness_due"),
        data=row.data.get("stages", {}),
    )


def load(uow: UnitOfWork, capa_id: str) -> tuple[RecordRow, Capa]:
    row = uow.session.get(RecordRow, capa_id)
    if row is None or row.kind != "capa":
        raise NotFound(f"no CAPA {capa_id}")
    return row, _capa(row)


def facts(uow: UnitOfWork, config: QmsConfig) -> Facts:
    """What the CAPA rules check against: the people of qms.yaml and today's date (the store's clock)."""
    return Facts(people=frozenset(p.id for p in config.people), today=uow.now().date())


def _quality_leads(config: QmsConfig) -> list[str]:
    return [p.id for p in config.people if "quality-lead" in p.roles]


def open_capa(uow: UnitOfWork, config: QmsConfig, **fields: Any) -> RecordRow:
    """Open a CAPA (the use case: checks, creates, queues it for Jira and commits); see ``create_capa``."""
    row = create_capa(uow, config, **fields)
    uow.commit()
    return row


def create_capa(
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
    closure_gate: dict[str, Any] | None = None,
) -> RecordRow:
    """The building block of ``open_capa`` (never commits), for a procedure that opens a CAPA inside its own
    use case (an audit finding). ``closure_gate`` ({"ref": ..., "why": ...}) is a condition the procedure
    that opened the CAPA must declare met (``satisfy_closure_gate``) before the CAPA may close."""
    limits.check_text("title", title, limits.RECORD_TITLE)
    limits.check_text("description", description, limits.TEXT, multiline=True)
    if not title.strip():
        raise DomainError("a CAPA needs a title: what went wrong, in one line")
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
            **({"closure_gate": {**closure_gate, "met": False}} if closure_gate else {}),
        },
    )
    if created:
        mirror.record_created(uow, config, row)
    return row


def satisfy_closure_gate(uow: UnitOfWork, row: RecordRow, ref: str, by: str) -> None:
    """Declare the closure gate ``ref`` of a CAPA met (building block, never commits)."""
    gate = row.data.get("closure_gate")
    if not gate or gate.get("ref") != ref:
        raise DomainError(f"{row.id} has no closure condition {ref}")
    if gate.get("met"):
        return
    update_record(uow, row, "closure-gate-met", data={**row.data, "closure_gate": {**gate, "met": True, "by": by}})


def _check_gate(row: RecordRow) -> None:
    gate = row.data.get("closure_gate")
    if gate and not gate.get("met"):
        raise InvalidTransition(f"{row.id} cannot close before {gate['why']} ({gate['ref']})")


SIGNED_WHAT = {"action_plan": "the action plan of {id}", "closed": "the closure of {id}"}
SIGNED_MEANING = {"action_plan": "approves the action plan of {id}", "closed": "approves the closure of {id}"}


def signed_content(row: RecordRow, target: str, stage_data: dict[str, Any]) -> dict[str, Any]:
    """What a signature on a CAPA step covers: the whole record as it is (every stage's data so far) and
    the stage data it enters; shown to the approver and kept in the content store under its hash."""
    return {
        "record": {k: v for k, v in row_values(row).items() if k not in ("created_at", "updated_at")},
        "step": {"kind": "capa", "id": row.id, "target": target, "title": STAGE_TITLES.get(target, target)},
        "fields": stage_data,
    }


def advance(uow: UnitOfWork, config: QmsConfig, capa_id: str, target: str, fields: dict[str, Any]) -> dict[str, Any]:
    """Move a CAPA to ``target``; a signed stage opens an approval request and waits for it."""
    limits.check_json("fields", fields)
    row, capa = load(uow, capa_id)
    if row.data.get("pending"):
        pending = row.data["pending"]
        raise InvalidTransition(f"{capa_id} waits for approval {pending['request']} to enter {pending['target']}")
    try:
        stage_data = capa.check_advance(target, fields, facts(uow, config))
    except DomainError as error:  # refused: nothing changes, and the refusal is recorded
        uow.rollback()
        uow.record(
            "capa.advance-refused",
            f"record:{capa_id}",
            None,
            {"stage": capa.stage, "target": target, "refused": str(error), "fields": sorted(fields)},
        )
        uow.commit()
        raise
    if target == "closed":
        _check_gate(row)
    stage_data = {**stage_data, "recorded_by": uow.actor}
    if target in SIGNED_STAGES:
        process = config.process(capa.process)
        approvers = closure_signers(capa.owner, process.owner, _quality_leads(config))
        if not approvers:
            raise DomainError(f"{capa_id}: nobody but the CAPA owner could sign; add a quality lead to qms.yaml")
        body = contents.record_body(signed_content(row, target, stage_data))
        content = contents.store(uow, body, contents.RECORD_JSON)
        attempt = len(row.data.get("requests", []))
        request, _ = open_request(
            uow,
            config,
            key=f"capa:{capa_id}:{target}:{attempt}",
            subject=str(capa_step(capa_id, target)),
            title=f"{capa_id} {row.title}: {'close' if target == 'closed' else 'approve the action plan'}",
            what=SIGNED_WHAT[target].format(id=capa_id),
            content_sha256=content,
            approvers=approvers,
            required=process.required_signatures,
            author=capa.owner,
            meaning=SIGNED_MEANING[target].format(id=capa_id),
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
        uow.commit()
        return {"capa": capa_id, "stage": row.status, "awaiting": request.id}
    _apply(uow, config, row, capa, target, stage_data)
    uow.commit()
    return {"capa": capa_id, "stage": row.status}


def _apply(
    uow: UnitOfWork, config: QmsConfig, row: RecordRow, capa: Capa, target: str, stage_data: dict[str, Any]
) -> None:
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
    mirror.stage_changed(uow, config, row)


EFFECTIVENESS_DAYS = 30


@on_decided("capa")
def on_request_decided(uow: UnitOfWork, config: QmsConfig, request: ApprovalRequestRow, signature: Signature) -> None:
    """Apply (approved) or drop (rejected, changes requested) the transition a CAPA request waited for,
    in the transaction of the deciding signature."""
    signer = signature.signer
    capa_id = request.data.get("capa")
    row, capa = load(uow, capa_id)
    pending = row.data.get("pending")
    if not pending or pending.get("request") != request.id:
        return  # already applied (idempotent)
    if request.status == "approved":
        if pending["target"] == "closed":
            _check_gate(row)
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


LEVEL_WORDS = {Level.REMIND: "owner", Level.ESCALATE: "manager", Level.ESCALATE_FURTHER: "manager's manager"}


def escalate_overdue(uow: UnitOfWork, config: QmsConfig, today: date) -> list[tuple]:
    """The deadline ladder of overdue stages (``capa`` in qms.yaml, days after the stage's due date): tell the
    owner, then the owner's manager, then theirs; each rung once per stage and due date, recorded in the
    trail (``capa.escalated``), sent to Slack and as a Jira comment."""
    ladder = config.capa.ladder()
    managers = {p.id: p.manager for p in config.people}
    now = datetime.combine(today, time.min, tzinfo=UTC)
    first = ladder.rungs[0].after_days if ladder.rungs else 0
    done = []
    rows = uow.session.scalars(
        select(RecordRow)
        .where(
            RecordRow.kind == "capa",
            RecordRow.status.not_in(CLOSED_STATUSES),
            RecordRow.due_date <= today - timedelta(days=first),
        )
        .order_by(RecordRow.due_date, RecordRow.id)
    ).all()
    link = f"{config.web.base_url.rstrip('/')}/capas"
    for row in rows:
        if not row.owner:
            continue
        sent = list(row.data.get("escalations", []))
        due_text = row.due_date.isoformat()

        def text(notice: Notice, row: RecordRow = row, due_text: str = due_text) -> str:
            return (
                f"{row.id} ({row.title}) is overdue in {row.status} since {due_text}"
                + ("" if notice.level is Level.REMIND else f"; owner {row.owner}")
                + "."
            )

        fired = climb(
            uow,
            config,
            ref=f"record:{row.id}",
            waiting_for=[row.owner],
            since=datetime.combine(row.due_date, time.min, tzinfo=UTC),
            now=now,
            ladder=ladder,
            managers=managers,
            sent=sent,
            event=lambda level: "capa.escalated",
            text=text,
            link=link,
            stage=row.status,
            # before the shared ladder (issue 12): "STAGE:DUE:owner", "STAGE:DUE:manager"
            legacy_keys=lambda n, st=row.status, d=due_text: (f"{st}:{d}:{LEVEL_WORDS[n.level]}",),
            details={"due": due_text},
            stream=f"capa:{row.id}",
        )
        for notice in fired:
            mirror.comment(uow, config, row, f"comment:{notice.key}", f"qmsflow escalation: {text(notice)}")
            done.append((row.id, notice.level.value, notice.to))
        if fired:
            update_record(uow, row, "escalations-recorded", data={**row.data, "escalations": sent})
    uow.commit()
    return done


# ------------------------------------------------------------------ Jira


def _apply_from_jira(uow: UnitOfWork, config: QmsConfig, row: RecordRow, target: str, data: dict[str, Any]) -> None:
    _apply(uow, config, row, _capa(row), target, data)


mirror.register("capa", MACHINE, _apply_from_jira)


def show(uow: UnitOfWork, capa_id: str) -> dict[str, Any]:
    row, capa = load(uow, capa_id)
    return {**row_values(row), "next": capa.next_stages()}


# ------------------------------------------------------------------ management review inputs (review_inputs)


@provides("c.capa", "capa")
def review_figures(session: Session, config: QmsConfig, window: Window) -> list[Figure]:
    """CAPAs opened and closed in the quarter, open ones overdue and by age as of the gathering, and the
    effectiveness checks decided in the quarter (effective: closed; ineffective: back to root cause)."""
    opened = list(
        session.scalars(
            select(RecordRow.id)
            .where(RecordRow.kind == "capa", RecordRow.created_at >= window.start, RecordRow.created_at < window.end)
            .order_by(RecordRow.id)
        )
    )
    closed, effective, ineffective = [], [], []
    for event in trail_events(session, window.start, window.end, actions=["capa.advanced"]):
        capa_id = event.record.removeprefix("record:")
        before, after = event.before or {}, event.after or {}
        if after.get("status") == "closed":
            closed.append(capa_id)
        if before.get("status") == "effectiveness_check":
            (effective if after.get("status") == "closed" else ineffective).append(capa_id)
    today = window.as_of.date()
    open_rows = session.execute(
        select(RecordRow.id, RecordRow.due_date, RecordRow.created_at)
        .where(RecordRow.kind == "capa", record_is_open())
        .order_by(RecordRow.id)
    ).all()
    overdue = [i for i, due, _ in open_rows if is_overdue(due, today)]
    figures = [
        Figure("opened this quarter", len(opened), opened),
        Figure("closed this quarter", len(closed), closed),
        Figure(f"open and overdue on {today.isoformat()}", len(overdue), overdue),
    ]
    for label, low, high in AGE_BUCKETS:
        ids = [
            i
            for i, _, created in open_rows
            if low <= (window.as_of - created).days and (high is None or (window.as_of - created).days <= high)
        ]
        figures.append(Figure(f"open, aged {label}", len(ids), ids))
    figures.append(Figure("effectiveness checks: effective", len(effective), effective))
    figures.append(Figure("effectiveness checks: ineffective (back to root cause)", len(ineffective), ineffective))
    return figures


@provides("e.risk-actions", "capa")
def review_risk_actions(session: Session, config: QmsConfig, window: Window) -> list[Figure]:
    """CAPAs closed in the quarter with a risk-register update (ISO 9001 §10.2.1 e) and those closed with a
    reason for none."""
    updated, reasons = [], []
    for event in trail_events(session, window.start, window.end, actions=["capa.advanced"]):
        after = event.after or {}
        if after.get("status") != "closed":
            continue
        closure = ((after.get("data") or {}).get("stages") or {}).get("closed") or {}
        capa_id = event.record.removeprefix("record:")
        (updated if closure.get("risk_update") else reasons).append(capa_id)
    if not updated and not reasons:
        return []
    return [
        Figure("CAPA closures that updated the risk register", len(updated), updated),
        Figure("CAPA closures with a reason for no risk update", len(reasons), reasons),
    ]
