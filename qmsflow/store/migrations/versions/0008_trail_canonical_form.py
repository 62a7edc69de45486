"""The trail stores each event's canonical form; stricter guards; record states adopted once.

Every event keeps its hash: its canonical form is rebuilt from the columns it was hashed from
(``canonical_event``), exactly the bytes hashed when it was appended, and stored as ``canonical``;
the searchable columns are then generated from it by the database. An event whose columns had been
edited keeps its stored hash too, so ``qms verify`` still reports it at its seq.

Then the rows of the record tables whose state the trail does not fully hold (older qmsflow wrote
some changes without a full-state event) are adopted: one ``<entity>.state-adopted`` event per such
row, before = what the trail said, after = what the table holds, actor ``migration:0008``.

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-03
"""

import logging

import sqlalchemy as sa
from alembic import op
from sqlalchemy.orm import Session

from qmsflow.domain.trail import canonical_event
from qmsflow.store import guards, state
from qmsflow.store.tables import EventField

revision = "0008"
down_revision = "0006"
branch_labels = None
depends_on = None

log = logging.getLogger("qmsflow.migrations")
OLD = "seq, ts, actor, action, record, before_json, after_json, prev_hash, hash"
BATCH = 20_000


def _generated(name: str, length: int) -> sa.Column:
    return sa.Column(name, sa.String(length=length), sa.Computed(EventField(name), persisted=True), nullable=False)


def upgrade() -> None:
    conn = op.get_bind()
    op.create_table(
        "trail_events_canonical",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("canonical", sa.Text(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
    )
    copy = sa.table("trail_events_canonical", sa.column("seq"), sa.column("canonical"), sa.column("hash"))
    # streamed (a server-side cursor on PostgreSQL): a store of millions of events is never held in memory
    result = conn.exec_driver_sql(
        f"SELECT {OLD} FROM trail_events ORDER BY seq", execution_options={"stream_results": True}
    )
    while rows := result.fetchmany(BATCH):
        conn.execute(
            copy.insert(),
            [{"seq": r[0], "canonical": canonical_event(*r[:8]).decode("utf-8"), "hash": r[8]} for r in rows],
        )
    op.drop_table("trail_events")  # its triggers and indexes go with it
    op.create_table(
        "trail_events",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("canonical", sa.Text(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        _generated("ts", 32),
        _generated("actor", 200),
        _generated("action", 100),
        _generated("record", 200),
        _generated("prev_hash", 64),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_trail_events")),
        sa.UniqueConstraint("hash", name=op.f("uq_trail_events_hash")),
        sa.UniqueConstraint("prev_hash", name=op.f("uq_trail_events_prev_hash")),
    )
    try:
        with conn.begin_nested():
            conn.exec_driver_sql(
                "INSERT INTO trail_events (seq, canonical, hash) "
                "SELECT seq, canonical, hash FROM trail_events_canonical ORDER BY seq"
            )
    except sa.exc.DBAPIError:
        raise RuntimeError(_unreadable(conn)) from None
    op.drop_table("trail_events_canonical")
    op.create_index("ix_trail_events_actor_seq", "trail_events", ["actor", "seq"], unique=False)
    op.create_index("ix_trail_events_record_seq", "trail_events", ["record", "seq"], unique=False)
    op.create_index("ix_trail_events_ts", "trail_events", ["ts"], unique=False)
    guards.install(conn)
    adopted = state.adopt(Session(bind=conn), actor="migration:0008")
    if adopted:
        log.warning(
            "adopted the state of %s row(s) the trail did not hold in full (events *.state-adopted): %s",
            sum(adopted.values()),
            ", ".join(f"{table} {n}" for table, n in sorted(adopted.items())),
        )


def _unreadable(conn: sa.Connection) -> str:
    """Name the first event that is no JSON any more (only an edited store has one)."""
    import json

    for seq, canonical in conn.exec_driver_sql("SELECT seq, canonical FROM trail_events_canonical ORDER BY seq"):
        try:
            json.loads(canonical)
        except ValueError:
            return (
                f"trail event seq {seq} was edited into text that is not JSON, so its canonical form cannot be "
                "stored: run 'qms verify' with the previous qmsflow to see the damage, and restore a backup"
            )
    return "the trail could not be copied into its canonical form (see the database error in the log)"


def downgrade() -> None:
    raise NotImplementedError("the trail's canonical form cannot be downgraded: restore a backup instead")
