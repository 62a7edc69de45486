"""Synchronising people, processes and documents from ``qms.yaml`` into the records store.

Idempotent: a second sync with the same config changes nothing and appends no event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..adapters import git
from ..domain.capabilities import declare
from ..domain.documents import DocStatus
from ..domain.organisation import QmsConfig
from ..store.tables import DocumentRow, DocumentVersionRow, PersonRow, ProcessRow
from ..store.uow import UnitOfWork
from . import release, retention
from .common import row_values, sha256_file
from .review_inputs import Figure, Window, provides, trail_events


@dataclass
class SyncReport:
    changes: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.changes)


def _upsert(uow: UnitOfWork, table: type, key: str, values: dict[str, Any], kind: str, report: SyncReport) -> None:
    row = uow.session.get(table, key)
    ref = f"{kind}:{key}"
    if row is None:
        row = table(**values, active=True)
        uow.session.add(row)
        uow.record(f"{kind}.created", ref, None, {**values, "active": True})
        report.changes.append(f"{ref} created")
        return
    before = row_values(row)
    wanted = {**values, "active": True}
    if any(before.get(k) != v for k, v in wanted.items()):
        for k, v in wanted.items():
            setattr(row, k, v)
        uow.record(f"{kind}.updated", ref, before, row_values(row))
        report.changes.append(f"{ref} updated")


SYNC_RECORDED = declare(
    "config.sync_recorded",
    "`qms sync` brings the people, processes, controlled documents and AI systems in qmsflow's records store "
    "in line with qms.yaml, and records each change it makes (added, changed or deactivated) in the audit "
    "trail.",
    proved_by=("tests/integration/test_store.py::test_sync_is_idempotent_and_trailed",),
    module=__name__,
)

WITHDRAWN = declare(
    "document.withdrawn",
    "A document removed from qms.yaml leaves the register at the next `qms sync`, which records its "
    "withdrawal in the audit trail; its versions stay in the records store.",
    proved_by=(
        "tests/integration/test_document_control.py::"
        "test_a_document_removed_from_qms_yaml_leaves_the_register_and_keeps_its_versions",
    ),
    module=__name__,
)


def _deactivate_missing(uow: UnitOfWork, table: type, pk: str, keep: set[str], kind: str, report: SyncReport) -> None:
    for row in uow.session.scalars(select(table).where(table.active.is_(True))):
        key = getattr(row, pk)
        if key not in keep:
            before = row_values(row)
            row.active = False
            uow.record(f"{kind}.deactivated", f"{kind}:{key}", before, row_values(row))
            report.changes.append(f"{kind}:{key} deactivated (no longer in qms.yaml)")


def sync_config(uow: UnitOfWork, config: QmsConfig, root: Path, register_drafts: bool = True) -> SyncReport:
    """Bring the store in line with the config; register a draft version of new documents."""
    report = SyncReport()
    for p in config.people:
        _upsert(
            uow,
            PersonRow,
            p.id,
            {
                "id": p.id,
                "name": p.name,
                "email": p.email,
                "slack_id": p.slack_id,
                "roles": list(p.roles),
                "manager": p.manager,
            },
            "person",
            report,
        )
    _deactivate_missing(uow, PersonRow, "id", {p.id for p in config.people}, "person", report)
    for pr in config.processes:
        _upsert(
            uow,
            ProcessRow,
            pr.key,
            {
                "key": pr.key,
                "title": pr.title,
                "owner": pr.owner,
                "procedure": pr.procedure,
                "aspects": list(pr.aspects),
                "schedule": pr.schedule,
            },
            "process",
            report,
        )
    _deactivate_missing(uow, ProcessRow, "key", {p.key for p in config.processes}, "process", report)
    for d in config.documents:
        _upsert(
            uow,
            DocumentRow,
            d.id,
            {
                "id": d.id,
                "title": d.title,
                "path": d.path,
                "owner": d.owner,
                "approvers": list(d.approvers),
                "review_interval_months": d.review_interval_months,
                "systems": list(d.systems),
            },
            "document",
            report,
        )
        if register_drafts:
            _register_draft(uow, d.id, d.path, root, report)
    _deactivate_missing(uow, DocumentRow, "id", {d.id for d in config.documents}, "document", report)
    report.changes.extend(release.register_criteria(uow, config))  # pre-registration of release criteria
    report.changes.extend(retention.record_lifecycles(uow, config))  # AI systems' dates, never shortened
    uow.session.flush()
    uow.commit()
    return report


def _register_draft(uow: UnitOfWork, doc_id: str, relpath: str, root: Path, report: SyncReport) -> None:
    """A registered document with no version yet gets draft 1.0, snapshotting its file."""
    file = root / relpath
    if not file.is_file():
        return
    exists = uow.session.scalar(select(DocumentVersionRow.id).where(DocumentVersionRow.document_id == doc_id).limit(1))
    if exists is not None:
        return
    uow.session.flush()  # the document row must exist before its version (foreign key)
    version = DocumentVersionRow(
        document_id=doc_id,
        version="1.0",
        status=DocStatus.DRAFT.value,
        path=relpath,
        content_sha256=sha256_file(file),
        git_commit=git.commit_of(root, relpath),
        created_at=uow.now(),
    )
    uow.session.add(version)
    uow.record(
        "document-version.registered", f"document-version:{doc_id}@1.0", None, row_values(version, exclude=("id",))
    )
    report.changes.append(f"document-version:{doc_id}@1.0 registered as draft")


_SYNCED_CHANGES = ("created", "updated", "deactivated")


@provides("b.qms-changes", "qms.yaml")
def review_changes(session: Session, config: QmsConfig, window: Window) -> list[Figure]:
    """Changes synced from qms.yaml (people, processes, documents) and controlled versions that became
    effective since the last review; each figure lists the trail events (``trail:SEQ``) behind it."""
    config_changes, versions = [], []
    synced = [f"{kind}.{action}" for kind in ("person", "process", "document") for action in _SYNCED_CHANGES]
    # only these actions are read (filtered by the database): a quarter of a large store is ~30,000 events
    for event in trail_events(session, window.since, window.end, actions=[*synced, "document-version.effective"]):
        if event.action == "document-version.effective":
            versions.append(event.record)
        else:
            config_changes.append(f"trail:{event.seq}")
    return [
        Figure("changes synced from qms.yaml (people, processes, documents)", len(config_changes), config_changes),
        Figure("procedure and document versions made effective", len(versions), versions),
    ]
