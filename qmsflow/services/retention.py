"""Retention of records and document versions: the AI systems' dates persisted, legal holds.

Each AI system of qms.yaml has a lifecycle record (kind ``ai-system``, ``SYS-YYYY-NNNN``, key
``ai-system:<id>``) holding its dates as first known: placed on the market, put into service, withdrawn.
Dates are merged so that a retention period never gets shorter: a start date moves only later, a
withdrawal date only later, and a system removed from qms.yaml keeps its record (and so its records'
retention). A legal hold on a record or on a system blocks every deletion it covers, whatever the dates;
setting and releasing one needs an admin account or the quality-lead role, and is recorded in the trail.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import select

from ..domain import regulatory
from ..domain.capabilities import declare
from ..domain.errors import DomainError
from ..domain.organisation import AISystem, QmsConfig
from ..domain.retention import Period, Policy, SystemLifecycle, retention_period
from ..store.tables import DocumentRow, DocumentVersionRow, RecordRow
from ..store.uow import UnitOfWork
from .records import NotFound, create_record, find_by_key, update_record

KIND = "ai-system"
DATES = ("placed_on_market", "put_into_service", "withdrawn_on")
HOLDER_ROLE = "quality-lead"


class HoldRefused(DomainError):
    """The person may not set or release a legal hold."""


def policy(config: QmsConfig) -> Policy:
    legal = regulatory.bundled().retention
    return Policy(
        legal_years=legal.years or 10,
        years=max(config.retention.years, legal.years or 10),
        years_after_withdrawal=config.retention.years_after_withdrawal,
        source=f"{regulatory.DATA_FILE} version {regulatory.bundled().version}",
    )


def _later(kept: str | None, given: date | None) -> str | None:
    """The later of a persisted date (ISO text) and the one qms.yaml gives: retention never shortens."""
    if given is None:
        return kept
    if kept is None:
        return given.isoformat()
    return max(kept, given.isoformat())


def _merged(row: RecordRow | None, system: AISystem) -> dict[str, Any]:
    kept = dict(row.data) if row is not None else {"system": system.id}
    data = {**kept, "name": system.name, "in_qms_yaml": True}
    for name in DATES:
        data[name] = _later(kept.get(name), getattr(system, name))
    if kept.get("withdrawn_on") and system.withdrawn_on is None:
        data["withdrawn_on"] = None  # back on the market per qms.yaml: a withdrawal period would only get longer
    return data


# QMS-001 4.3: record_lifecycles below, run by every sync of qms.yaml
SYSTEM_DATES = declare(
    "retention.system_dates",
    "When qmsflow syncs qms.yaml it records each AI system's dates declared there (`placed_on_market`, "
    "`put_into_service`, `withdrawn_on` under `systems`). A later change to qms.yaml never shortens "
    "retention: a system removed from qms.yaml, or given an earlier date, keeps the later dates recorded "
    "before.",
    proved_by=(
        "tests/integration/test_retention.py::test_sync_records_each_systems_dates_once",
        "tests/integration/test_retention.py::test_removing_or_backdating_a_system_in_qms_yaml_never_shortens_retention",
    ),
    module=__name__,
)


def record_lifecycles(uow: UnitOfWork, config: QmsConfig) -> list[str]:
    """Persist the dates of every AI system of qms.yaml (created, or merged never to shorten); mark those
    no longer in qms.yaml (their dates stay). Returns what changed. A building block: does not commit."""
    changes = []
    named = set()
    for system in config.systems:
        named.add(system.id)
        row = find_by_key(uow, f"{KIND}:{system.id}")
        data = _merged(row, system)
        if row is None:
            row, _ = create_record(
                uow,
                KIND,
                f"AI system {system.id}: lifecycle dates",
                key=f"{KIND}:{system.id}",
                systems=[system.id],
                status="tracked",
                data=data,
            )
            changes.append(f"record:{row.id} created (dates of AI system {system.id})")
        elif update_record(uow, row, "dates-recorded", data=data):
            changes.append(f"record:{row.id} updated (dates of AI system {system.id})")
    for row in _lifecycle_rows(uow):
        if row.data.get("system") not in named and row.data.get("in_qms_yaml"):
            update_record(uow, row, "dates-recorded", data={**row.data, "in_qms_yaml": False})
            changes.append(f"record:{row.id}: AI system {row.data.get('system')} left qms.yaml; its dates are kept")
    return changes


def _lifecycle_rows(uow: UnitOfWork) -> list[RecordRow]:
    return list(uow.session.scalars(select(RecordRow).where(RecordRow.kind == KIND).order_by(RecordRow.id)))


def _as_lifecycle(row: RecordRow) -> SystemLifecycle:
    data = row.data
    hold = data.get("legal_hold")
    return SystemLifecycle(
        id=data["system"],
        **{name: date.fromisoformat(data[name]) if data.get(name) else None for name in DATES},
        hold=hold["reason"] if hold else None,
    )


def lifecycles(uow: UnitOfWork, config: QmsConfig, system_ids: list[str]) -> list[SystemLifecycle]:
    """The AI systems a record concerns, from their persisted dates (qms.yaml recorded first); a record
    naming none concerns the whole QMS, so every system ever known. A system of which no date was ever
    known counts as not placed on the market (its records are kept)."""
    record_lifecycles(uow, config)
    known = {row.data["system"]: _as_lifecycle(row) for row in _lifecycle_rows(uow)}
    if not system_ids:
        return list(known.values())
    return [known.get(s) or SystemLifecycle(s, known=False) for s in system_ids]


def _hold_reason(data: dict[str, Any] | None) -> str | None:
    hold = (data or {}).get("legal_hold")
    return hold["reason"] if hold else None


def record_period(uow: UnitOfWork, config: QmsConfig, row: RecordRow) -> Period:
    systems = lifecycles(uow, config, list(row.systems or []))
    return retention_period(row.created_at.date(), systems, policy(config), _hold_reason(row.data))


def version_period(uow: UnitOfWork, config: QmsConfig, row: DocumentVersionRow) -> Period:
    doc = uow.session.get(DocumentRow, row.document_id)
    systems = lifecycles(uow, config, list(doc.systems) if doc else [])
    return retention_period(row.created_at.date(), systems, policy(config))


def period_of(uow: UnitOfWork, config: QmsConfig, record_id: str) -> Period:
    row = uow.session.get(RecordRow, record_id)
    if row is None:
        raise NotFound(f"no record {record_id}")
    return record_period(uow, config, row)


# ------------------------------------------------------------------ legal hold


def _target(uow: UnitOfWork, config: QmsConfig, target: str) -> RecordRow:
    """``system:ID`` (the system's lifecycle record) or a record id."""
    if target.startswith("system:"):
        record_lifecycles(uow, config)
        system_id = target.removeprefix("system:")
        row = find_by_key(uow, f"{KIND}:{system_id}")
        if row is None:
            raise NotFound(f"no AI system {system_id!r} is or was in qms.yaml")
        return row
    row = uow.session.get(RecordRow, target)
    if row is None:
        raise NotFound(f"no record {target} (a system is named as system:ID)")
    return row


# the procedures' records: set_hold and release_hold below (`qms retention hold`, `qms retention release`)
LEGAL_HOLD = declare(
    "retention.legal_hold",
    "A quality lead or an administrator can put a record, or every record of an AI system, under legal hold "
    "with a reason (`qms retention hold`) and release it with a reason (`qms retention release`); qmsflow "
    "refuses anyone else, deletes nothing under legal hold whatever its retention date, and records each "
    "hold, release and refused deletion in the audit trail.",
    proved_by=(
        "tests/integration/test_retention.py::test_legal_hold_blocks_deletion_whatever_the_date_and_only_a_quality_lead_or_admin_sets_it",
        "tests/integration/test_retention.py::test_cli_dates_show_hold_and_release",
        "tests/unit/test_retention_and_records.py::test_a_legal_hold_blocks_deletion_whatever_the_date",
    ),
    module=__name__,
)


def _may_hold(config: QmsConfig, person: str, is_admin: bool) -> bool:
    roles = next((p.roles for p in config.people if p.id == person), [])
    return is_admin or HOLDER_ROLE in roles


def set_hold(
    uow: UnitOfWork, config: QmsConfig, target: str, reason: str, *, by: str, is_admin: bool, today: date
) -> RecordRow:
    """Put ``target`` (a record id or ``system:ID``) under legal hold; a use case (commits)."""
    return _change_hold(uow, config, target, reason, by=by, is_admin=is_admin, today=today, hold=True)


def release_hold(
    uow: UnitOfWork, config: QmsConfig, target: str, reason: str, *, by: str, is_admin: bool, today: date
) -> RecordRow:
    """Release the legal hold of ``target``; a use case (commits)."""
    return _change_hold(uow, config, target, reason, by=by, is_admin=is_admin, today=today, hold=False)


def _change_hold(
    uow: UnitOfWork,
    config: QmsConfig,
    target: str,
    reason: str,
    *,
    by: str,
    is_admin: bool,
    today: date,
    hold: bool,
) -> RecordRow:
    if not reason.strip():
        raise DomainError("--reason: say why (the matter, the request or the decision behind it)")
    row = _target(uow, config, target)
    verb = "set" if hold else "release"
    if not _may_hold(config, by, is_admin):
        problem = f"{by} may not {verb} a legal hold: only an admin or a {HOLDER_ROLE} may"
        uow.rollback()
        uow.record(f"{row.kind}.hold-refused", f"record:{row.id}", None, {"refused": problem, "target": target})
        uow.commit()
        raise HoldRefused(problem)
    current = (row.data or {}).get("legal_hold")
    if hold and current:
        raise DomainError(f"{target} is already under legal hold since {current['on']} ({current['reason']})")
    if not hold and not current:
        raise DomainError(f"{target} is not under legal hold")
    data = dict(row.data or {})
    if hold:
        data["legal_hold"] = {"reason": reason.strip(), "by": by, "on": today.isoformat()}
    else:
        data.pop("legal_hold")
        released = {**current, "released_by": by, "released_on": today.isoformat(), "release_reason": reason.strip()}
        data["legal_holds_released"] = [*data.get("legal_holds_released", []), released]
    update_record(uow, row, "legal-hold-set" if hold else "legal-hold-released", data=data)
    uow.commit()
    return row


def holds(uow: UnitOfWork) -> list[RecordRow]:
    """Every record and system under legal hold."""
    rows = uow.session.scalars(select(RecordRow).order_by(RecordRow.id)).all()
    return [r for r in rows if (r.data or {}).get("legal_hold")]
