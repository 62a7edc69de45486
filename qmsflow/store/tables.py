"""Tables of the records store (SQLAlchemy 2 Core/ORM mapped classes).

The Alembic migrations in ``migrations/versions`` create exactly these tables; a test compares
them. Timestamps are stored as UTC and read back timezone-aware.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Computed,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.expression import ColumnElement

from ..domain.trail import TrailEvent, parse_event


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every database (SQLite has no time zones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the records store; use UTC-aware datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class PersonRow(Base):
    __tablename__ = "people"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320))
    slack_id: Mapped[str | None] = mapped_column(String(32))
    roles: Mapped[list] = mapped_column(JSON, default=list)
    manager: Mapped[str | None] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class ProcessRow(Base):
    __tablename__ = "processes"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    owner: Mapped[str] = mapped_column(String(64))
    procedure: Mapped[str] = mapped_column(String(64))
    aspects: Mapped[list] = mapped_column(JSON, default=list)
    schedule: Mapped[str | None] = mapped_column(String(100))
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class DocumentRow(Base):
    __tablename__ = "documents"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    title: Mapped[str] = mapped_column(String(300))
    path: Mapped[str] = mapped_column(String(500))
    owner: Mapped[str] = mapped_column(String(64))
    approvers: Mapped[list] = mapped_column(JSON, default=list)
    review_interval_months: Mapped[int] = mapped_column(Integer, default=12)
    systems: Mapped[list] = mapped_column(JSON, default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class DocumentVersionRow(Base):
    __tablename__ = "document_versions"
    __table_args__ = (
        UniqueConstraint("document_id", "version", name="uq_document_versions_document_id_version"),
        Index("ix_document_versions_status_next_review", "status", "next_review_date"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    document_id: Mapped[str] = mapped_column(ForeignKey("documents.id"), index=True)
    version: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))
    path: Mapped[str] = mapped_column(String(500))
    content_sha256: Mapped[str] = mapped_column(String(64))
    git_commit: Mapped[str | None] = mapped_column(String(64))
    effective_date: Mapped[date | None] = mapped_column(Date)
    next_review_date: Mapped[date | None] = mapped_column(Date)
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RecordRow(Base):
    __tablename__ = "records"
    __table_args__ = (
        Index("ix_records_kind_status", "kind", "status"),
        Index("ix_records_process_status", "process", "status"),
        Index("ix_records_status_due", "status", "due_date"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    key: Mapped[str | None] = mapped_column(String(200), unique=True)
    title: Mapped[str] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(40))
    owner: Mapped[str | None] = mapped_column(String(64))
    process: Mapped[str | None] = mapped_column(String(64))
    due_date: Mapped[date | None] = mapped_column(Date)
    systems: Mapped[list] = mapped_column(JSON, default=list)
    data: Mapped[dict] = mapped_column(JSON, default=dict)
    links: Mapped[list] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class IdCounterRow(Base):
    __tablename__ = "id_counters"
    prefix: Mapped[str] = mapped_column(String(16), primary_key=True)
    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    last: Mapped[int] = mapped_column(Integer, default=0)


class ProcessRunRow(Base):
    __tablename__ = "process_runs"
    __table_args__ = (Index("ix_process_runs_process_started", "process_key", "started_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    process_key: Mapped[str] = mapped_column(String(64))
    flow_name: Mapped[str] = mapped_column(String(200))
    flow_run_id: Mapped[str] = mapped_column(String(64), unique=True)
    state: Mapped[str] = mapped_column(String(40))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    summary: Mapped[dict] = mapped_column(JSON, default=dict)


class VerificationRow(Base):
    """Every run of ``qms verify``: the dashboard warns when the last one failed or none ran."""

    __tablename__ = "verifications"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    ok: Mapped[bool] = mapped_column(Boolean)
    count: Mapped[int] = mapped_column(Integer)
    head_seq: Mapped[int] = mapped_column(Integer)
    head_hash: Mapped[str] = mapped_column(String(64))
    problem: Mapped[str | None] = mapped_column(Text)


class EventField(ColumnElement):
    """A top-level string field of a stored canonical event, extracted by the database.

    The searchable columns of ``trail_events`` are generated from ``canonical`` with this
    expression, so they cannot say anything else than the hashed text does.
    """

    inherit_cache = False
    type = String()

    def __init__(self, name: str):
        self.field = name


@compiles(EventField, "sqlite")
def _event_field_sqlite(element: EventField, compiler: Any, **kw: Any) -> str:
    return f"json_extract(canonical, '$.{element.field}')"


@compiles(EventField, "postgresql")
def _event_field_postgresql(element: EventField, compiler: Any, **kw: Any) -> str:
    return f"(canonical::json ->> '{element.field}')"


def _generated(name: str, length: int, unique: bool = False) -> Any:
    return mapped_column(String(length), Computed(EventField(name), persisted=True), unique=unique)


class TrailEventRow(Base):
    """The append-only, hash-chained audit trail; triggers refuse UPDATE, DELETE and any insert but the next.

    ``canonical`` is the event's canonical JSON, exactly the text whose SHA-256 is ``hash``;
    ``ts``, ``actor``, ``action``, ``record`` and ``prev_hash`` are generated from it by the
    database (for searching); ``before``/``after`` are read from it.
    """

    __tablename__ = "trail_events"
    __table_args__ = (
        Index("ix_trail_events_record_seq", "record", "seq"),
        Index("ix_trail_events_actor_seq", "actor", "seq"),
        Index("ix_trail_events_ts", "ts"),
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    canonical: Mapped[str] = mapped_column(Text)
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    ts: Mapped[str] = _generated("ts", 32)
    actor: Mapped[str] = _generated("actor", 200)
    action: Mapped[str] = _generated("action", 100)
    record: Mapped[str] = _generated("record", 200)
    prev_hash: Mapped[str] = _generated("prev_hash", 64, unique=True)

    def event(self) -> TrailEvent:
        return parse_event(self.seq, self.canonical, self.hash)

    @property
    def before_json(self) -> str:
        return self.event().before_json

    @property
    def after_json(self) -> str:
        return self.event().after_json


TRAIL_COLUMNS = ("seq", "canonical", "hash")
"""The stored columns of an event; the others are generated from ``canonical``."""


class ApprovalRequestRow(Base):
    __tablename__ = "approval_requests"
    __table_args__ = (
        Index("ix_approval_requests_status_created", "status", "created_at"),
        Index("ix_approval_requests_process_status", "process", "status"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    subject: Mapped[str] = mapped_column(String(200), index=True)
    title: Mapped[str] = mapped_column(String(500))
    content_sha256: Mapped[str] = mapped_column(String(64))
    approvers: Mapped[list] = mapped_column(JSON, default=list)
    required: Mapped[int] = mapped_column(Integer, default=1)
    meaning: Mapped[str] = mapped_column(String(200))
    author: Mapped[str | None] = mapped_column(String(64))
    due_date: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(40))
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    data: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    process: Mapped[str | None] = mapped_column(String(64))


class SignatureRow(Base):
    """An electronic signature; its trail event (``trail_seq``) carries the same values, hashed."""

    __tablename__ = "signatures"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("approval_requests.id"), index=True)
    signer: Mapped[str] = mapped_column(String(64), index=True)
    printed_name: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    meaning: Mapped[str] = mapped_column(String(200))
    decision: Mapped[str] = mapped_column(String(20))
    comment: Mapped[str | None] = mapped_column(Text)
    method: Mapped[str] = mapped_column(String(20))
    content_sha256: Mapped[str] = mapped_column(String(64))
    trail_seq: Mapped[int] = mapped_column(Integer)


class ApiTokenRow(Base):
    """Personal API tokens for the CLI and CI; only the SHA-256 of the token is stored."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    person: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class OutboxRow(Base):
    """Messages to Slack/Jira, written in the same transaction as the change that causes them.

    Delivered in id order per ``stream`` (e.g. one approval request); an outage delays, never loses.
    """

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_status_next", "status", "next_attempt_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(300), unique=True)
    target: Mapped[str] = mapped_column(String(20))
    action: Mapped[str] = mapped_column(String(50))
    stream: Mapped[str] = mapped_column(String(200), index=True)
    payload: Mapped[dict] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class UserRow(Base):
    """A local account of the web app, bound to a person of qms.yaml; password hashed with argon2."""

    __tablename__ = "users"
    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    person: Mapped[str] = mapped_column(String(64), index=True)
    role: Mapped[str] = mapped_column(String(20))
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WebSessionRow(Base):
    """A signed-in browser session; the cookie holds a random id whose SHA-256 is stored here."""

    __tablename__ = "web_sessions"
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str] = mapped_column(ForeignKey("users.username"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class InboundEventRow(Base):
    """Webhook deliveries already processed (Jira's X-Atlassian-Webhook-Identifier): repeats are ignored."""

    __tablename__ = "inbound_events"
    __table_args__ = (UniqueConstraint("source", "identifier", name="uq_inbound_events_source_identifier"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(20))
    identifier: Mapped[str] = mapped_column(String(200))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)


class IntegrationStateRow(Base):
    """Small state of integrations, e.g. the time of the last Jira reconciliation."""

    __tablename__ = "integration_state"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[dict] = mapped_column(JSON, default=dict)
