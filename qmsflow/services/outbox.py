"""The outbox: messages to Slack and Jira written with the change that causes them, delivered later.

``enqueue`` runs inside the unit of work of the change (same transaction, idempotent by key). A
message says what should be true ("CAPA-… should be in stage X"), not how: the handler of its target
decides at delivery, from the configuration of that moment, what to send. An intent may supersede
the queued (or parked) intents of the same kind in its stream: only the latest desired state is sent.

``deliver_pending`` sends what is due, in id order per stream, with backoff; a row whose stream has
an earlier undelivered row waits for it. Rows are claimed with a conditional UPDATE, so two
deliverers never send the same row twice. Failures (see ``adapters.base``):

- the target is down or failing on its side: retried with backoff (Retry-After when given), never
  parked; an outage delays work, it never loses it and never needs a person to retry;
- the target refused the message: after ``park_after`` refusals in a row it is **parked**. A parked
  message no longer holds back its stream; ``qms outbox list|retry|drop`` and the dashboard show it;
- a changed configuration of the target (``qms.yaml``) makes failing and parked messages of that
  target due again at once: they were resolved against the old configuration.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ..adapters.base import DeliveryError, Handler, RetryLater, Unavailable, Waiting
from ..domain.errors import DomainError
from ..store.db import Database
from ..store.tables import OutboxRow
from ..store.uow import UnitOfWork

log = logging.getLogger("qmsflow.outbox")
PENDING, SENDING, SENT = "pending", "sending", "sent"
PARKED, SUPERSEDED, DROPPED = "parked", "superseded", "dropped"
UNSENT = (PENDING, SENDING, PARKED)
CLAIM_SECONDS = 300
MAX_BACKOFF = timedelta(hours=1)
PARK_AFTER = 5
WAITING = "waiting: "  # last_error of a row that waits for another one (nothing was attempted)


def enqueue(
    uow: UnitOfWork,
    key: str,
    target: str,
    action: str,
    stream: str,
    payload: dict[str, Any],
    supersedes: tuple[str, ...] = (),
) -> OutboxRow:
    """Queue a message (idempotent by ``key``). ``supersedes``: actions of the same stream whose queued
    or parked messages this one replaces (they are marked superseded, in the same transaction)."""
    existing = uow.session.scalar(select(OutboxRow).where(OutboxRow.key == key))
    if existing is not None:
        return existing
    if supersedes:
        # a message being sent right now (status sending) is left alone: this one follows it
        uow.session.execute(
            update(OutboxRow)
            .where(
                OutboxRow.stream == stream,
                OutboxRow.action.in_(supersedes),
                OutboxRow.status.in_((PENDING, PARKED)),
            )
            .values(status=SUPERSEDED, result={"superseded_by": key}, next_attempt_at=uow.now())
            .execution_options(synchronize_session=False)
        )
    now = uow.now()
    row = OutboxRow(
        key=key,
        target=target,
        action=action,
        stream=stream,
        payload=payload,
        status=PENDING,
        attempts=0,
        failures=0,
        next_attempt_at=now,
        result={},
        created_at=now,
    )
    uow.session.add(row)
    return row


def count_in_stream(uow: UnitOfWork, stream: str, actions: tuple[str, ...]) -> int:
    """How many messages of these actions the stream ever had (a stable suffix for the next key)."""
    return uow.session.scalar(
        select(func.count()).select_from(OutboxRow).where(OutboxRow.stream == stream, OutboxRow.action.in_(actions))
    )


def backoff(attempts: int) -> timedelta:
    return min(timedelta(seconds=15 * 2 ** min(max(attempts - 1, 0), 20)), MAX_BACKOFF)


def fingerprint(settings: Any) -> str:
    """A short digest of a target's configuration: failures remember it, a change makes them due again."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class DeliveryReport:
    sent: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    parked: list[tuple[str, str]] = field(default_factory=list)
    waiting: int = 0
    revived: int = 0
    fetched: int = 0
    last_id: int = 0


