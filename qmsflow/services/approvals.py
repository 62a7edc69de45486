"""Approval requests and e-signatures over the records store, shared by Slack, web and CLI.

Every decision and every refusal is appended to the audit trail. Notifications go through the
outbox (Slack when switched on), so a Slack outage delays them and loses none.
"""

from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..adapters import slack
from ..domain import limits
from ..domain.approvals import (
    AlreadyDecided,
    ApprovalRequest,
    Decision,
    Method,
    NotAuthorized,
    Proof,
    RequestStatus,
    RequiredRule,
    Signature,
    required_signatures,
)
from ..domain.capabilities import declare
from ..domain.deadlines import Level, Notice
from ..domain.errors import DomainError
from ..domain.organisation import QmsConfig
from ..store.tables import ApprovalRequestRow, OutboxRow, PersonRow, SignatureRow, TrailEventRow
from ..store.uow import UnitOfWork
from . import contents, reactions, sealing, signers
from .common import row_values
from .deadlines import climb
from .notices import notify
from .outbox import enqueue
from .records import NotFound, next_id
from .review_inputs import Figure, Window, provides
from .signers import Credential

if TYPE_CHECKING:
    from ..context import QmsContext

log = logging.getLogger("qmsflow.approvals")


@dataclass(frozen=True)
class DecisionResult:
    request_id: str
    status: RequestStatus
    decided: bool
    signature: Signature
    flow_run_id: str | None


def signature_of(row: SignatureRow) -> Signature:
    """The domain signature a stored row holds (what was hashed into its trail event)."""
    return Signature(
        signer=row.signer,
        printed_name=row.printed_name,
        at=row.at,
        meaning=row.meaning,
        decision=Decision(row.decision),
        comment=row.comment,
        method=Method(row.method),
        content_sha256=row.content_sha256,
        account=row.account,
        auth=row.auth,
        proof=Proof.model_validate(row.proof) if row.proof else None,
    )


def _domain(row: ApprovalRequestRow, signatures: list[SignatureRow]) -> ApprovalRequest:
    return ApprovalRequest(
        id=row.id,
        subject=row.subject,
        content_sha256=row.content_sha256,
        approvers=list(row.approvers),
        required=row.required,
        meaning=row.meaning,
        what=row.what or "",
        author=row.author,
        authors=list(row.authors or []),
        due=row.due_date,
        created_at=row.created_at,
        status=RequestStatus(row.status),
        signatures=[signature_of(s) for s in signatures],
    )


def load(uow: UnitOfWork, request_id: str) -> tuple[ApprovalRequestRow, ApprovalRequest]:
    """The request and its signatures as they are now (the unit of work holds the writers' lock)."""
    row = uow.session.get(ApprovalRequestRow, request_id, populate_existing=True)
    if row is None:
        raise NotFound(f"no approval request {request_id}")
    signatures = uow.session.scalars(
        select(SignatureRow).where(SignatureRow.request_id == request_id).order_by(SignatureRow.id)
    ).all()
    return row, _domain(row, list(signatures))


def _people(uow: UnitOfWork) -> dict[str, PersonRow]:
    return {p.id: p for p in uow.session.scalars(select(PersonRow))}


REQUESTS_DELIVERED = declare(
    "approval.requests_delivered",
    "qmsflow lists each pending approval request in the dashboard inbox of every approver who may sign it "
    "and, when Slack is switched on, sends each of them a Slack message with the request (a Slack outage "
    "delays the message and loses none).",
    proved_by=(
        "tests/integration/test_approvals_service.py::test_request_is_idempotent_and_messages_each_approver",
        "tests/integration/test_approvals_service.py::test_slack_outage_delays_but_loses_nothing_and_keeps_order",
        "tests/integration/test_web.py::test_approve_from_the_inbox_with_the_password_again",
    ),
    module=__name__,
)


