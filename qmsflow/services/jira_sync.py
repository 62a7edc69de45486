"""Inbound Jira: webhooks and periodic reconciliation converge on ``capa.on_jira_status``.

Reconciliation asks Jira once per cycle for qmsflow issues updated since the last cycle
(``/search/jql`` with ``nextPageToken`` paging); a cycle with no change makes exactly that one call.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError

from ..adapters import jira
from ..context import QmsContext
from ..store.tables import InboundEventRow, IntegrationStateRow, RecordRow
from ..store.uow import UnitOfWork
from . import capa

STATE = "jira.reconciled_until"


class BadWebhook(ValueError):
    pass


def verify_signature(secret: str | None, body: bytes, header: str | None) -> bool:
    """``X-Hub-Signature: sha256=<hex HMAC of the raw body>`` (Jira's secured webhooks)."""
    if not secret or not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header.removeprefix("sha256=").strip().encode("utf-8", "replace"))


def record_of(labels: list[str]) -> str | None:
    for label in labels or []:
        if isinstance(label, str) and label.startswith("qms-") and label != "qms":
            return label.removeprefix("qms-")
    return None


def status_change(payload: dict[str, Any]) -> tuple[str, str] | None:
    """(record id, new Jira status) of a webhook body, or None when it is not a qmsflow status change."""
    issue = payload.get("issue")
    if not isinstance(issue, dict) or not isinstance(issue.get("fields"), dict):
        raise BadWebhook("no issue in the webhook body")
    record = record_of(issue["fields"].get("labels") or [])
    if record is None:
        return None
    items = ((payload.get("changelog") or {}).get("items")) or []
    for item in items:
        if isinstance(item, dict) and item.get("field") == "status" and item.get("toString"):
            return record, str(item["toString"])
    status = (issue["fields"].get("status") or {}).get("name")
    return (record, str(status)) if status else None


def handle_webhook(ctx: QmsContext, identifier: str | None, payload: dict[str, Any]) -> str:
    """Apply one verified webhook delivery once; repeats of the same identifier are ignored."""
    change = status_change(payload)
    with UnitOfWork(ctx.db, "jira") as uow:
        if identifier:
            uow.session.add(InboundEventRow(source="jira", identifier=identifier[:200], received_at=uow.now()))
            try:
                uow.session.flush()
            except IntegrityError:
                return "repeat ignored"
        if change is None:
            uow.commit()
            return "not a qmsflow status change"
        record, status = change
        row = uow.session.get(RecordRow, record)
        if row is None or row.kind != "capa":
            uow.commit()
            return f"unknown record {record}"
        outcome = capa.on_jira_status(uow, ctx.config, record, status, source="webhook")
        uow.commit()
    return outcome


@dataclass
class ReconcileReport:
    seen: int = 0
    outcomes: dict[str, str] = field(default_factory=dict)


def reconcile(ctx: QmsContext, adapter: jira.JiraAdapter, now: datetime | None = None) -> ReconcileReport:
    """One cycle: issues changed since the last cycle (minus a minute of overlap) → QMS stages."""
    now = now or datetime.now(UTC)
    report = ReconcileReport()
    with ctx.db.read() as session:
        state = session.get(IntegrationStateRow, STATE)
        since = datetime.fromisoformat(state.value["at"]) if state else now - timedelta(days=1)
    issues = adapter.changed_since((since - timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M"))
    for issue in issues:
        fields = issue.get("fields") or {}
        record = record_of(fields.get("labels") or [])
        status = (fields.get("status") or {}).get("name")
        if not record or not status:
            continue
        report.seen += 1
        with UnitOfWork(ctx.db, "jira") as uow:
            row = uow.session.get(RecordRow, record)
            if row is None or row.kind != "capa":
                continue
            outcome = capa.on_jira_status(uow, ctx.config, record, status, source="reconciliation")
            uow.commit()
        if outcome != "unchanged":  # our own changes come back from Jira too
            report.outcomes[record] = outcome
    with ctx.db.session() as session, session.begin():
        state = session.get(IntegrationStateRow, STATE)
        if state is None:
            session.add(IntegrationStateRow(name=STATE, value={"at": now.isoformat()}))
        else:
            state.value = {"at": now.isoformat()}
    return report
