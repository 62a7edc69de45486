"""Approval requests name their QMS process (open approvals per process on the overview).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("approval_requests") as batch:
        batch.add_column(sa.Column("process", sa.String(length=64), nullable=True))
    op.create_index("ix_approval_requests_process_status", "approval_requests", ["process", "status"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_approval_requests_process_status", table_name="approval_requests")
    with op.batch_alter_table("approval_requests") as batch:
        batch.drop_column("process")