def open_request(
    uow: UnitOfWork,
    config: QmsConfig,
    *,
    key: str,
    subject: str,
    title: str,
    content_sha256: str,
    approvers: list[str],
    meaning: str,
    author: str | None,
    required: RequiredRule = "all",
    flow_run_id: str | None = None,
    data: dict[str, Any] | None = None,
    comment: str | None = None,
    process: str | None = None,
    authors: list[str] | None = None,
    what: str | None = None,
) -> tuple[ApprovalRequestRow, bool]:
    """Create the request (idempotent by ``key``) and queue a message to every approver.

    ``content_sha256`` names content already kept by ``contents.store``: what approvers see and sign.
    ``authors`` (besides ``author``, who submitted it) may not sign; ``required`` is the rule declared in
    qms.yaml ("all" approvers who are not authors, or a number), resolved to a number now.
    """
    existing = uow.session.scalar(select(ApprovalRequestRow).where(ApprovalRequestRow.key == key))
    if existing is not None:
        return existing, False
    everyone = list(dict.fromkeys([*([author] if author else []), *(authors or [])]))
    try:
        count = required_signatures(required, approvers, everyone)
    except DomainError as exc:
        raise DomainError(f"cannot request approval of {subject}: {exc}") from None
    now = uow.now()
    request_id = next_id(uow, "approval", now.year)
    row = ApprovalRequestRow(
        id=request_id,
        key=key,
        subject=subject,
        title=title,
        content_sha256=content_sha256,
        approvers=approvers,
        required=count,
        meaning=meaning,
        what=(what or title)[:200],
        author=author,
        authors=everyone,
        due_date=now.date() + timedelta(days=config.approvals.due_days),
        status=RequestStatus.PENDING.value,
        flow_run_id=flow_run_id,
        process=process,
        data=dict(data or {}),
        created_at=now,
    )
    uow.session.add(row)
    uow.record("approval.requested", f"approval:{request_id}", None, row_values(row))
    people = _people(uow)
    requested_by = people[author].name if author in people else (author or "qmsflow")
    if slack.settings(config) is not None:
        stored = contents.load(uow.session, content_sha256)
        summary = contents.summary(stored) if stored else "(content not kept in the store)"
        others = [people[p].name if p in people else p for p in everyone if p != author]
        for person in _domain(row, []).pending_approvers():
            notify(
                uow,
                config,
                person,
                f"slack:{request_id}:request:{person}",
                f"approval:{request_id}:{person}",
                "approval_request",
                request=row_values(row),
                requested_by=requested_by,
                comment=comment,
                summary=summary,
                authors=others,
                unmapped=list((data or {}).get("unmapped_authors", [])),
                unverified=list((data or {}).get("unverified_authors", [])),
                reauth=config.approvals.slack_signing == "reauth",
            )
    return row, True


def answer_in_slack(
    uow: UnitOfWork, config: QmsConfig, slack_user: str, channel: str | None, key: str, text: str
) -> None:
    """Queue an answer to one Slack user (idempotent by ``key``): ephemeral in the channel they clicked in,
    else a direct message. Nothing is queued while Slack is off."""
    if slack.settings(config) is None:
        return
    message = slack.render("notice", text=text, link=None)
    if channel:
        payload = {"channel": channel, "user": slack_user, "text": message["text"], "blocks": message["blocks"]}
        enqueue(uow, key, slack.TARGET, "post_ephemeral", f"slack-user:{slack_user}", payload)
    else:
        payload = {"slack_id": slack_user, "email": None, "text": message["text"], "blocks": message["blocks"]}
        enqueue(uow, key, slack.TARGET, "post_dm", f"slack-user:{slack_user}", payload)


