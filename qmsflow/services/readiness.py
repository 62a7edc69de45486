"""`qms readiness` and the dashboard's readiness page: each Art. 17(1) aspect judged on evidence
(``domain.readiness``), from the store and qms.yaml.

Internal audits are counted through a registered source (``audit_source``): the internal-audit
procedure registers the function that lists the audits of a year per process; without one, the audit
check says that no audit is recorded in qmsflow (a manual step), never that one took place.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..domain.organisation import QmsConfig
from ..domain.readiness import AspectReadiness, ProcessFacts, assess
from ..store.tables import ApprovalRequestRow, PersonRow, RecordRow
from .queries import effective

AuditSource = Callable[[Session, int], dict[str, list[str]]]  # (session, year) -> process key -> audit ids
_audit_sources: list[AuditSource] = []


def audit_source(fn: AuditSource) -> AuditSource:
    """Register where internal audits of a year are found (the internal-audit service does, at import)."""
    _audit_sources.append(fn)
    return fn


def _counts(session: Session, column, since: datetime, processes: list[str]) -> dict[str, int]:  # noqa: ANN001
    table = column.class_
    rows = session.execute(
        select(column, func.count()).where(column.in_(processes), table.created_at >= since).group_by(column)
    )
    return {key: count for key, count in rows}


def gather(session: Session, config: QmsConfig, today: date) -> list[AspectReadiness]:
    """The readiness of every aspect on ``today``."""
    since = datetime.combine(today - timedelta(days=365), time.min, tzinfo=UTC)
    keys = [p.key for p in config.processes]
    records = _counts(session, RecordRow.process, since, keys)
    approvals = _counts(session, ApprovalRequestRow.process, since, keys)
    audits: dict[str, list[str]] = {}
    for source in _audit_sources:
        for key, ids in source(session, today.year).items():
            audits.setdefault(key, []).extend(ids)
    active = {p.id for p in session.scalars(select(PersonRow).where(PersonRow.active.is_(True)))}
    facts: dict[str, ProcessFacts] = {}
    for process in config.processes:
        version = effective(session, process.procedure)
        facts[process.key] = ProcessFacts(
            key=process.key,
            title=process.title,
            procedure=process.procedure,
            owner=process.owner,
            owner_known=process.owner in active,
            procedure_effective=version.version if version is not None else None,
            procedure_review_due=version.next_review_date if version is not None else None,
            records_12_months=records.get(process.key, 0) + approvals.get(process.key, 0),
            audits_this_year=audits.get(process.key, []),
            audit_source=bool(_audit_sources),
        )
    covering: dict[str, list[ProcessFacts]] = {}
    for process in config.processes:
        for letter in process.aspects:
            covering.setdefault(letter, []).append(facts[process.key])
    return assess(covering, today)
