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
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.expression import ColumnElement, TextClause

from ..domain import limits
from ..domain.records import CLOSED_STATUSES
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
    id: Mapped[str] = mapped_column(String(limits.ID), primary_key=True)
    name: Mapped[str] = mapped_column(String(limits.NAME))
    email: Mapped[str] = mapped_column(String(limits.EMAIL))
    slack_id: Mapped[str | None] = mapped_column(String(limits.SLACK_ID))
    roles: Mapped[list] = mapped_column(JSON, default=list)
    manager: Mapped[str | None] = mapped_column(String(limits.ID))
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class ProcessRow(Base):
    __tablename__ = "processes"
    key: Mapped[str] = mapped_column(String(limits.ID), primary_key=True)
    title: Mapped[str] = mapped_column(String(limits.NAME))
    owner: Mapped[str] = mapped_column(String(limits.ID))
    procedure: Mapped[str] = mapped_column(String(limits.ID))
    aspects: Mapped[list] = mapped_column(JSON, default=list)
    schedule: Mapped[str | None] = mapped_column(String(limits.SCHEDULE))
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class DocumentRow(Base):
    __tablename__ = "documents"
    id: Mapped[str] = mapped_column(String(limits.ID), primary_key=True)
    title: Mapped[str] = mapped_column(String(limits.DOC_TITLE))
    path: Mapped[str] = mapped_column(String(limits.PATH))
    owner: Mapped[str] = mapped_column(String(limits.ID))
    approvers: Mapped[list] = mapped_column(JSON, default=list)
    review_interval_months: Mapped[int] = mapped_column(Integer, default=12)
    systems: Mapped[list] = mapped_column(JSON, default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)


EFFECTIVE_VERSION_SQL = "status = 'effective'"


def version_is_effective() -> TextClause:
    """``document_versions.status`` is effective, written as the partial index's condition (a bound
    parameter would keep SQLite's planner, and PostgreSQL's generic plans, from using it)."""
    return text(f"document_versions.{EFFECTIVE_VERSION_SQL}")


