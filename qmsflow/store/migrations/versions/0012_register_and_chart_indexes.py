"""The documents register reads per document its first version (when it was registered) and its effective
version: an index on (document_id, created_at) and a partial one on effective versions, instead of every
version of the page's documents (on PostgreSQL a scan of the whole table). The single-column index on
document_id goes: the new index and the (document_id, version) constraint both begin with it.
And the overdue chart's records that fell due in a month (open, or closed after their due date), by an
index on (due_date, status, updated_at) that answers alone, instead of reading every record twelve times.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

EFFECTIVE = "status = 'effective'"


def upgrade() -> None:
    op.create_index(
        "ix_document_versions_document_created", "document_versions", ["document_id", "created_at"], unique=False
    )
    op.create_index(
        "ix_document_versions_effective",
        "document_versions",
        ["document_id"],
        unique=False,
        sqlite_where=sa.text(EFFECTIVE),
        postgresql_where=sa.text(EFFECTIVE),
    )
    op.drop_index("ix_document_versions_document_id", table_name="document_versions")
    op.create_index("ix_records_due_status_updated", "records", ["due_date", "status", "updated_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_records_due_status_updated", table_name="records")
    op.create_index("ix_document_versions_document_id", "document_versions", ["document_id"], unique=False)
    op.drop_index("ix_document_versions_effective", table_name="document_versions")
    op.drop_index("ix_document_versions_document_created", table_name="document_versions")