def deliver_pending(
    db: Database,
    handlers: dict[str, Handler],
    now: datetime | None = None,
    batch: int = 200,
    max_batches: int = 50,
    park_after: int = PARK_AFTER,
    configs: dict[str, str] | None = None,
) -> DeliveryReport:
    """Send due rows for the targets in ``handlers``, batch after batch while batches make progress;
    rows for other targets stay queued. ``configs``: the fingerprint of each target's configuration."""
    now = now or datetime.now(UTC)
    total = DeliveryReport()
    total.revived = _revive(db, configs or {}, now)
    blocked: set[str] = set()
    after_id = 0
    for _ in range(max_batches):
        report = _deliver_batch(db, handlers, now, batch, after_id, blocked, park_after, configs or {})
        total.sent += report.sent
        total.failed += report.failed
        total.parked += report.parked
        total.waiting += report.waiting
        after_id = report.last_id
        if report.fetched < batch:
            break
    return total


def _revive(db: Database, configs: dict[str, str], now: datetime) -> int:
    """Failing and parked rows whose target configuration changed since they failed: due again, now."""
    revived = 0
    with db.session() as session, session.begin():
        for target, digest in configs.items():
            done = session.execute(
                update(OutboxRow)
                .where(
                    OutboxRow.status.in_((PENDING, PARKED)),
                    OutboxRow.target == target,
                    OutboxRow.config_sha.is_not(None),
                    OutboxRow.config_sha != digest,
                )
                .values(status=PENDING, failures=0, next_attempt_at=now, config_sha=None)
            )
            revived += done.rowcount
    if revived:
        log.info("outbox: %d failing or parked message(s) due again: their target's configuration changed", revived)
    return revived


def _deliver_batch(
    db: Database,
    handlers: dict[str, Handler],
    now: datetime,
    limit: int,
    after_id: int,
    blocked: set[str],
    park_after: int,
    configs: dict[str, str],
) -> DeliveryReport:
    """One batch of rows after ``after_id``; ``blocked`` streams (carried across batches) wait."""
    report = DeliveryReport()
    with db.read() as session:
        rows = session.execute(
            select(
                OutboxRow.id,
                OutboxRow.key,
                OutboxRow.target,
                OutboxRow.action,
                OutboxRow.stream,
                OutboxRow.payload,
                OutboxRow.status,
                OutboxRow.next_attempt_at,
                OutboxRow.attempts,
                OutboxRow.failures,
                OutboxRow.last_error,
            )
            .where(OutboxRow.status.in_((PENDING, SENDING)), OutboxRow.id > after_id)
            .order_by(OutboxRow.id)
            .limit(limit)
        ).all()
    report.fetched = len(rows)
    report.last_id = rows[-1].id if rows else after_id
    for row in rows:
        if row.stream in blocked or row.target not in handlers:
            report.waiting += 1
            blocked.add(row.stream)
            continue
        if row.next_attempt_at > now or not _claim(db, row.id, row.attempts, now):
            report.waiting += 1
            blocked.add(row.stream)
            continue
        config = configs.get(row.target)
        try:
            payload = {**row.payload, "_attempt": row.attempts}  # a retry may need to look before it acts
            result = handlers[row.target](row.action, payload, lambda key: _result_of(db, key))
        except Waiting as exc:
            _release(db, row, str(exc))
            report.waiting += 1
            blocked.add(row.stream)
        except RetryLater as exc:
            _failed(db, row, now + timedelta(seconds=max(exc.seconds, 1)), str(exc), config, counts=False)
            report.failed.append((row.key, str(exc)))
            blocked.add(row.stream)
        except Unavailable as exc:
            _failed(db, row, now + backoff(row.attempts + 1), str(exc), config, counts=False)
            report.failed.append((row.key, str(exc)))
            blocked.add(row.stream)
        except Exception as exc:  # noqa: BLE001 - refused (DeliveryError) or a bug: counts towards parking
            if not isinstance(exc, DeliveryError):
                log.debug("delivery of %s failed", row.key, exc_info=True)  # a trace for the logs, not the CLI
                error = f"{exc.__class__.__name__}: {exc}"
            else:
                error = str(exc)
            parked = _failed(
                db, row, now + backoff(row.attempts + 1), error, config, counts=True, park_after=park_after
            )
            if parked:
                report.parked.append((row.key, error))
            else:
                blocked.add(row.stream)
            report.failed.append((row.key, error))
        else:
            with db.session() as session, session.begin():
                session.execute(
                    update(OutboxRow)
                    .where(OutboxRow.id == row.id)
                    .values(
                        status=SENT,
                        result=result,
                        sent_at=datetime.now(UTC),
                        attempts=row.attempts + 1,
                        failures=0,
                        last_error=None,
                        config_sha=None,
                    )
                )
            report.sent.append(row.key)
    return report