class DocumentVersionRow(Base):
    __tablename__ = "document_versions"
    __table_args__ = (
        UniqueConstraint("document_id", "version", name="uq_document_versions_document_id_version"),
        Index("ix_document_versions_status_next_review", "status", "next_review_date"),
        # the register's "registered on" (first version) and current version per document (migration 0012)
        Index("ix_document_versions_document_created", "document_id", "created_at"),
        Index(
            "ix_document_versions_effective",
            "document_id",
            sqlite_where=text(EFFECTIVE_VERSION_SQL),
            postgresql_where=text(EFFECTIVE_VERSION_SQL),
        ),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    document_id: Mapped[str] = mapped_column(ForeignKey("documents.id"))
    version: Mapped[str] = mapped_column(String(limits.VERSION))
    status: Mapped[str] = mapped_column(String(20))
    path: Mapped[str] = mapped_column(String(limits.PATH))
    content_sha256: Mapped[str] = mapped_column(String(64))
    git_commit: Mapped[str | None] = mapped_column(String(64))
    effective_date: Mapped[date | None] = mapped_column(Date)
    next_review_date: Mapped[date | None] = mapped_column(Date)
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # the approval request whose decision last set this version's status or review date (effective, obsolete,
    # back to draft, confirmed still valid)
    approval_request: Mapped[str | None] = mapped_column(String(40))


CLOSED_SQL = ", ".join(f"'{status}'" for status in sorted(CLOSED_STATUSES))
OPEN_RECORD_SQL = f"status NOT IN ({CLOSED_SQL})"
OPEN_RECORD_INDEXES = {
    "ix_records_open_kind_due": ("kind", "due_date", "id"),
    "ix_records_open_due": ("due_date", "id"),
    "ix_records_open_process_due": ("process", "due_date"),
    "ix_records_open_kind_status_created": ("kind", "status", "created_at"),
}


def record_is_open() -> TextClause:
    """``records.status`` is not a closed status (domain.records.CLOSED_STATUSES), written exactly as the
    partial indexes' condition so that SQLite's and PostgreSQL's planners use them."""
    return text(f"records.{OPEN_RECORD_SQL}")


class RecordRow(Base):
    __tablename__ = "records"
    __table_args__ = (
        Index("ix_records_kind_status", "kind", "status"),
        Index("ix_records_process_status", "process", "status"),
        Index("ix_records_status_due", "status", "due_date"),
        # the overdue chart: records that fell due in a month, open or closed late (migration 0012)
        Index("ix_records_due_status_updated", "due_date", "status", "updated_at"),
        # open records only (a few percent of ten years of them): the read models' overdue lists, the
        # boards and the per-process counts (migration 0011); queries name OPEN_RECORD_SQL literally
        *(
            Index(name, *columns, sqlite_where=text(OPEN_RECORD_SQL), postgresql_where=text(OPEN_RECORD_SQL))
            for name, columns in OPEN_RECORD_INDEXES.items()
        ),
    )
    id: Mapped[str] = mapped_column(String(limits.RECORD_ID), primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    key: Mapped[str | None] = mapped_column(String(limits.KEY), unique=True)
    title: Mapped[str] = mapped_column(String(limits.RECORD_TITLE))
    status: Mapped[str] = mapped_column(String(40))
    owner: Mapped[str | None] = mapped_column(String(limits.ID))
    process: Mapped[str | None] = mapped_column(String(limits.ID))
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
    process_key: Mapped[str] = mapped_column(String(limits.ID))
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


class EventState(ColumnElement):
    """A top-level field of a stored event's ``before`` or ``after`` state (``EventState("after", "status")``),
    extracted by the database, as text (NULL when the state or the field is absent): to filter events by
    what they changed without reading every one. Not indexed: use it next to an indexed condition (ts)."""

    inherit_cache = False
    type = String()

    def __init__(self, side: str, name: str):
        if side not in ("before", "after") or not name.replace("_", "").isalnum():
            raise ValueError(f"not a state field: {side}.{name}")
        self.side, self.field = side, name


@compiles(EventState, "sqlite")
def _event_state_sqlite(element: EventState, compiler: Any, **kw: Any) -> str:
    return f"json_extract(canonical, '$.{element.side}.{element.field}')"


@compiles(EventState, "postgresql")
def _event_state_postgresql(element: EventState, compiler: Any, **kw: Any) -> str:
    return f"(canonical::json -> '{element.side}' ->> '{element.field}')"


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
        Index("ix_approval_requests_created", "created_at"),  # the newest requests (migration 0011)
    )
    id: Mapped[str] = mapped_column(String(limits.RECORD_ID), primary_key=True)
    key: Mapped[str] = mapped_column(String(limits.KEY), unique=True)
    subject: Mapped[str] = mapped_column(String(200), index=True)
    title: Mapped[str] = mapped_column(String(limits.RECORD_TITLE))
    content_sha256: Mapped[str] = mapped_column(String(64))
    approvers: Mapped[list] = mapped_column(JSON, default=list)
    required: Mapped[int] = mapped_column(Integer, default=1)
    meaning: Mapped[str] = mapped_column(String(limits.NAME))
    author: Mapped[str | None] = mapped_column(String(limits.ID))
    due_date: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(40))
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    data: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    process: Mapped[str | None] = mapped_column(String(limits.ID))
    # everyone who authored what is approved (the submitter, the git authors of the change): none may sign
    authors: Mapped[list] = mapped_column(JSON, default=list)
    # what a signature decides on, for the meaning of a rejection or change request ("SOP-DES-001 v1.1")
    what: Mapped[str] = mapped_column(String(limits.NAME), default="")


