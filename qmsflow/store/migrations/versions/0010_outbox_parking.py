"""Outbox that recovers: refusals in a row (a message is parked after N) and the fingerprint of the
target's configuration at the last failure (a changed qms.yaml makes failing messages due again).

Revision ID: 0010
Revises: 0007
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("failures", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("config_sha", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("config_sha")
        batch.drop_column("failures")
