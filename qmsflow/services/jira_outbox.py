"""Jira messages of the outbox: queued as intents, turned into REST calls at delivery.

A message says what should be true, and the configuration of the moment of delivery says how:

- ``create`` {record, what the issue says of it}: "create the issue of CAPA-…": issue type from
  ``integrations.jira.issue_types``, links (remote link, description) to ``web.base_url``. A
  retried create first looks for the record's label (an earlier attempt may have made the issue
  and lost the answer) and links the issue it finds, too.
- ``stage`` {record, stage}: "CAPA-… should be in stage X": the status is looked up in
  ``integrations.jira.statuses`` at delivery, so fixing ``qms.yaml`` fixes queued messages. Each
  new stage intent supersedes the queued or parked stage intents of its record: the latest desired
  state is what gets delivered. Nothing is sent when Jira is known to show that status already.
- ``comment`` {record, body}.

Rows queued by older versions (``transition`` with a status name) are read as stage intents.

What Jira shows, as far as qmsflow knows (the status it last set there, or last saw there in a
webhook or a reconciliation), is kept per record in ``integration_state`` as ``jira.issue:<id>``.
It tells an echo of our own change from a move made by someone in Jira, and spares a transition
call when a stage change keeps the same status.
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..adapters import jira
from ..adapters.base import DeliveryError, Resolver
from ..domain.organisation import QmsConfig
from ..domain.records import kind_of
from ..store.db import Database
from ..store.tables import IntegrationStateRow, OutboxRow, RecordRow
from ..store.uow import UnitOfWork
from .outbox import PENDING, SENDING, count_in_stream, enqueue, fingerprint

TARGET = jira.TARGET
STAGE_ACTIONS = ("stage", "transition")  # "transition": rows queued before intents


def stream_of(record: str) -> str:
    return f"jira:{record}"


def create_key(record: str) -> str:
    return f"jira:{record}:create"


# ------------------------------------------------------------------ queueing (inside the change's unit of work)


def enqueue_create(uow: UnitOfWork, row: RecordRow) -> None:
    """Queue "create the issue of ``row``". What the issue says of the record travels with the intent;
    what the configuration decides (issue type, project, links) is looked up at delivery."""
    enqueue(uow, create_key(row.id), TARGET, "create", stream_of(row.id), {"record": row.id, **_content(row)})


def _content(row: RecordRow) -> dict[str, Any]:
    return {
        "kind": row.kind,
        "title": row.title,
        "owner": row.owner,
        "source": row.data.get("source"),
        "severity": row.data.get("severity"),
        "text": row.data.get("description", ""),
    }


def enqueue_stage(uow: UnitOfWork, record: str, stage: str, suffix: str | None = None) -> None:
    """Queue "``record`` should be in ``stage``", superseding the queued or parked stage intents of the record."""
    stream = stream_of(record)
    suffix = suffix or f"stage:{count_in_stream(uow, stream, STAGE_ACTIONS)}"
    enqueue(
        uow,
        f"jira:{record}:{suffix}",
        TARGET,
        "stage",
        stream,
        {"record": record, "stage": stage},
        supersedes=STAGE_ACTIONS,
    )


def enqueue_comment(uow: UnitOfWork, record: str, suffix: str, body: str) -> None:
    enqueue(uow, f"jira:{record}:{suffix}", TARGET, "comment", stream_of(record), {"record": record, "body": body})


def stage_in_flight(session: Session, record: str) -> bool:
    """A stage intent of the record is on its way: queued or being sent, and not refused by Jira so far
    (one that Jira refused, or a parked one, will not overwrite what someone does in Jira)."""
    return (
        session.scalar(
            select(OutboxRow.id)
            .where(
                OutboxRow.stream == stream_of(record),
                OutboxRow.action.in_(STAGE_ACTIONS),
                OutboxRow.status.in_((PENDING, SENDING)),
                OutboxRow.failures == 0,
            )
            .limit(1)
        )
        is not None
    )


# ------------------------------------------------------------------ what Jira shows, as far as we know


def _state_name(record: str) -> str:
    return f"jira.issue:{record}"


def known_status(session: Session, record: str) -> str | None:
    row = session.get(IntegrationStateRow, _state_name(record))
    return (row.value or {}).get("status") if row else None


def remember_status(session: Session, record: str, status: str) -> None:
    """Upsert (two writers may race: the deliverer and a webhook)."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    statement = insert(IntegrationStateRow).values(name=_state_name(record), value={"status": status})
    session.execute(statement.on_conflict_do_update(index_elements=["name"], set_={"value": statement.excluded.value}))


# ------------------------------------------------------------------ delivery