def _claim(db: Database, row_id: int, attempts: int, now: datetime) -> bool:
    """Take the row for one attempt. The attempt is counted now: a deliverer that dies after sending
    leaves a row whose next claim (after CLAIM_SECONDS) knows it is a retry and looks before it acts."""
    with db.session() as session, session.begin():
        done = session.execute(
            update(OutboxRow)
            .where(OutboxRow.id == row_id, OutboxRow.status.in_((PENDING, SENDING)), OutboxRow.next_attempt_at <= now)
            .values(status=SENDING, attempts=attempts + 1, next_attempt_at=now + timedelta(seconds=CLAIM_SECONDS))
        )
        return done.rowcount == 1


def _release(db: Database, row: Any, reason: str) -> None:
    """Nothing was attempted: back to pending as it was, no attempt counted."""
    with db.session() as session, session.begin():
        session.execute(
            update(OutboxRow)
            .where(OutboxRow.id == row.id, OutboxRow.status == SENDING)
            .values(
                status=PENDING,
                attempts=row.attempts,
                next_attempt_at=row.next_attempt_at,
                last_error=(WAITING + reason)[:2000],
            )
        )


def _failed(
    db: Database,
    row: Any,
    retry_at: datetime,
    error: str,
    config: str | None,
    counts: bool,
    park_after: int = PARK_AFTER,
) -> bool:
    """Record a failed attempt; True when the row is parked by it."""
    failures = row.failures + 1 if counts else row.failures
    parked = counts and failures >= park_after
    with db.session() as session, session.begin():
        session.execute(
            update(OutboxRow)
            .where(OutboxRow.id == row.id, OutboxRow.status == SENDING)
            .values(
                status=PARKED if parked else PENDING,
                attempts=row.attempts + 1,
                failures=failures,
                next_attempt_at=retry_at,
                last_error=error[:2000],
                config_sha=config,
            )
        )
    if parked:
        log.warning("outbox: %s parked after %d refusals: %s", row.key, failures, error)
    return parked


def _result_of(db: Database, key: str) -> dict[str, Any] | None:
    with db.read() as session:
        row = session.execute(
            select(OutboxRow.id, OutboxRow.status, OutboxRow.result).where(OutboxRow.key == key)
        ).first()
    if row is None or row.status in (DROPPED, SUPERSEDED):
        return None
    if row.status == SENT:
        return dict(row.result)
    raise Waiting(f"message #{row.id} {'is parked' if row.status == PARKED else 'is not delivered yet'}")


# ------------------------------------------------------------------ what waits, and people acting on it


@dataclass(frozen=True)
class Message:
    id: int
    key: str
    target: str
    action: str
    stream: str
    status: str
    state: str  # pending | failing | waiting | sending | parked | sent | superseded | dropped
    about: str
    attempts: int
    failures: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None


def describe(row: OutboxRow) -> str:
    """What a message asks for, in words."""
    p = row.payload or {}
    record = p.get("record", "")
    if row.target == "jira":
        if row.action == "create":
            return f"create the Jira issue of {record}"
        if row.action in ("stage", "transition"):
            return f"{record} should be in stage {p.get('stage', '?')}"
        if row.action == "comment":
            return f"comment on the issue of {record}: {_short(p.get('body', ''))}"
    if row.target == "slack":
        to = p.get("email") or p.get("slack_id") or p.get("channel") or ""
        verb = {"post_dm": "message to", "post_channel": "post in", "update": "update a message to"}.get(row.action)
        return f"{verb or row.action} {to}: {_short(p.get('text', ''))}".replace("  ", " ")
    return f"{row.action} {record}".strip()


def _short(text: str, width: int = 70) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _state(row: OutboxRow) -> str:
    if row.status == PENDING and row.last_error and row.last_error.startswith(WAITING):
        return "waiting"
    if row.status == PENDING and row.last_error:
        return "failing"
    return row.status


