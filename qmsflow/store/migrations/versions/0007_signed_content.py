"""Signatures that hold up: content under signature stored, authors of a change, one signature per
signer and request, submissions by authenticated people, and the request behind a version's status.

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "contents",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("media_type", sa.String(length=100), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_contents")),
    )
    op.create_table(
        "submissions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("submitted_by", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("flow_run_id", sa.String(length=64), nullable=True),
        sa.Column("request_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_submissions")),
    )
    op.create_index(op.f("ix_submissions_subject"), "submissions", ["subject"], unique=False)
    op.create_index("ix_submissions_status_created", "submissions", ["status", "created_at"], unique=False)
    with op.batch_alter_table("approval_requests") as batch:
        batch.add_column(sa.Column("authors", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("what", sa.String(length=200), nullable=True))
    requests = sa.table(
        "approval_requests",
        sa.column("id", sa.String),
        sa.column("author", sa.String),
        sa.column("title", sa.String),
        sa.column("authors", sa.JSON),
        sa.column("what", sa.String),
    )
    bind = op.get_bind()
    for row_id, author, title in bind.execute(sa.select(requests.c.id, requests.c.author, requests.c.title)).all():
        bind.execute(
            requests.update()
            .where(requests.c.id == row_id)
            .values(authors=[author] if author else [], what=(title or "")[:200])
        )
    with op.batch_alter_table("approval_requests") as batch:
        batch.alter_column("authors", existing_type=sa.JSON(), nullable=False)
        batch.alter_column("what", existing_type=sa.String(length=200), nullable=False)
    with op.batch_alter_table("document_versions") as batch:
        batch.add_column(sa.Column("approval_request", sa.String(length=40), nullable=True))
    duplicates = bind.execute(
        sa.text("SELECT request_id, signer, count(*) FROM signatures GROUP BY request_id, signer HAVING count(*) > 1")
    ).all()
    if duplicates:
        listed = ", ".join(f"{r} by {s} ({n}x)" for r, s, n in duplicates)
        raise RuntimeError(
            f"the store holds several signatures of one person on one request ({listed}); this was a bug of "
            "qmsflow before 0007 on PostgreSQL. Keep a backup, decide with your quality lead which signature "
            "stands, and contact support before migrating: signatures are never deleted silently."
        )
    with op.batch_alter_table("signatures") as batch:
        batch.create_unique_constraint("uq_signatures_request_id_signer", ["request_id", "signer"])


def downgrade() -> None:
    with op.batch_alter_table("signatures") as batch:
        batch.drop_constraint("uq_signatures_request_id_signer", type_="unique")
    with op.batch_alter_table("document_versions") as batch:
        batch.drop_column("approval_request")
    with op.batch_alter_table("approval_requests") as batch:
        batch.drop_column("what")
        batch.drop_column("authors")
    op.drop_index("ix_submissions_status_created", table_name="submissions")
    op.drop_index(op.f("ix_submissions_subject"), table_name="submissions")
    op.drop_table("submissions")
    op.drop_table("contents")
