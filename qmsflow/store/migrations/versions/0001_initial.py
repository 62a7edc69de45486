"""Initial schema: people, processes, documents and versions, records, trail with append-only triggers.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SQLITE_TRIGGERS = [
    """CREATE TRIGGER trail_events_no_update BEFORE UPDATE ON trail_events
    BEGIN SELECT RAISE(ABORT, 'trail_events is append-only: UPDATE refused'); END""",
    """CREATE TRIGGER trail_events_no_delete BEFORE DELETE ON trail_events
    BEGIN SELECT RAISE(ABORT, 'trail_events is append-only: DELETE refused'); END""",
]

POSTGRES_TRIGGERS = [
    """CREATE OR REPLACE FUNCTION qms_trail_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'trail_events is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
    END $$""",
    """CREATE TRIGGER trail_events_no_update_delete BEFORE UPDATE OR DELETE ON trail_events
    FOR EACH ROW EXECUTE FUNCTION qms_trail_append_only()""",
    """CREATE TRIGGER trail_events_no_truncate BEFORE TRUNCATE ON trail_events
    FOR EACH STATEMENT EXECUTE FUNCTION qms_trail_append_only()""",
]


def upgrade() -> None:
    op.create_table(
        "documents",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("path", sa.String(length=500), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("approvers", sa.JSON(), nullable=False),
        sa.Column("review_interval_months", sa.Integer(), nullable=False),
        sa.Column("systems", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_documents")),
    )
    op.create_table(
        "id_counters",
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("last", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("prefix", "year", name=op.f("pk_id_counters")),
    )
    op.create_table(
        "people",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("slack_id", sa.String(length=32), nullable=True),
        sa.Column("roles", sa.JSON(), nullable=False),
        sa.Column("manager", sa.String(length=64), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_people")),
    )
    op.create_table(
        "process_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("process_key", sa.String(length=64), nullable=False),
        sa.Column("flow_name", sa.String(length=200), nullable=False),
        sa.Column("flow_run_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=40), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_process_runs")),
        sa.UniqueConstraint("flow_run_id", name=op.f("uq_process_runs_flow_run_id")),
    )
    op.create_index("ix_process_runs_process_started", "process_runs", ["process_key", "started_at"], unique=False)
    op.create_table(
        "processes",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("procedure", sa.String(length=64), nullable=False),
        sa.Column("aspects", sa.JSON(), nullable=False),
        sa.Column("schedule", sa.String(length=100), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_processes")),
    )
    op.create_table(
        "records",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=True),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("status", sa.String(length=40), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("process", sa.String(length=64), nullable=True),
        sa.Column("due_date", sa.Date(), nullable=True),
        sa.Column("systems", sa.JSON(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("links", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_records")),
        sa.UniqueConstraint("key", name=op.f("uq_records_key")),
    )
    op.create_index("ix_records_kind_status", "records", ["kind", "status"], unique=False)
    op.create_index("ix_records_process_status", "records", ["process", "status"], unique=False)
    op.create_index("ix_records_status_due", "records", ["status", "due_date"], unique=False)
    op.create_table(
        "trail_events",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("ts", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=100), nullable=False),
        sa.Column("record", sa.String(length=200), nullable=False),
        sa.Column("before_json", sa.Text(), nullable=False),
        sa.Column("after_json", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_trail_events")),
        sa.UniqueConstraint("hash", name=op.f("uq_trail_events_hash")),
        sa.UniqueConstraint("prev_hash", name=op.f("uq_trail_events_prev_hash")),
    )
    op.create_index("ix_trail_events_actor_seq", "trail_events", ["actor", "seq"], unique=False)
    op.create_index("ix_trail_events_record_seq", "trail_events", ["record", "seq"], unique=False)
    op.create_index("ix_trail_events_ts", "trail_events", ["ts"], unique=False)
    op.create_table(
        "verifications",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("head_seq", sa.Integer(), nullable=False),
        sa.Column("head_hash", sa.String(length=64), nullable=False),
        sa.Column("problem", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_verifications")),
    )
    op.create_table(
        "document_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("document_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("path", sa.String(length=500), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("git_commit", sa.String(length=64), nullable=True),
        sa.Column("effective_date", sa.Date(), nullable=True),
        sa.Column("next_review_date", sa.Date(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["document_id"], ["documents.id"], name=op.f("fk_document_versions_document_id_documents")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_document_versions")),
        sa.UniqueConstraint("document_id", "version", name="uq_document_versions_document_id_version"),
    )
    op.create_index(op.f("ix_document_versions_document_id"), "document_versions", ["document_id"], unique=False)
    op.create_index(
        "ix_document_versions_status_next_review", "document_versions", ["status", "next_review_date"], unique=False
    )

    dialect = op.get_bind().dialect.name
    for statement in SQLITE_TRIGGERS if dialect == "sqlite" else POSTGRES_TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS trail_events_no_truncate ON trail_events")
        op.execute("DROP TRIGGER IF EXISTS trail_events_no_update_delete ON trail_events")
        op.execute("DROP FUNCTION IF EXISTS qms_trail_append_only()")
    for table in (
        "trail_events",
        "verifications",
        "process_runs",
        "id_counters",
        "records",
        "document_versions",
        "documents",
        "processes",
        "people",
    ):
        op.drop_table(table)