def decide(
    uow: UnitOfWork,
    config: QmsConfig,
    request_id: str,
    credential: Credential,
    decision: Decision,
    comment: str | None,
) -> DecisionResult:
    """Sign a request with what a channel authenticated (``credential``), or refuse and record why.

    One rule for every channel (``signers.resolve``): the credential resolves to one person's one active
    account, which may sign (not a viewer, not disabled, a password its person set); then the request's
    own rules (designated approver, not an author, not decided). The signature records the account and
    how it authenticated, and is sealed by this process's signing key (``uow.db.sealer``, ADR 0018).

    Exactly one decision per request, whatever the concurrency: the unit of work holds the writers'
    lock from its first statement, so the request and its signatures read here cannot change before
    this commits; a decided request takes no further signature; one signature per (request, signer) is
    also a database constraint. When the signature decides the request, the reaction registered for
    the subject's kind applies the decision to its records in this same transaction (the version is
    effective, the CAPA in its signed stage, the moment the request is decided).
    """
    limits.check_text("comment", comment, limits.COMMENT, multiline=True)
    sealer = uow.db.sealer
    if sealer is None:
        raise sealing.NoSigningKey(
            "this process cannot seal signatures (no signing key: open the store through its compliance repo)"
        )
    row, request = load(uow, request_id)
    try:
        signer = signers.resolve(uow, config, request_id, credential)
        request.check_may_sign(signer.person)
        if decision in (Decision.REJECT, Decision.CHANGES) and not (comment or "").strip():
            raise NotAuthorized(f"{request_id}: a {decision.label} decision needs a comment", kind="comment-required")
        signature = Signature(
            signer=signer.person,
            printed_name=signer.name,
            at=uow.now(),
            meaning=request.meaning_for(decision),
            decision=decision,
            comment=comment,
            method=credential.method,
            content_sha256=row.content_sha256,
            account=signer.account,
            auth=signer.auth,
        )
        status = request.sign(signature)
    except (NotAuthorized, AlreadyDecided) as refusal:
        uow.rollback()
        person_id = signers.claimed_person(uow, credential)
        refusal.recorded = record_refusal(
            uow, request_id, person_id, credential.claimed, credential.method, decision, refusal
        )
        uow.commit()
        raise
    event = uow.record(
        "approval.signed",
        f"approval:{request_id}",
        None,
        signature.state(),
        actor=signature.signer,
        seal=sealer.seal_for(uow),
    )
    signature = signature.model_copy(update={"proof": Proof.model_validate(event.after["proof"])})
    uow.session.add(SignatureRow(request_id=request_id, trail_seq=event.seq, **signature.model_dump()))
    if request.decided:
        before = row_values(row)
        row.status = status.value
        row.decided_at = signature.at
        uow.record("approval.decided", f"approval:{request_id}", before, row_values(row), actor=signature.signer)
        _update_request_messages(uow, config, row, signature)
        reactions.react(uow, config, row, signature)
    uow.commit()
    return DecisionResult(request_id, status, request.decided, signature, row.flow_run_id)


def check_signer(uow: UnitOfWork, config: QmsConfig, request_id: str, credential: Credential) -> None:
    """Raise the refusal ``decide`` would raise for this credential, without signing (e.g. before Slack asks
    for a comment); records nothing."""
    _, request = load(uow, request_id)
    signer = signers.resolve(uow, config, request_id, credential)
    request.check_may_sign(signer.person)


def record_refusal(
    uow: UnitOfWork,
    request_id: str,
    person_id: str | None,
    claimed: str,
    method: Method,
    decision: Decision | None,
    refusal: DomainError,
) -> bool:
    """Record a refused signature, once per request, person and reason (repeated clicks add nothing).

    Returns whether it was recorded now (False: the same refusal is already in the trail).
    """
    kind = getattr(refusal, "kind", "refused")
    who = person_id or claimed
    ref = f"approval:{request_id}"
    earlier = uow.session.scalars(
        select(TrailEventRow).where(
            TrailEventRow.record == ref, TrailEventRow.action == "approval.refused", TrailEventRow.actor == who
        )
    )
    if any(json.loads(event.after_json).get("kind") == kind for event in earlier):
        return False
    uow.record(
        "approval.refused",
        ref,
        None,
        {
            "person": person_id,
            "claimed": claimed,
            "method": method.value,
            "decision": decision.value if decision else None,
            "kind": kind,
            "reason": str(refusal),
        },
        actor=who,
    )
    return True


def _update_request_messages(uow: UnitOfWork, config: QmsConfig, row: ApprovalRequestRow, signature: Signature) -> None:
    """Replace the Slack messages that asked for signatures: decided, by whom, no more buttons."""
    for sent in uow.session.scalars(
        select(OutboxRow).where(OutboxRow.key.startswith(f"slack:{row.id}:request:", autoescape=True))
    ):
        message = slack.render(
            "approval_decided",
            web_url=config.web.base_url.rstrip("/"),
            request=row_values(row),
            status_label=signature.decision.label,
            signer=signature.printed_name,
            at=f"{signature.at:%Y-%m-%d %H:%M}",
            comment=signature.comment,
        )
        enqueue(
            uow,
            f"{sent.key}:update",
            slack.TARGET,
            "update",
            sent.stream,
            {"ref": sent.key, "text": message["text"], "blocks": message["blocks"]},
        )


