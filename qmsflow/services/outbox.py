"""The outbox: messages to Slack and Jira written with the change that causes them, delivered later.

``enqueue`` runs inside the unit of work of the change (same transaction, idempotent by key).
``deliver_pending`` sends what is due, in id order per stream, with backoff; a row whose stream has
an earlier undelivered row waits for it. A target that is down delays delivery; nothing is lost.
Rows are claimed with a conditional UPDATE, so two deliverers never send the same row twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from ..adapters.base import Handler, RetryLater
from ..store.db import Database
from ..store.tables import OutboxRow
from ..store.uow import UnitOfWork

log = logging.getLogger("qmsflow.outbox")
PENDING, SENDING, SENT = "pending", "sending", "sent"
CLAIM_SECONDS = 300
MAX_BACKOFF = timedelta(hours=1)


def enqueue(uow: UnitOfWork, key: str, target: str, action: str, stream: str, payload: dict[str, Any]) -> OutboxRow:
    existing = uow.session.scalar(select(OutboxRow).where(OutboxRow.key == key))
    if existing is not None:
        return existing
    now = uow.now()
    row = OutboxRow(
        key=key,
        target=target,
        action=action,
        stream=stream,
        payload=payload,
        status=PENDING,
        attempts=0,
        next_attempt_at=now,
        result={},
        created_at=now,
    )
    uow.session.add(row)
    return row


def backoff(attempts: int) -> timedelta:
    return min(timedelta(seconds=15 * 2 ** max(attempts - 1, 0)), MAX_BACKOFF)


@dataclass
class DeliveryReport:
    sent: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    waiting: int = 0
    fetched: int = 0
    last_id: int = 0


def deliver_pending(
    db: Database, handlers: dict[str, Handler], now: datetime | None = None, batch: int = 200, max_batches: int = 50
) -> DeliveryReport:
    """Send due rows for the targets in ``handlers``, batch after batch while batches make progress;
    rows for other targets stay queued."""
    now = now or datetime.now(UTC)
    total = DeliveryReport()
    blocked: set[str] = set()
    after_id = 0
    for _ in range(max_batches):
        report = _deliver_batch(db, handlers, now, batch, after_id, blocked)
        total.sent += report.sent
        total.failed += report.failed
        total.waiting += report.waiting
        after_id = report.last_id
        if report.fetched < batch:
            break
    return total


def _deliver_batch(
    db: Database, handlers: dict[str, Handler], now: datetime, limit: int, after_id: int, blocked: set[str]
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
        if row.next_attempt_at > now or not _claim(db, row.id, now):
            report.waiting += 1
            blocked.add(row.stream)
            continue
        try:
            payload = {**row.payload, "_attempt": row.attempts}  # a retry may need to look before it acts
            result = handlers[row.target](row.action, payload, lambda key: _result_of(db, key))
        except RetryLater as exc:
            _failed(db, row.id, row.attempts + 1, now + timedelta(seconds=max(exc.seconds, 1)), str(exc))
            report.failed.append((row.key, str(exc)))
            blocked.add(row.stream)
        except Exception as exc:  # noqa: BLE001 - any failure of a target means: retry later
            log.debug("delivery of %s failed", row.key, exc_info=True)
            _failed(db, row.id, row.attempts + 1, now + backoff(row.attempts + 1), f"{exc.__class__.__name__}: {exc}")
            report.failed.append((row.key, str(exc)))
            blocked.add(row.stream)
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
                        last_error=None,
                    )
                )
            report.sent.append(row.key)
    return report


def _claim(db: Database, row_id: int, now: datetime) -> bool:
    with db.session() as session, session.begin():
        done = session.execute(
            update(OutboxRow)
            .where(OutboxRow.id == row_id, OutboxRow.status.in_((PENDING, SENDING)), OutboxRow.next_attempt_at <= now)
            .values(status=SENDING, next_attempt_at=now + timedelta(seconds=CLAIM_SECONDS))
        )
        return done.rowcount == 1


def _failed(db: Database, row_id: int, attempts: int, retry_at: datetime, error: str) -> None:
    with db.session() as session, session.begin():
        session.execute(
            update(OutboxRow)
            .where(OutboxRow.id == row_id)
            .values(status=PENDING, attempts=attempts, next_attempt_at=retry_at, last_error=error[:2000])
        )


def _result_of(db: Database, key: str) -> dict[str, Any] | None:
    with db.read() as session:
        row = session.execute(select(OutboxRow.status, OutboxRow.result).where(OutboxRow.key == key)).first()
    return dict(row.result) if row and row.status == SENT else None


def backlog(db: Database) -> dict[str, Any]:
    """Pending rows and the oldest error, per target: shown by `qms status`."""
    out: dict[str, Any] = {}
    with db.read() as session:
        for row in session.scalars(select(OutboxRow).where(OutboxRow.status != SENT).order_by(OutboxRow.id)):
            entry = out.setdefault(row.target, {"pending": 0, "failing": 0, "last_error": None, "oldest": None})
            entry["pending"] += 1
            entry["oldest"] = entry["oldest"] or row.created_at
            if row.last_error:
                entry["failing"] += 1
                entry["last_error"] = row.last_error
    return out