def _message(row: OutboxRow) -> Message:
    return Message(
        id=row.id,
        key=row.key,
        target=row.target,
        action=row.action,
        stream=row.stream,
        status=row.status,
        state=_state(row),
        about=describe(row),
        attempts=row.attempts,
        failures=row.failures,
        next_attempt_at=row.next_attempt_at,
        last_error=row.last_error,
        created_at=row.created_at,
        sent_at=row.sent_at,
    )


def messages(db: Database, parked_only: bool = False, everything: bool = False, limit: int = 100) -> list[Message]:
    """Unsent messages (queued, failing, waiting, parked), oldest first; or only the parked ones; or the
    latest ``limit`` of every status."""
    query = select(OutboxRow)
    if parked_only:
        query = query.where(OutboxRow.status == PARKED).order_by(OutboxRow.id).limit(limit)
    elif everything:
        query = query.order_by(OutboxRow.id.desc()).limit(limit)
    else:
        query = query.where(OutboxRow.status.in_(UNSENT)).order_by(OutboxRow.id).limit(limit)
    with db.read() as session:
        rows = [_message(r) for r in session.scalars(query)]
    return sorted(rows, key=lambda m: m.id)


def retry(uow: UnitOfWork, message_id: int) -> Message:
    """A person sends a parked or failing message again (due now, refusal count reset); recorded."""
    return _act(uow, message_id, "retried", status=PENDING, failures=0, next_attempt_at=uow.now())


def drop(uow: UnitOfWork, message_id: int) -> Message:
    """A person gives up a queued or parked message: it is never sent; recorded."""
    return _act(uow, message_id, "dropped", status=DROPPED)


def _act(uow: UnitOfWork, message_id: int, done_as: str, **values: Any) -> Message:
    """Change a queued or parked message (conditionally: a deliverer may hold it) and record who did."""
    row = _load(uow, message_id)
    if row.status not in (PENDING, PARKED):
        state = _state(row)
        hint = " (being delivered now: try again in a moment)" if state == SENDING else ""
        raise DomainError(
            f"outbox message #{message_id} is {state}: only a queued or parked message is {done_as}{hint}"
        )
    before = _audit(row)
    done = uow.session.execute(
        update(OutboxRow)
        .where(OutboxRow.id == message_id, OutboxRow.status.in_((PENDING, PARKED)))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if done.rowcount != 1:
        raise DomainError(f"outbox message #{message_id} changed meanwhile; look again with 'qms outbox list'")
    uow.session.refresh(row)
    uow.record(f"outbox.{done_as}", f"outbox:{message_id}", before, _audit(row))
    uow.commit()
    return _message(row)


def _load(uow: UnitOfWork, message_id: int) -> OutboxRow:
    from .records import NotFound

    row = uow.session.get(OutboxRow, message_id)
    if row is None:
        raise NotFound(f"no outbox message #{message_id} (see 'qms outbox list')")
    return row


def _audit(row: OutboxRow) -> dict[str, Any]:
    """What the trail keeps of a message a person acted on (operational row: no payload, no secrets)."""
    return {
        "id": row.id,
        "key": row.key,
        "target": row.target,
        "action": row.action,
        "about": describe(row),
        "status": row.status,
        "failures": row.failures,
        "last_error": row.last_error,
    }


def backlog(db: Database, session: Session | None = None) -> dict[str, Any]:
    """Unsent messages per target (pending, failing, parked) and the last error: shown by `qms status`."""
    out: dict[str, Any] = {}
    with db.read(within=session) as session:
        for row in session.scalars(select(OutboxRow).where(OutboxRow.status.in_(UNSENT)).order_by(OutboxRow.id)):
            entry = out.setdefault(
                row.target, {"pending": 0, "failing": 0, "parked": 0, "last_error": None, "oldest": None}
            )
            entry["pending"] += 1
            entry["oldest"] = entry["oldest"] or row.created_at
            if row.status == PARKED:
                entry["parked"] += 1
            elif row.last_error and not row.last_error.startswith(WAITING):
                entry["failing"] += 1
            if row.last_error:
                entry["last_error"] = row.last_error
    return out