def pending_for(uow: UnitOfWork, person_id: str) -> list[ApprovalRequestRow]:
    rows = uow.session.scalars(
        select(ApprovalRequestRow)
        .where(ApprovalRequestRow.status == RequestStatus.PENDING.value)
        .order_by(ApprovalRequestRow.created_at)
    ).all()
    out = []
    for row in rows:
        signers = set(uow.session.scalars(select(SignatureRow.signer).where(SignatureRow.request_id == row.id)))
        authors = set(row.authors or []) | ({row.author} if row.author else set())
        if person_id in row.approvers and person_id not in signers and person_id not in authors:
            out.append(row)
    return out


FOLLOW_UP = declare(
    "approval.follow_up",
    "qmsflow reminds each approver whose signature is still pending, then escalates to their manager (and, "
    "if qms.yaml sets it, to the manager's manager), after the days set under `approvals` in qms.yaml (by "
    "default 3 and 7 days after the request); each step happens once per approver and is recorded in the "
    "audit trail.",
    proved_by=(
        "tests/integration/test_approvals_service.py::test_reminders_then_escalation_each_once_and_recorded",
        "tests/integration/test_flows_in_process.py::test_approval_follow_ups_remind_and_escalate_once",
    ),
    module=__name__,
)


def follow_up(uow: UnitOfWork, config: QmsConfig, now: datetime) -> list[tuple[str, str, str]]:
    """The deadline ladder of pending signatures (``approvals`` in qms.yaml, days from the request's creation):
    remind each pending approver, escalate to their manager, further to the manager's manager; each rung
    once per approver, recorded in the trail (``approval.reminded`` / ``approval.escalated``)."""
    done: list[tuple[str, str, str]] = []
    people = _people(uow)
    managers = {pid: p.manager for pid, p in people.items()}
    ladder = config.approvals.ladder()
    rows = uow.session.scalars(
        select(ApprovalRequestRow)
        .where(ApprovalRequestRow.status == RequestStatus.PENDING.value)
        .order_by(ApprovalRequestRow.created_at)
    ).all()
    for row in rows:
        if not ladder.due(row.created_at, now):
            continue
        _, request = load(uow, row.id)
        ref = f"approval:{row.id}"
        sent = list(row.data.get("follow_ups", []))

        def text(notice: Notice, row: ApprovalRequestRow = row) -> str:
            if notice.level is Level.REMIND:
                return f"Reminder: {row.id} ({row.title}) waits for your signature since {row.created_at:%Y-%m-%d}."
            waiting = people[notice.waiting_for].name if notice.waiting_for in people else notice.waiting_for
            return f"Escalation: {row.id} ({row.title}) has waited for {waiting} since {row.created_at:%Y-%m-%d}; please follow up."

        fired = climb(
            uow,
            config,
            ref=ref,
            waiting_for=request.pending_approvers(),
            since=row.created_at,
            now=now,
            ladder=ladder,
            managers=managers,
            sent=sent,
            event=lambda level: "approval.reminded" if level is Level.REMIND else "approval.escalated",
            text=text,
            link=f"{config.web.base_url.rstrip('/')}/approvals/{row.id}",
            # before the shared ladder (issue 12): "remind:APR-…:person", "escalate:APR-…:person"
            legacy_keys=lambda n, rid=row.id: (f"{n.level.value}:{rid}:{n.waiting_for}",),
            details={"age_days": (now - row.created_at).days},
        )
        if fired:
            before = row_values(row)
            row.data = {**row.data, "follow_ups": sent}  # each rung once, Slack on or off
            uow.record("approval.follow-up-recorded", ref, before, row_values(row), actor="qmsflow")
            done.extend((row.id, n.level.value, n.to) for n in fired)
    return done


