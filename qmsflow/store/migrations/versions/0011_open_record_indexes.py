"""Partial indexes on open records: the overdue lists, the CAPA board and the per-process counts read only
the open records (a few percent of ten years of them) instead of every record. And the newest approval
requests (the approvals page) by their creation time instead of sorting all of them.

Revision ID: 0011
Revises: 0008
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0008"
branch_labels = None
depends_on = None

# as in qmsflow/store/tables.py at this revision (a migration does not follow later changes of the models)
OPEN_RECORD_SQL = "status NOT IN ('cancelled', 'closed', 'done', 'superseded')"
INDEXES = {
    "ix_records_open_kind_due": ["kind", "due_date", "id"],
    "ix_records_open_due": ["due_date", "id"],
    "ix_records_open_process_due": ["process", "due_date"],
    "ix_records_open_kind_status_created": ["kind", "status", "created_at"],
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(
            name,
            "records",
            columns,
            unique=False,
            sqlite_where=sa.text(OPEN_RECORD_SQL),
            postgresql_where=sa.text(OPEN_RECORD_SQL),
        )
    op.create_index("ix_approval_requests_created", "approval_requests", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_approval_requests_created", table_name="approval_requests")
    for name in INDEXES:
        op.drop_index(name, table_name="records")
