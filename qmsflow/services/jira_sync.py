"""Inbound Jira: webhooks and periodic reconciliation converge on ``mirror.on_jira_status``.

Reconciliation asks Jira once per cycle for qmsflow issues updated since the last cycle
(``/search/jql`` with ``nextPageToken`` paging); a cycle with no change makes exactly that one call.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from ..adapters import jira
from ..context import QmsContext
from ..domain import limits
from ..store.tables import InboundEventRow, IntegrationStateRow, RecordRow
from ..store.uow import UnitOfWork
from . import mirror

STATE = "jira.reconciled_until"
CLOCK_SKEW = timedelta(minutes=5)  # a signed timestamp may be this far ahead of our clock
log = logging.getLogger("qmsflow.jira")


class BadWebhook(ValueError):
    pass


def verify_signature(secret: str | None, body: bytes, header: str | None) -> bool:
    """``X-Hub-Signature: sha256=<hex HMAC of the raw body>`` (Jira's secured webhooks)."""
    if not secret or not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header.removeprefix("sha256=").strip().encode("utf-8", "replace"))


def record_of(labels: Any) -> str | None:
    if not isinstance(labels, list):
        return None
    for label in labels:
        if (
            isinstance(label, str)
            and label.startswith("qms-")
            and label != "qms"
            and len(label) <= 4 + limits.RECORD_ID
        ):
            return label.removeprefix("qms-")
    return None


def _name(value: Any) -> str | None:
    """A status name from Jira: a short string, or None for anything else."""
    return value if isinstance(value, str) and value and not limits.text_problem(value, limits.NAME) else None


def status_change(payload: dict[str, Any]) -> tuple[str, str] | None:
    """(record id, new Jira status) of a webhook body, or None when it is not a qmsflow status change.

    The body is signed, but its shape is still checked: anything but the documented types is ``BadWebhook``.
    """
    issue = payload.get("issue")
    if not isinstance(issue, dict) or not isinstance(issue.get("fields"), dict):
        raise BadWebhook("no issue in the webhook body")
    fields = issue["fields"]
    record = record_of(fields.get("labels"))
    if record is None:
        return None
    changelog = payload.get("changelog") or {}
    items = changelog.get("items") if isinstance(changelog, dict) else None
    if not isinstance(changelog, dict) or not isinstance(items or [], list):
        raise BadWebhook("changelog.items is not a list")
    for item in items or []:
        if isinstance(item, dict) and item.get("field") == "status" and _name(item.get("toString")):
            return record, item["toString"]
    status = fields.get("status")
    if status is not None and not isinstance(status, dict):
        raise BadWebhook("issue.fields.status is not an object")
    name = _name((status or {}).get("name"))
    return (record, name) if name else None


def delivery_time(payload: dict[str, Any]) -> datetime:
    """When Jira raised the event: the ``timestamp`` (ms since the epoch) inside the signed body."""
    stamp = payload.get("timestamp")
    if isinstance(stamp, bool) or not isinstance(stamp, int) or not 0 < stamp < 2**53:
        raise BadWebhook("the signed body has no timestamp (milliseconds since the epoch)")
    return datetime.fromtimestamp(stamp / 1000, UTC)


def handle_webhook(
    ctx: QmsContext, body: bytes, payload: dict[str, Any], identifier: str | None = None, now: datetime | None = None
) -> str:
    """Apply one verified webhook delivery at most once.

    Replay protection rests on what the HMAC covers, the body, never on the unsigned
    ``X-Atlassian-Webhook-Identifier`` (``identifier``, only logged): the body's own ``timestamp`` must
    lie within ``webhook_window_minutes`` (Jira retries a failed delivery for up to 30 minutes, with
    the same body), and the SHA-256 of every accepted body is stored with the change it caused, in
    one transaction, so a captured delivery sent again, with any headers, is ignored. Digests older
    than twice the window are pruned: a body that old is refused by its timestamp.
    """
    settings = jira.settings(ctx.config)
    window = timedelta(minutes=settings.cfg.webhook_window_minutes if settings else 60)
    now = now or datetime.now(UTC)
    raised = delivery_time(payload)
    if raised > now + CLOCK_SKEW:
        raise BadWebhook(f"the signed timestamp {raised:%Y-%m-%d %H:%M:%S} UTC lies in the future")
    if raised < now - window:
        log.warning("Jira webhook raised %s ignored: older than %s (replay?) identifier=%r", raised, window, identifier)
        return f"stale delivery ignored (raised {raised:%Y-%m-%d %H:%M:%S} UTC, older than {window})"
    change = status_change(payload)
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    with UnitOfWork(ctx.db, "jira") as uow:
        uow.session.add(InboundEventRow(source="jira", identifier=digest, received_at=now))
        try:
            uow.session.flush()
        except IntegrityError:
            log.info("Jira webhook %s (identifier %r) already applied: ignored", digest, identifier)
            return "repeat ignored"
        uow.session.execute(
            delete(InboundEventRow).where(
                InboundEventRow.source == "jira", InboundEventRow.received_at < now - 2 * window
            )
        )
        if change is None:
            uow.commit()
            return "not a qmsflow status change"
        record, status = change
        row = uow.session.get(RecordRow, record)
        if row is None or not mirror.mirrors(ctx.config, row.kind):
            uow.commit()
            return f"unknown record {record}"
        outcome = mirror.on_jira_status(uow, ctx.config, record, status, source="webhook")
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
            if row is None or not mirror.mirrors(ctx.config, row.kind):
                continue
            outcome = mirror.on_jira_status(uow, ctx.config, record, status, source="reconciliation")
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