def config_fingerprint(config: QmsConfig) -> str:
    """What the resolution of a Jira intent depends on: a change makes failing Jira messages due again."""
    cfg = config.integrations.jira
    return fingerprint(
        {
            "jira": cfg.model_dump(mode="json") if cfg else None,
            "url": os.environ.get("QMS_JIRA_URL"),
            "base_url": config.web.base_url,
        }
    )


def description(config: QmsConfig, record: str, content: dict[str, Any]) -> str:
    return (
        f"{content.get('text') or ''}\n\nQMS record {record} (source {content.get('source')}, severity "
        f"{content.get('severity')}, owner {content.get('owner')}). qmsflow is the system of record: stage changes "
        f"are checked there. {record_url(config, record)}"
    )


def record_url(config: QmsConfig, record: str) -> str:
    return f"{config.web.base_url.rstrip('/')}/capas#{record}"


class JiraDelivery:
    """Outbox handler of the ``jira`` target. Connects to Jira only when there is something to send
    (building the client costs nothing, but one handler serves a whole delivery pass)."""

    def __init__(self, db: Database, config: QmsConfig, settings: jira.JiraSettings):
        self.db = db
        self.config = config
        self.settings = settings
        self._adapter: jira.JiraAdapter | None = None

    @property
    def adapter(self) -> jira.JiraAdapter:
        if self._adapter is None:
            self._adapter = jira.JiraAdapter(jira.make_client(self.settings), self.settings)
        return self._adapter

    def __call__(self, action: str, payload: dict[str, Any], resolve: Resolver) -> dict[str, Any]:
        record = payload["record"]
        if action == "create":
            return self._create(record, payload, look_first=payload.get("_attempt", 0) > 0)
        key = self._issue_key(record, payload, resolve)
        if action in STAGE_ACTIONS:
            return self._stage(record, key, payload["stage"])
        if action == "comment":
            self.adapter.comment(key, payload["body"])
            return {"key": key}
        raise DeliveryError(f"unknown Jira action {action!r}")

    def _create(self, record: str, payload: dict[str, Any], look_first: bool) -> dict[str, Any]:
        content = payload if "title" in payload else self._content_of(record)  # queued by an older version
        kind = content.get("kind") or "capa"
        issue_type = self.settings.issue_type(kind)
        fields = {
            "project": {"key": self.settings.cfg.project},
            "summary": f"{record} {content['title']}"[:250],
            "description": description(self.config, record, content),
            "issuetype": {"name": issue_type},
        }
        link = {"url": record_url(self.config, record), "title": f"qmsflow {record}"}
        try:
            return self.adapter.create_issue(record, fields, link, look_first=look_first)
        except jira.JiraRejected as exc:
            setting = None
            if "issuetype" in exc.errors:
                setting = f"integrations.jira.issue_types.{kind} is {issue_type!r}"
            elif "project" in exc.errors:
                setting = f"integrations.jira.project is {self.settings.cfg.project!r}"
            if setting is None:
                raise
            raise DeliveryError(f"{setting}, and {exc}. {_FIX}") from None

    def _content_of(self, record: str) -> dict[str, Any]:
        with self.db.read() as session:
            row = session.get(RecordRow, record)
            if row is None:
                raise DeliveryError(
                    f"{record} is no longer in the records store: nothing to create (drop this message)"
                )
            return _content(row)

    def _issue_key(self, record: str, payload: dict[str, Any], resolve: Resolver) -> str:
        created = resolve(payload.get("create_key") or create_key(record))  # Waiting while the create is queued
        if created and created.get("key"):
            return created["key"]
        found = self.adapter.find(record)
        if found is None:
            raise DeliveryError(
                f"no Jira issue has the label {jira.label_of(record)}: the create message of {record} was dropped "
                "or never queued"
            )
        return found

    def _stage(self, record: str, key: str, stage: str) -> dict[str, Any]:
        kind = kind_of(record) or "capa"
        status = self.settings.status_for(stage, kind)
        setting = "integrations.jira.statuses" if kind == "capa" else f"integrations.jira.kinds.{kind}.statuses"
        if not status:
            raise DeliveryError(f"{setting} has no status for the stage {stage!r}. {_FIX}")
        with self.db.read() as session:
            known = known_status(session, record)
        if known == status:
            return {"key": key, "status": status, "unchanged": True}
        try:
            how = self.adapter.move(key, status)
        except jira.NoTransition as exc:
            raise DeliveryError(f"{setting}.{stage} is {status!r}, but {exc}. {_FIX}") from None
        with self.db.session() as session, session.begin():
            remember_status(session, record, status)
        return {"key": key, "status": status, **({"already": True} if how == "already" else {})}


_FIX = "Fix qms.yaml (or the Jira site): queued messages use the new value"
