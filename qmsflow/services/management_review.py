"""Management review use cases (QMS-001 4.6): start a quarter's review with a frozen, hashed input pack,
record the minutes (inputs addressed, §9.3.3 decisions with tracked actions), submit them for the signature
of top management, and keep the regulatory watch.

The inputs come from providers registered by the procedures (``services.review_inputs``); this module
names none of them. A review is a record of kind ``management-review`` (status = stage, data: the period,
the pack's SHA-256 in the content store, the minutes); each action decided is a record of kind
``mr-action`` with an owner, a due date, the shared deadline ladder and the Jira mirror.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..domain import limits
from ..domain.approvals import Signature
from ..domain.capabilities import declare
from ..domain.errors import DomainError, InvalidTransition
from ..domain.management_review import (
    ACTION_MACHINE,
    INPUT_KEYS,
    MACHINE,
    OUTPUT_KINDS,
    Period,
    check_action,
    check_output_kind,
    review_input,
    reviewed_period,
    zone,
)
from ..domain.organisation import QmsConfig
from ..domain.records import CLOSED_STATUSES, is_overdue
from ..domain.refs import Ref
from ..store.tables import ApprovalRequestRow, RecordRow, record_is_open
from ..store.uow import UnitOfWork
from . import contents, mirror, review_inputs
from .approvals import notify, open_request
from .common import row_values
from .deadlines import climb
from .reactions import on_decided
from .records import NotFound, create_record, update_record
from .review_inputs import Figure, Window, provides

KIND = "management-review"
ACTION = "mr-action"
PACK_JSON = "application/vnd.qmsflow.management-review-inputs+json"


def _refuse(uow: UnitOfWork, action: str, ref: str, error: DomainError) -> None:
    """Record a refusal in the trail (its own transaction) and raise it again."""
    uow.rollback()
    uow.record(action, ref, None, {"refused": str(error)})
    uow.commit()
    raise error


def today_in(config: QmsConfig, now: datetime) -> date:
    return now.astimezone(zone(config.organisation.timezone)).date()


def key_of(period: Period) -> str:
    return f"{KIND}:{period}"


def load(session: Session, review_id: str) -> RecordRow:
    row = session.get(RecordRow, review_id)
    if row is None or row.kind != KIND:
        raise NotFound(f"no management review {review_id}")
    return row


def find(session: Session, period: Period) -> RecordRow | None:
    return session.scalar(select(RecordRow).where(RecordRow.key == key_of(period)))


def _previous(session: Session, period: Period) -> RecordRow | None:
    rows = session.scalars(select(RecordRow).where(RecordRow.kind == KIND)).all()
    earlier = [r for r in rows if Period.parse(r.data["period"]) < period]
    return max(earlier, key=lambda r: Period.parse(r.data["period"]), default=None)


def window_for(session: Session, config: QmsConfig, period: Period, as_of: datetime) -> Window:
    start, end = period.window(config.organisation.timezone)
    previous = _previous(session, period)
    since = start
    if previous is not None:
        since = min(start, Period.parse(previous.data["period"]).window(config.organisation.timezone)[1])
    return Window(period, start, end, since, as_of, config.organisation.timezone, previous.id if previous else None)


# QMS-001 4.6: the pack built by build_pack and frozen by start
INPUT_PACK = declare(
    "review.input_pack",
    "When a management review starts, qmsflow gathers into an input pack the inputs it holds records of, "
    "and keeps the pack in its content store under its SHA-256: actions of earlier reviews (open, overdue, "
    "closed since the last review); regulatory-watch entries; changes synced from qms.yaml and document "
    "versions made effective since the last review; CAPAs opened, closed, overdue and open by age, and the "
    "outcomes of their effectiveness checks; CAPA closures with and without a risk register update; internal "
    "audits concluded, nonconformities, open findings and opportunities for improvement; overdue document "
    "reviews; release validations passed and failed, per-group fairness gaps and deviations (overrides); and "
    "approval lead times. Each figure lists the ids of the records behind it, and an input of which qmsflow "
    "holds no records is stated as such in the pack.",
    proved_by=(
        "tests/integration/test_management_review.py::test_a_quarter_of_activity_gives_the_expected_figures",
        "tests/integration/test_release.py::test_the_management_review_sees_the_quarters_validations_gaps_and_deviations",
        "tests/integration/test_audit.py::test_the_audit_end_to_end_with_a_major_finding_its_capa_and_the_signed_report",
    ),
    module=__name__,
)


def build_pack(session: Session, config: QmsConfig, window: Window) -> dict[str, Any]:
    """The input pack: every input with its figures and the record ids behind each (deterministic)."""
    return {
        "period": str(window.period),
        "timezone": window.timezone,
        "window": {"start": window.start.isoformat(), "end": window.end.isoformat(), "since": window.since.isoformat()},
        "as_of": window.as_of.isoformat(),
        "previous_review": window.previous_review,
        "inputs": review_inputs.gather(session, config, window),
    }


def chair_of(config: QmsConfig) -> str:
    governance = next((p for p in config.processes if p.key == "qms-governance"), None)
    if governance is not None:
        return governance.owner
    top = config.top_management()
    if not top:
        raise DomainError("nobody is top management: name management_review.top_management in qms.yaml")
    return top[0]


def start(uow: UnitOfWork, config: QmsConfig, period: Period | None = None) -> RecordRow:
    """Start the review of ``period`` (default: the last completed quarter): gather and freeze the input
    pack, roll open actions of earlier reviews in. Starting a period twice is refused (and recorded)."""
    now = uow.now()
    period = period or reviewed_period(today_in(config, now))
    existing = find(uow.session, period)
    if existing is not None:
        _refuse(
            uow,
            f"{KIND}.start-refused",
            f"record:{existing.id}",
            DomainError(f"the management review of {period} was already started: {existing.id}"),
        )
    if period.start > today_in(config, now):
        raise DomainError(f"{period} has not begun yet: a review covers a quarter that has started")
    window = window_for(uow.session, config, period, now)
    pack = build_pack(uow.session, config, window)
    sha = contents.store(uow, contents.record_body(pack), PACK_JSON)
    rolled = list(
        uow.session.scalars(
            select(RecordRow.id).where(RecordRow.kind == ACTION, record_is_open()).order_by(RecordRow.id)
        )
    )
    row, _ = create_record(
        uow,
        KIND,
        f"Management review {period}",
        key=key_of(period),
        owner=chair_of(config),
        process="qms-governance" if any(p.key == "qms-governance" for p in config.processes) else None,
        status="minutes",
        links=[f"content:{sha}"],
        data={
            "period": str(period),
            "pack": sha,
            "inputs": [i["key"] for i in pack["inputs"]],
            "previous_review": window.previous_review,
            "rolled_in": rolled,
            "minutes": {"addressed": {}, "outputs": {}},
        },
    )
    for action_id in rolled:
        action = uow.session.get(RecordRow, action_id)
        update_record(
            uow, action, "rolled-in", data={**action.data, "reviews": [*action.data.get("reviews", []), row.id]}
        )
    uow.commit()
    return row


def pack_of(session: Session, row: RecordRow) -> dict[str, Any]:
    stored = contents.load(session, row.data["pack"])
    if stored is None:
        raise DomainError(f"{row.id}: its input pack {row.data['pack']} is missing or altered in the store")
    return json.loads(stored.body)


def _editable(uow: UnitOfWork, review_id: str) -> RecordRow:
    row = load(uow.session, review_id)
    if row.status != "minutes":
        raise InvalidTransition(f"{review_id} is {row.status}: its minutes can no longer change")
    if row.data.get("pending"):
        raise InvalidTransition(f"{review_id} waits for approval {row.data['pending']['request']}")
    return row


def _minutes(row: RecordRow) -> dict[str, Any]:
    minutes = row.data.get("minutes") or {}
    return {"addressed": dict(minutes.get("addressed") or {}), "outputs": dict(minutes.get("outputs") or {})}


def address(uow: UnitOfWork, config: QmsConfig, review_id: str, input_key: str, note: str) -> RecordRow:
    """The chair's note on one input (d.resources: the chair's answer on the adequacy of resources)."""
    limits.check_text("note", note, limits.TEXT, multiline=True)
    review_input(input_key)
    row = _editable(uow, review_id)
    if input_key not in row.data.get("inputs", INPUT_KEYS):
        raise DomainError(f"{review_id} has no input {input_key}")
    if not note.strip():
        raise DomainError(f"{review_id}: addressing {input_key} needs a note (what the review concluded)")
    minutes = _minutes(row)
    minutes["addressed"][input_key] = note.strip()
    update_record(uow, row, "input-addressed", data={**row.data, "minutes": minutes})
    uow.commit()
    return row


def decide(
    uow: UnitOfWork,
    config: QmsConfig,
    review_id: str,
    kind: str,
    text: str,
    actions: list[dict[str, Any]] | None = None,
) -> list[str]:
    """A decision of ``kind`` (§9.3.3) with its actions; each action becomes a tracked ``mr-action``.
    Returns the ids of the actions."""
    check_output_kind(kind)
    limits.check_text("decision", text, limits.TEXT, multiline=True)
    if not text.strip():
        raise DomainError(f"{review_id}: a decision needs its text")
    row = _editable(uow, review_id)
    today = today_in(config, uow.now())
    people = [p.id for p in config.people]
    checked = [check_action(review_id, a, people, today) for a in actions or []]
    minutes = _minutes(row)
    given = dict(minutes["outputs"].get(kind) or {})
    decisions = list(given.get("decisions") or [])
    number = len(decisions) + 1
    created = []
    for index, action in enumerate(checked, 1):
        action_row, new = create_record(
            uow,
            ACTION,
            action["what"][: limits.RECORD_TITLE],
            key=f"{ACTION}:{review_id}:{kind}:{number}:{index}",
            owner=action["owner"],
            process=row.process,
            due_date=date.fromisoformat(action["due"]),
            status="open",
            links=[f"record:{review_id}"],
            data={"review": review_id, "kind": kind, "decision": text.strip(), "what": action["what"], "reviews": []},
        )
        if new:
            mirror.record_created(uow, config, action_row)
        created.append(action_row)
    decisions.append({"text": text.strip(), "actions": [a.id for a in created]})
    given["decisions"] = decisions
    given.pop("none_because", None)
    minutes["outputs"][kind] = given
    update_record(uow, row, "decision-recorded", data={**row.data, "minutes": minutes})
    ids = [a.id for a in created]
    uow.commit()
    return ids


def none_because(uow: UnitOfWork, config: QmsConfig, review_id: str, kind: str, reason: str) -> RecordRow:
    """ "None, because …" for an output kind without decisions."""
    check_output_kind(kind)
    limits.check_text("reason", reason, limits.TEXT, multiline=True)
    row = _editable(uow, review_id)
    if not reason.strip():
        raise DomainError(f"{review_id}: 'none, because …' needs the reason")
    minutes = _minutes(row)
    if (minutes["outputs"].get(kind) or {}).get("decisions"):
        raise DomainError(f"{review_id}: {kind} already has decisions; 'none' would contradict them")
    minutes["outputs"][kind] = {"decisions": [], "none_because": reason.strip()}
    update_record(uow, row, "output-none", data={**row.data, "minutes": minutes})
    uow.commit()
    return row


def signed_content(row: RecordRow) -> dict[str, Any]:
    return {
        "record": {k: v for k, v in row_values(row).items() if k not in ("created_at", "updated_at")},
        "step": {"kind": KIND, "id": row.id, "target": "signed", "title": "Minutes signed by top management"},
        "fields": {"pack": row.data["pack"], "minutes": row.data.get("minutes", {})},
    }


# QMS-001 4.6: submit below and on_request_decided
SIGNED_BY_TOP_MANAGEMENT = declare(
    "review.signed_by_top_management",
    "qmsflow asks top management (the persons named in `management_review.top_management` of qms.yaml, else "
    "those with the role `management`) to sign the submitted minutes electronically through the shared "
    "approval step; the signature covers the exact minutes and input pack, and the review is recorded as "
    "signed when the required signatures are given.",
    proved_by=(
        "tests/integration/test_management_review.py::test_minutes_blocked_until_complete_signed_and_actions_rolled_in",
        "tests/unit/test_management_review_domain.py::test_config_timezone_and_top_management",
    ),
    module=__name__,
)


def submit(uow: UnitOfWork, config: QmsConfig, review_id: str) -> dict[str, Any]:
    """Submit the minutes for the signatures of top management; refused (and recorded) naming every gap."""
    row = _editable(uow, review_id)
    try:
        MACHINE.check(review_id, row.status, "signed", {}, row.data)
    except DomainError as error:
        _refuse(uow, f"{KIND}.submit-refused", f"record:{review_id}", error)
    approvers = config.top_management()
    if not approvers:
        raise DomainError("nobody is top management: name management_review.top_management in qms.yaml")
    sha = contents.store(uow, contents.record_body(signed_content(row)), contents.RECORD_JSON)
    attempt = len(row.data.get("requests", []))
    request, _ = open_request(
        uow,
        config,
        key=f"{KIND}:{review_id}:signed:{attempt}",
        subject=str(Ref(KIND, review_id, "signed")),
        title=f"{review_id} {row.title}: sign the minutes",
        what=f"the minutes of {review_id} ({row.data['period']})",
        content_sha256=sha,
        approvers=approvers,
        required=config.management_review.required_signatures,
        author=uow.actor,
        meaning=f"approves the minutes of management review {review_id} ({row.data['period']})",
        data={"review": review_id},
        process=row.process,
    )
    update_record(
        uow,
        row,
        "approval-requested",
        data={
            **row.data,
            "pending": {"target": "signed", "request": request.id},
            "requests": [*row.data.get("requests", []), request.id],
        },
    )
    out = {"review": review_id, "awaiting": request.id, "approvers": list(request.approvers)}
    uow.commit()
    return out


@on_decided(KIND)
def on_request_decided(uow: UnitOfWork, config: QmsConfig, request: ApprovalRequestRow, signature: Signature) -> None:
    row = load(uow.session, request.data["review"])
    pending = row.data.get("pending")
    if not pending or pending.get("request") != request.id:
        return
    data = {**row.data}
    data.pop("pending", None)
    if request.status == "approved":
        data["signed"] = {"approval": request.id, "by": signature.signer, "at": signature.at.isoformat()}
        update_record(uow, row, "signed", status="signed", data=data)
    else:
        update_record(uow, row, "approval-declined", data=data)
        notify(
            uow,
            config,
            row.owner,
            f"slack:{request.id}:management-review-declined",
            f"{KIND}:{row.id}:{row.owner}",
            "notice",
            text=f"{row.id}: the minutes were {request.status.replace('_', ' ')} ({request.id}).",
            link=None,
        )


# ------------------------------------------------------------------ actions


# QMS-001 4.6: decide, advance_action, start (roll-in) and escalate_overdue_actions
ACTIONS_TRACKED = declare(
    "review.actions_tracked",
    "Each action decided in a management review (`qms management-review decide … --action`) becomes a "
    "record of its own in qmsflow, with an owner who must be a person of qms.yaml and a due date that may not "
    "be in the past; it stays open until it is marked done, or cancelled with a reason, and open actions roll "
    "into the next review. Overdue actions climb the deadline ladder of `management_review` in qms.yaml: a "
    "reminder to the owner, then to the owner's manager, each step once.",
    proved_by=(
        "tests/integration/test_management_review.py::test_minutes_blocked_until_complete_signed_and_actions_rolled_in",
        "tests/integration/test_management_review.py::test_overdue_actions_climb_the_ladder",
        "tests/unit/test_management_review_domain.py::test_action_needs_a_person_and_a_future_due_date",
    ),
    module=__name__,
)


def load_action(session: Session, action_id: str) -> RecordRow:
    row = session.get(RecordRow, action_id)
    if row is None or row.kind != ACTION:
        raise NotFound(f"no management review action {action_id}")
    return row


def _apply_action(uow: UnitOfWork, config: QmsConfig, row: RecordRow, target: str, data: dict[str, Any]) -> None:
    stages = {**(row.data.get("stages") or {}), target: data}
    update_record(uow, row, "advanced", status=target, data={**row.data, "stages": stages})
    mirror.stage_changed(uow, config, row)


def advance_action(
    uow: UnitOfWork, config: QmsConfig, action_id: str, target: str, fields: dict[str, Any]
) -> RecordRow:
    row = load_action(uow.session, action_id)
    data = ACTION_MACHINE.check(action_id, row.status, target, fields, row.data.get("stages") or {})
    _apply_action(uow, config, row, target, data)
    uow.commit()
    return row


mirror.register(ACTION, ACTION_MACHINE, _apply_action)

# QMS-001 4.6: decide queues the issue (mirror.record_created), stage changes follow (mirror.register above)
ACTIONS_IN_JIRA = declare(
    "review.actions_in_jira",
    "When Jira is switched on (`integrations.jira` in qms.yaml), qmsflow mirrors each management review "
    "action to an issue of its own in Jira.",
    proved_by=("tests/integration/test_management_review.py::test_an_action_of_a_review_is_mirrored_to_jira",),
    module=__name__,
)


def escalate_overdue_actions(uow: UnitOfWork, config: QmsConfig, today: date) -> list[tuple]:
    """The deadline ladder of overdue actions (``management_review`` in qms.yaml): owner, manager, theirs."""
    ladder = config.management_review.ladder()
    managers = {p.id: p.manager for p in config.people}
    now = datetime.combine(today, time.min, tzinfo=UTC)
    done = []
    rows = uow.session.scalars(
        select(RecordRow)
        .where(RecordRow.kind == ACTION, RecordRow.status.not_in(CLOSED_STATUSES), RecordRow.due_date < today)
        .order_by(RecordRow.due_date, RecordRow.id)
    ).all()
    for row in rows:
        sent = list(row.data.get("escalations", []))
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
            event=lambda level: f"{ACTION}.escalated",
            text=lambda n, r=row: f"{r.id} ({r.title}), from {r.data.get('review')}, is overdue since {r.due_date}.",
            link=None,
            stage=row.status,
            details={"due": row.due_date.isoformat()},
        )
        for notice in fired:
            mirror.comment(uow, config, row, f"comment:{notice.key}", f"qmsflow escalation: {row.id} is overdue")
            done.append((row.id, notice.level.value, notice.to))
        if fired:
            update_record(uow, row, "escalations-recorded", data={**row.data, "escalations": sent})
    uow.commit()
    return done


@provides("a.previous-actions", "management-review")
def review_previous_actions(session: Session, config: QmsConfig, window: Window) -> list[Figure]:
    """Actions of earlier reviews: open ones (rolled into this review), overdue ones, closed since the last."""
    rows = session.execute(
        select(RecordRow.id, RecordRow.status, RecordRow.due_date, RecordRow.updated_at)
        .where(RecordRow.kind == ACTION)
        .order_by(RecordRow.id)
    ).all()
    if not rows:
        return []
    today = window.as_of.date()
    still_open = [i for i, status, _, _ in rows if status not in CLOSED_STATUSES]
    overdue = [i for i, status, due, _ in rows if is_overdue(due, today, status)]
    closed = [i for i, status, _, at in rows if status in CLOSED_STATUSES and at >= window.since]
    return [
        Figure("open, rolled into this review", len(still_open), still_open),
        Figure(f"of which overdue on {today.isoformat()}", len(overdue), overdue),
        Figure("closed since the last review", len(closed), closed),
    ]


# ------------------------------------------------------------------ regulatory watch


# QMS-001 4.3 and 4.6: watch_add below (`qms watch add`) and its review input
REGULATORY_WATCH = declare(
    "review.regulatory_watch",
    "`qms watch add` records a dated regulatory-watch entry in qmsflow: a note on what changed, a link to its "
    "source (http or https) and the QMS processes it affects; an entry without a note, a link or a known "
    "process is refused. The entries since the last review are an input of the next management review.",
    proved_by=(
        "tests/integration/test_management_review.py::test_watch_add_refuses_bad_input",
        "tests/integration/test_management_review.py::test_a_quarter_of_activity_gives_the_expected_figures",
        "tests/integration/test_management_review.py::test_cli_start_decide_submit_show",
    ),
    module=__name__,
)


def watch_add(
    uow: UnitOfWork,
    config: QmsConfig,
    *,
    note: str,
    source: str,
    processes: list[str],
    noted_on: date | None = None,
) -> RecordRow:
    """A dated regulatory-watch entry (a change in external issues): the note, its source link, the
    processes it affects. Kept as a closed record: it is a statement, with nothing left to do."""
    limits.check_text("note", note, limits.TEXT, multiline=True)
    if not note.strip():
        raise DomainError("a watch entry needs a note: what changed")
    if not source.startswith(("http://", "https://")):
        raise DomainError(f"source {source!r} must be a link (http:// or https://)")
    known = [p.key for p in config.processes]
    unknown = [p for p in processes if p not in known]
    if unknown or not processes:
        raise DomainError(
            f"affected processes {', '.join(unknown) or '(none given)'} are not QMS processes (processes: {', '.join(known)})"
        )
    day = noted_on or today_in(config, uow.now())
    row, _ = create_record(
        uow,
        "watch-entry",
        note.strip().splitlines()[0][: limits.RECORD_TITLE],
        status="closed",
        links=[source],
        data={"note": note.strip(), "source": source, "processes": processes, "noted_on": day.isoformat()},
    )
    uow.commit()
    return row


@provides("b.regulatory-watch", "regulatory-watch")
def review_watch(session: Session, config: QmsConfig, window: Window) -> list[Figure]:
    start = window.since.astimezone(zone(window.timezone)).date()
    end = window.end.astimezone(zone(window.timezone)).date()
    rows = session.execute(
        select(RecordRow.id, RecordRow.data).where(RecordRow.kind == "watch-entry").order_by(RecordRow.id)
    ).all()
    ids = [i for i, data in rows if start <= date.fromisoformat(data["noted_on"]) < end]
    return [Figure("regulatory-watch entries", len(ids), ids)] if ids else []


def show(session: Session, review_id: str) -> dict[str, Any]:
    row = load(session, review_id)
    from ..domain.management_review import gaps

    return {
        **row_values(row),
        "pack": pack_of(session, row),
        "gaps": gaps(row.data.get("inputs", ()), row.data.get("minutes") or {}),
        "output_kinds": OUTPUT_KINDS,
    }


def minutes_html(session: Session, config: QmsConfig, review_id: str) -> str:
    """The minutes as HTML (templates/reports/management_review.html.j2): the pack's figures with their
    records, how each input was considered, the decisions and the state of their actions."""
    from ..adapters.render import render_report

    shown = show(session, review_id)
    ids = [a for d in _all_decisions(shown["data"]) for a in d.get("actions", [])]
    actions = (
        [row_values(r) for r in session.scalars(select(RecordRow).where(RecordRow.id.in_(ids)).order_by(RecordRow.id))]
        if ids
        else []
    )
    return render_report(
        "management_review.html.j2",
        {
            "review": shown,
            "pack": shown["pack"],
            "gaps": shown["gaps"],
            "output_kinds": OUTPUT_KINDS,
            "actions": actions,
            "organisation": config.organisation.name,
        },
    )


def _all_decisions(data: dict[str, Any]) -> list[dict[str, Any]]:
    outputs = (data.get("minutes") or {}).get("outputs") or {}
    return [d for given in outputs.values() for d in (given or {}).get("decisions") or []]


def reviews(session: Session) -> list[dict[str, Any]]:
    """Every review, newest quarter first, with what its minutes still lack (the dashboard's list)."""
    from ..domain.management_review import gaps

    rows = session.scalars(select(RecordRow).where(RecordRow.kind == KIND)).all()
    out = [
        {
            "id": r.id,
            "period": r.data["period"],
            "status": r.status,
            "owner": r.owner,
            "pack": r.data["pack"],
            "pending": (r.data.get("pending") or {}).get("request"),
            "gaps": len(gaps(r.data.get("inputs", ()), r.data.get("minutes") or {})),
        }
        for r in rows
    ]
    return sorted(out, key=lambda r: Period.parse(r["period"]), reverse=True)


def open_actions(session: Session) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(RecordRow).where(RecordRow.kind == ACTION, record_is_open()).order_by(RecordRow.due_date, RecordRow.id)
    ).all()
    return [row_values(r) for r in rows]
