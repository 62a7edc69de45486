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
from ..domain.capabilities import declare
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


# SOP-CAPA-001 4.1, checked in create_capa
OPENED = declare(
    "capa.opened",
    "qmsflow opens a CAPA with `qms capa open`, numbered CAPA-YYYY-NNNN, and records its title, source "
    "(complaint, incident, audit, release, pms or other), owner, severity (low, medium, high or critical), "
    "QMS process, the AI systems concerned and a free-text description. It refuses a source or severity not "
    "in these lists, an owner who is not a person of qms.yaml, and a process or AI system that qms.yaml does "
    "not name.",
    proved_by=(
        "tests/integration/test_capa.py::test_open_refuses_bad_input",
        "tests/integration/test_capa.py::test_capa_through_every_stage_with_signed_plan_and_closure",
    ),
    module=__name__,
)

# every change of a CAPA goes through create_record / update_record / uow.record (the trail)
RECORD_KEPT = declare(
    "capa.record_kept",
    "qmsflow keeps each CAPA as a record of its records store: the data of every stage, who recorded it "
    "(`recorded_by`), who signed the action plan and the closure (`signed_by`), and each change, refused move "
    "and escalation as an event of the audit trail.",
    proved_by=(
        "tests/integration/test_capa.py::test_capa_through_every_stage_with_signed_plan_and_closure",
        "tests/integration/test_capa_closure_rules.py::"
        "test_a_correct_closure_still_closes_and_keeps_the_dated_independent_check",
    ),
    module=__name__,
)


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


# create_capa's closure_gate, used by services/audit.py (a finding) and services/release.py (a failed validation)
OPENED_BY_AUDIT_AND_RELEASE = declare(
    "capa.opened_by_audit_and_release",
    "qmsflow opens a CAPA by itself, linked both ways to what it came from, for a nonconformity recorded in "
    "an internal audit (source audit) and for a release that fails its validation (source release). A CAPA "
    "opened from an audit finding cannot close until the re-check of the finding says the action was "
    "effective.",
    proved_by=(
        "tests/integration/test_audit.py::test_the_audit_end_to_end_with_a_major_finding_its_capa_and_the_signed_report",
        "tests/integration/test_release.py::test_failed_criteria_open_a_linked_capa",
    ),
    module=__name__,
)


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


# advance: the refusal is recorded (capa.advance-refused) after the rollback
REFUSALS_RECORDED = declare(
    "capa.refusals_recorded",
    "qmsflow changes nothing on a refused CAPA move and records the refusal, with the reason, in the audit "
    "trail (`capa.advance-refused`).",
    proved_by=(
        "tests/integration/test_capa_closure_rules.py::test_bad_closures_are_refused_naming_the_field_and_recorded",
        "tests/integration/test_capa_closure_rules.py::test_an_action_owner_not_in_qms_yaml_is_refused",
    ),
    module=__name__,
)

# advance (SIGNED_STAGES) + closure_signers + signed_content; applied in on_request_decided
SIGNED_STAGES_CAPABILITY = declare(
    "capa.signed_stages",
    "qmsflow puts a CAPA's action plan, and its closure, into effect only when an approval request for it is "
    "approved, by the number of signatures the CAPA's process requires in qms.yaml (`required_signatures`), "
    "among the process owner and the quality leads other than the CAPA owner; it refuses the CAPA owner's "
    "signature. The approvers see and sign the whole CAPA record as it stands, with the data of every stage "
    "so far and of the step they approve.",
    proved_by=(
        "tests/integration/test_capa.py::test_capa_through_every_stage_with_signed_plan_and_closure",
        "tests/integration/test_capa.py::test_closure_never_by_the_capa_owner",
        "tests/integration/test_signed_content.py::test_capa_approvers_see_the_whole_record_and_the_step",
    ),
    module=__name__,
)


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


