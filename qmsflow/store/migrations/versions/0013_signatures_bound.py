"""Signatures bound to one account and sealed by a signing key; verifications append-only (issue 22, ADR 0018).

- ``users.password_set_by``: who last set an account's password. An account signs only with a
  password its person set. Existing accounts that need no password change carry a password their
  person chose (the first admin, or changed at the first sign-in): recorded as theirs; accounts
  still waiting for a first change stay NULL (set by an admin).
- ``signatures.account``, ``.auth``, ``.proof``: the account that signed, how it authenticated, and
  the signing key's proof over the signature's trail event. NULL for older signatures, whose state
  (and hashed event) has no such fields (``store.state`` treats them as optional).
- Triggers make ``verifications`` append-only like the trail: every head a verification saw is a
  witness against a truncated trail.

The users' states change (a new column), so their state is adopted once (``user.state-adopted``).
A store with a trail gets ``store.seals-required``: signatures before it carry no seal, every one after
it must (``qms verify``); a store made after this migration requires seals from its first event.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

import logging

import sqlalchemy as sa
from alembic import op
from sqlalchemy.orm import Session

from qmsflow.store import guards, state, trail

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("password_set_by", sa.String(length=200), nullable=True))
    with op.batch_alter_table("signatures") as batch:
        batch.add_column(sa.Column("account", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("auth", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("proof", sa.JSON(none_as_null=True), nullable=True))
    conn = op.get_bind()
    conn.execute(sa.text("UPDATE users SET password_set_by = person WHERE must_change_password = :no"), {"no": False})
    guards.ensure(conn)
    session = Session(bind=conn)
    adopted = state.adopt(session, actor="migration:0013")
    if adopted:
        log.info("adopted the state of %s account(s) with their new column (user.state-adopted)", sum(adopted.values()))
    head, _ = trail.head(session)
    if head:  # an older store: its signatures so far carry no seal; every later one must (a newer store: all)
        writer = trail.TrailWriter(session)
        writer.append(
            "migration:0013",
            "store.seals-required",
            "store:trail",
            None,
            {"after_seq": head, "why": "from here on every signature event is sealed by a signing key (ADR 0018)"},
        )
        writer.flush()


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "sqlite":
        for name in ("verifications_no_update", "verifications_no_delete"):
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")
    else:
        for name in ("verifications_no_update_delete", "verifications_no_truncate"):
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name} ON verifications")
    with op.batch_alter_table("signatures") as batch:
        batch.drop_column("proof")
        batch.drop_column("auth")
        batch.drop_column("account")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("password_set_by")