class SignatureRow(Base):
    """An electronic signature; its trail event (``trail_seq``) carries the same values, hashed.

    One per (request, signer): a database constraint, whatever the concurrency.
    """

    __tablename__ = "signatures"
    __table_args__ = (UniqueConstraint("request_id", "signer", name="uq_signatures_request_id_signer"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("approval_requests.id"), index=True)
    signer: Mapped[str] = mapped_column(String(limits.ID), index=True)
    printed_name: Mapped[str] = mapped_column(String(limits.NAME))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    meaning: Mapped[str] = mapped_column(String(limits.NAME))
    decision: Mapped[str] = mapped_column(String(20))
    comment: Mapped[str | None] = mapped_column(Text)
    method: Mapped[str] = mapped_column(String(20))
    content_sha256: Mapped[str] = mapped_column(String(64))
    trail_seq: Mapped[int] = mapped_column(Integer)
    # since 0013 (NULL before; absent from the state of older signatures): the account that signed, how it
    # authenticated, and the signing key's proof over the signature's trail event (ADR 0018)
    account: Mapped[str | None] = mapped_column(String(limits.ID))
    auth: Mapped[str | None] = mapped_column(String(limits.NAME))
    proof: Mapped[dict | None] = mapped_column(JSON(none_as_null=True))


class ContentRow(Base):
    """Content under signature, addressed by its SHA-256 and stored once: the exact document text as
    submitted, or the record state a signed step approves. ``sha256`` is the hash of ``body``."""

    __tablename__ = "contents"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    media_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(Integer)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SubmissionRow(Base):
    """A request to start a procedure step, made by an authenticated person (CLI, API or web).

    Flows receive only its id: what is reviewed, by whom and with which content comes from here.
    """

    __tablename__ = "submissions"
    __table_args__ = (Index("ix_submissions_status_created", "status", "created_at"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    subject: Mapped[str] = mapped_column(String(200), index=True)
    submitted_by: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20))
    content_sha256: Mapped[str | None] = mapped_column(String(64))
    data: Mapped[dict] = mapped_column(JSON, default=dict)
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ApiTokenRow(Base):
    """Personal API tokens for the CLI and CI; only the SHA-256 of the token is stored."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    person: Mapped[str] = mapped_column(String(limits.ID), index=True)
    name: Mapped[str] = mapped_column(String(limits.TOKEN_NAME))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # the account whose password issued it (NULL: issued before 0006, refused as such)
    username: Mapped[str | None] = mapped_column(String(64))
    # NULL: issued before tokens had an expiry (0006); such tokens are refused
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class OutboxRow(Base):
    """Messages to Slack/Jira, written in the same transaction as the change that causes them.

    Delivered in id order per ``stream`` (e.g. one approval request); an outage delays, never loses.
    ``status``: pending, sending, sent, parked (refused ``failures`` times in a row; needs a person or a
    configuration change), superseded (a newer intent of its stream replaced it) or dropped (by a
    person). ``config_sha``: fingerprint of the target's configuration when it last failed.
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
    failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    config_sha: Mapped[str | None] = mapped_column(String(64))
    result: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class UserRow(Base):
    """A local account of the web app, bound to a person of qms.yaml; password hashed with argon2."""

    __tablename__ = "users"
    username: Mapped[str] = mapped_column(String(limits.ID), primary_key=True)
    person: Mapped[str] = mapped_column(String(limits.ID), index=True)
    role: Mapped[str] = mapped_column(String(20))
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # a first password set by an admin (or a reset) must be changed at the next sign-in
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    password_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # who last set the password: the person (their own), or the admin who created or reset it (0013)
    password_set_by: Mapped[str | None] = mapped_column(String(limits.NAME))


class WebSessionRow(Base):
    """A signed-in browser session; the cookie holds a random id whose SHA-256 is stored here."""

    __tablename__ = "web_sessions"
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str] = mapped_column(ForeignKey("users.username"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SignInThrottleRow(Base):
    """Failed sign-ins per key (``user:<name>`` or ``address:<ip>``) in the current window; operational,
    not a QMS record. A key with ``locked_until`` in the future is refused before any password is checked.
    """

    __tablename__ = "sign_in_throttle"
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    refused: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


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