def decided_requests_with_runs(uow: UnitOfWork, since: date | None = None) -> list[ApprovalRequestRow]:
    query = select(ApprovalRequestRow).where(
        ApprovalRequestRow.status != RequestStatus.PENDING.value, ApprovalRequestRow.flow_run_id.is_not(None)
    )
    if since:
        query = query.where(ApprovalRequestRow.decided_at >= datetime.combine(since, datetime.min.time()).astimezone())
    return list(uow.session.scalars(query))


# how long a resume is tried while Prefect answers "busy": RESUME_INLINE seconds in the caller's thread
# (a request's background task), then up to RESUME_WITHIN by two threads of the process's own, so that
# retries never hold the threads that serve requests. 50 reviews approved at once kept the embedded
# (SQLite) Prefect server answering 503 "database is locked" for longer than 5 s, and every run given up
# on waited for the hourly follow-up.
RESUME_INLINE = 5.0
RESUME_WITHIN = 60.0
_resumers: ThreadPoolExecutor | None = None
_resumers_lock = threading.Lock()


def after_decision(ctx: QmsContext, result: DecisionResult, inline: bool = False) -> Future | None:
    """Once a request is decided, resume the flow run waiting for it; then send what is queued.

    Shared by every way of signing (Slack, dashboard, API, CLI), after the signer has the answer. A
    resume that fails is logged, not raised: the decision is recorded, and the hourly follow-up flow
    resumes the run later. While Prefect answers busy the resume goes on in the background (returned);
    ``inline`` (the CLI, whose process would wait for it anyway) tries the whole time here.
    """
    from ..adapters import prefect_api
    from .delivery import deliver

    pending = None
    if result.decided and result.flow_run_id:
        run_input = {"request_id": result.request_id, "status": result.status.value}
        try:
            endpoint = prefect_api.locate(ctx.loaded.state_dir)
            prefect_api.resume(
                endpoint, result.flow_run_id, run_input, within=RESUME_WITHIN if inline else RESUME_INLINE
            )
        except prefect_api.PrefectUnavailable as exc:
            if isinstance(exc, prefect_api.PrefectBusy) and not inline:
                pending = _resume_later(endpoint, result.flow_run_id, run_input)
            else:
                log.warning("%s (the hourly follow-up flow resumes it later)", exc)
    deliver(ctx.db, ctx.config)
    return pending


def _resume_later(endpoint: Any, flow_run_id: str, run_input: dict[str, Any]) -> Future:  # noqa: ANN401
    from ..adapters import prefect_api

    def attempt() -> None:
        try:
            prefect_api.resume(endpoint, flow_run_id, run_input, within=RESUME_WITHIN - RESUME_INLINE)
        except prefect_api.PrefectUnavailable as exc:
            log.warning("%s (the hourly follow-up flow resumes it later)", exc)

    global _resumers
    with _resumers_lock:
        if _resumers is None:
            _resumers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="qms-resume")
    return _resumers.submit(attempt)


@provides("c.approval-lead-times", "approvals")
def review_lead_times(session: Session, config: QmsConfig, window: Window) -> list[Figure]:
    """Approval requests decided in the quarter: how many, and their lead times in days (request to decision)."""
    rows = session.execute(
        select(ApprovalRequestRow.id, ApprovalRequestRow.created_at, ApprovalRequestRow.decided_at)
        .where(ApprovalRequestRow.decided_at >= window.start, ApprovalRequestRow.decided_at < window.end)
        .order_by(ApprovalRequestRow.id)
    ).all()
    if not rows:
        return []
    ids = [r[0] for r in rows]
    days = sorted((decided - created).total_seconds() / 86400 for _, created, decided in rows)
    median = days[len(days) // 2] if len(days) % 2 else (days[len(days) // 2 - 1] + days[len(days) // 2]) / 2
    p90 = days[min(len(days) - 1, int(0.9 * len(days)))]
    return [
        Figure("approvals decided this quarter", len(ids), ids),
        Figure("median lead time (days)", round(median, 2), ids),
        Figure("90th percentile lead time (days)", round(p90, 2), ids),
        Figure("longest lead time (days)", round(days[-1], 2), ids),
    ]
