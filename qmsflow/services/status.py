"""State of every QMS process: owner, last run, next due, open and overdue items."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any

from croniter import croniter
from sqlalchemy import and_, case, func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from ..store.db import Database
from ..store.tables import ApprovalRequestRow, PersonRow, ProcessRow, ProcessRunRow, RecordRow, record_is_open
from ..store.uow import UnitOfWork


@dataclass(frozen=True)
class ProcessStatus:
    key: str
    title: str
    owner: str
    last_run: datetime | None
    last_state: str | None
    next_due: datetime | None
    open_items: int
    overdue_items: int
    open_approvals: int = 0
    last_run_id: str | None = None


def next_due(schedule: str | None, after: datetime) -> datetime | None:
    if not schedule:
        return None
    # a schedule's next time after any moment of a minute is the same (cron has minutes): computed once a minute
    return _next_due(schedule, after.replace(second=0, microsecond=0))


@lru_cache(maxsize=256)
def _next_due(schedule: str, minute: datetime) -> datetime:
    return croniter(schedule, minute).get_next(datetime)


def process_status(
    db: Database, today: date | None = None, now: datetime | None = None, session: Session | None = None
) -> list[ProcessStatus]:
    now = now or datetime.now(UTC)
    today = today or now.date()
    is_open = record_is_open()  # the partial index on open records counts them
    with db.read(within=session) as session:
        counts = dict(
            (row[0], (row[1], row[2] or 0))
            for row in session.execute(
                select(
                    RecordRow.process,
                    func.count(),
                    func.sum(case((and_(RecordRow.due_date.is_not(None), RecordRow.due_date < today), 1), else_=0)),
                )
                .where(is_open, RecordRow.process.is_not(None))
                .group_by(RecordRow.process)
            )
        )
        latest = (
            select(ProcessRunRow.process_key, func.max(ProcessRunRow.id).label("last_id"))
            .group_by(ProcessRunRow.process_key)
            .subquery()
        )
        runs = {
            r.process_key: r
            for r in session.scalars(select(ProcessRunRow).join(latest, ProcessRunRow.id == latest.c.last_id))
        }
        names = dict(session.execute(select(PersonRow.id, PersonRow.name)).all())
        approvals = dict(
            session.execute(
                select(ApprovalRequestRow.process, func.count())
                .where(ApprovalRequestRow.status == "pending", ApprovalRequestRow.process.is_not(None))
                .group_by(ApprovalRequestRow.process)
            ).all()
        )
        out = []
        for p in session.scalars(select(ProcessRow).where(ProcessRow.active.is_(True)).order_by(ProcessRow.key)):
            run = runs.get(p.key)
            open_items, overdue = counts.get(p.key, (0, 0))
            out.append(
                ProcessStatus(
                    key=p.key,
                    title=p.title,
                    owner=names.get(p.owner, p.owner),
                    last_run=(run.finished_at or run.started_at) if run else None,
                    last_state=run.state if run else None,
                    next_due=next_due(p.schedule, now),
                    open_items=open_items,
                    overdue_items=int(overdue),
                    open_approvals=approvals.get(p.key, 0),
                    last_run_id=run.flow_run_id if run else None,
                )
            )
        return out


def record_run(
    uow: UnitOfWork,
    process_key: str,
    flow_name: str,
    flow_run_id: str,
    state: str,
    started_at: datetime,
    finished_at: datetime | None,
    summary: dict[str, Any],
) -> None:
    """Upsert the run of a flow (keyed by the Prefect flow run id) and trail it."""
    row = uow.session.scalar(select(ProcessRunRow).where(ProcessRunRow.flow_run_id == flow_run_id))
    if row is None:
        row = ProcessRunRow(
            process_key=process_key,
            flow_name=flow_name,
            flow_run_id=flow_run_id,
            state=state,
            started_at=started_at,
            finished_at=finished_at,
            summary=summary,
        )
        uow.session.add(row)
    else:
        row.state, row.finished_at, row.summary = state, finished_at, summary
    uow.record(
        f"process.run-{state.lower()}",
        f"process:{process_key}",
        None,
        {"flow": flow_name, "flow_run_id": flow_run_id, "state": state, "summary": summary},
    )


def store_reachable(db: Database) -> bool:
    """Readiness of a process that serves the records store: one trivial query answers."""
    try:
        with db.read() as session:
            session.execute(text("SELECT 1"))
        return True
    except SQLAlchemyError:
        return False