# create_capa and _apply: stage_due (domain) and EFFECTIVENESS_DAYS
STAGE_DUE = declare(
    "capa.stage_due",
    "qmsflow gives the current stage of a CAPA a due date counted from the day the stage was entered: 3 days "
    "for a critical CAPA, 10 for high, 20 for medium and 30 for low. Implementation and the effectiveness "
    "check are due 30 days after they start; the start of the effectiveness check sets the CAPA's "
    "effectiveness due date, 30 days later. A closed CAPA has no due date.",
    proved_by=(
        "tests/integration/test_capa.py::test_each_stage_is_due_by_severity_and_the_check_thirty_days_later",
        "tests/integration/test_capa.py::test_capa_through_every_stage_with_signed_plan_and_closure",
    ),
    module=__name__,
)


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


# escalate_overdue, run daily by the capa-escalation flow (flows/capa.py)
ESCALATION = declare(
    "capa.escalation",
    "Once a day qmsflow looks for open CAPAs whose current stage is past its due date and climbs the deadline "
    "ladder set under `capa` in qms.yaml: by default it reminds the CAPA owner on the first day overdue, "
    "tells the owner's manager 7 days after the due date and, if `escalate_further_after_days` is set, the "
    "manager's manager. Each step is sent once per stage and due date, through Slack when Slack is switched "
    "on, and is recorded in the audit trail (`capa.escalated`); a new stage starts a new ladder.",
    proved_by=(
        "tests/integration/test_capa.py::test_escalation_goes_to_owner_then_manager_once",
        "tests/integration/test_deadlines_service.py::test_capa_ladder_days_from_config_and_a_new_stage_starts_a_new_ladder",
        "tests/integration/test_flows_in_process.py::test_capa_escalation_climbs_the_ladder_and_tells_slack",
    ),
    module=__name__,
)


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


# mirror.register: services/mirror.py (on_jira_status) and services/jira_outbox.py, jira_sync.py
JIRA_MIRROR = declare(
    "jira.capa_mirror",
    "With Jira switched on (`integrations.jira` in qms.yaml and its secrets in the environment), qmsflow "
    "creates one Jira issue for each CAPA, linked back to the CAPA, and moves the issue's status as the CAPA "
    "moves through its stages; qmsflow stays the system of record. A status set in Jira moves the CAPA only "
    "when the move needs no data and no signature and the stages allow it; any other move set in Jira is "
    "refused: qmsflow writes the reason as a comment on the issue, puts the Jira status back (unless "
    "`on_refused` is set to comment only) and records the refusal in the audit trail.",
    proved_by=(
        "tests/integration/test_jira.py::test_capa_lifecycle_is_mirrored_in_jira_through_signed_closure",
        "tests/integration/test_jira.py::test_allowed_jira_transition_moves_the_qms_stage",
        "tests/integration/test_jira.py::test_refused_jira_done_is_explained_reverted_and_recorded",
    ),
    module=__name__,
)

mirror.register("capa", MACHINE, _apply_from_jira)


def show(uow: UnitOfWork, capa_id: str) -> dict[str, Any]:
    row, capa = load(uow, capa_id)
    return {**row_values(row), "next": capa.next_stages()}


# ------------------------------------------------------------------ management review inputs (review_inputs)


# review_figures and review_risk_actions: the CAPA inputs of the management review's input pack
REVIEW_FIGURES = declare(
    "capa.review_figures",
    "For each quarterly management review, qmsflow counts, from the CAPA records and the audit trail, the "
    "CAPAs opened and closed in the quarter, the open ones that are overdue and their ages (0-30, 31-60, "
    "61-90, 91-180 and over 180 days), the effectiveness checks found effective and ineffective, and the "
    "closures that recorded a risk-register update or a reason for none, each figure with the CAPA "
    "identifiers behind it.",
    proved_by=("tests/integration/test_management_review.py::test_a_quarter_of_activity_gives_the_expected_figures",),
    module=__name__,
)
# the moves the review counts: closures, and effectiveness checks decided (out of effectiveness_check); the
# database reads only these (a quarter of a large store holds tens of thousands of other CAPA events), and
# both providers read the same query, once per gather
_CLOSING_MOVES: dict[str, Any] = {
    "actions": ["capa.advanced"],
    "states": [("after", "status", "closed"), ("before", "status", "effectiveness_check")],
}


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
    for event in trail_events(session, window.start, window.end, **_CLOSING_MOVES):
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
    for event in trail_events(session, window.start, window.end, **_CLOSING_MOVES):
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
