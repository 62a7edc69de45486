"""The records store on SQLite and PostgreSQL: schema, append-only trail, tamper detection, retention."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from qmsflow.context import QmsContext
from qmsflow.domain.errors import RetentionError
from qmsflow.services.documents import scan_due_reviews
from qmsflow.services.records import create_record, delete_document_version, delete_record
from qmsflow.services.sync import sync_config
from qmsflow.services.verify import anchor, verify
from qmsflow.store import Database, UnitOfWork, guards, trail
from qmsflow.store.tables import Base, RecordRow, TrailEventRow


def append(db: Database, n: int, actor: str = "ana") -> None:
    with UnitOfWork(db, actor) as uow:
        for i in range(n):
            uow.record("test.changed", f"test:T-{i}", {"v": i}, {"v": i + 1})  # a ref no record table holds
        uow.commit()


def raw(db: Database, *statements: str) -> None:
    with db.engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)


def drop_triggers(db: Database) -> None:
    if db.is_sqlite:
        raw(db, *(f"DROP TRIGGER {name}" for name in guards.SQLITE))
    else:
        raw(db, *(f"DROP TRIGGER {name} ON {table}" for name, (table, _) in guards.POSTGRES_TRIGGERS.items()))


def test_migrations_create_exactly_the_models(db: Database) -> None:
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    assert db.current_revision() == db.head_revision()


def test_head_revision_without_alembic_matches_alembic(db: Database) -> None:
    from alembic.script import ScriptDirectory

    assert db.head_revision() == ScriptDirectory.from_config(db._alembic()).get_current_head()


def test_upgrade_is_idempotent(db: Database) -> None:
    before, after = db.upgrade()
    assert before == after == db.head_revision()


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE trail_events SET canonical = replace(canonical, 'ana', 'eve') WHERE seq = 2",
        "DELETE FROM trail_events WHERE seq = 3",
        "DELETE FROM trail_events",
    ],
)
def test_trail_refuses_update_and_delete(db: Database, statement: str) -> None:
    append(db, 3)
    with pytest.raises(DBAPIError, match="append-only"):
        raw(db, statement)
    assert verify(db, None).report.count == 3


def test_trail_refuses_truncate_on_postgres(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite has no TRUNCATE")
    append(db, 2)
    with pytest.raises(DBAPIError, match="append-only"):
        raw(db, "TRUNCATE trail_events")


def test_change_and_event_commit_together_or_not_at_all(db: Database) -> None:
    with UnitOfWork(db, "ana") as uow:
        create_record(uow, "capa", "Leaked test data", key="k1")
        # leaving without commit rolls back the record and its event
    with db.read() as s:
        assert s.scalar(select(RecordRow.id)) is None
        assert trail.count(s) == 0


def test_edited_event_is_reported_at_its_seq(db: Database) -> None:
    append(db, 6)
    drop_triggers(db)
    raw(
        db,
        'UPDATE trail_events SET canonical = replace(canonical, \'"after":{"v":4}\', \'"after":{"v":99}\') WHERE seq = 4',
    )
    result = verify(db, None)
    assert (result.report.broken.seq, result.report.broken.problem) == (4, "content changed")
    assert result.report.count == 3


def test_deleted_event_is_reported_at_its_seq(db: Database) -> None:
    append(db, 6)
    drop_triggers(db)
    raw(db, "DELETE FROM trail_events WHERE seq = 5")
    broken = verify(db, None).report.broken
    assert (broken.seq, broken.problem) == (5, "gap")


def test_reordered_events_are_reported_at_the_first_moved_seq(db: Database) -> None:
    append(db, 6)
    drop_triggers(db)
    # swap the sequence numbers of events 2 and 3 (through a free number: seq is the primary key)
    raw(
        db,
        "UPDATE trail_events SET seq = 1000 WHERE seq = 2",
        "UPDATE trail_events SET seq = 2 WHERE seq = 3",
        "UPDATE trail_events SET seq = 3 WHERE seq = 1000",
    )
    broken = verify(db, None).report.broken
    assert (broken.seq, broken.problem) == (2, "link broken")


def test_truncated_tail_is_caught_by_an_anchor(db: Database, tmp_path: Path) -> None:
    anchors = tmp_path / "records" / "trail-anchors.jsonl"
    append(db, 5)
    done = anchor(db, anchors)
    first = done.anchor
    # the first anchor in a file is recorded in the trail first (store.anchored), then anchored with it
    assert done.written and first.seq == 6 and not done.git_repo and done.commit is None
    again = anchor(db, anchors)
    assert (again.anchor.seq, again.anchor.hash, again.written) == (first.seq, first.hash, False)  # not twice
    assert verify(db, anchors).ok
    drop_triggers(db)
    raw(db, "DELETE FROM trail_events WHERE seq >= 4")
    result = verify(db, anchors)
    assert result.report.ok  # the shortened chain is self-consistent ...
    assert not result.ok  # ... but git's copy of the head says otherwise
    assert result.anchor_problems == [
        "trail-anchors.jsonl line 1 saw the trail at seq 6, but the trail now ends at seq 3: events were removed"
    ]


def test_rewritten_chain_is_caught_by_an_anchor(db: Database, tmp_path: Path) -> None:
    anchors = tmp_path / "anchors.jsonl"
    append(db, 3)
    anchor(db, anchors)
    drop_triggers(db)
    raw(db, "DELETE FROM trail_events")
    append(db, 4, actor="mallory")  # a whole new, self-consistent chain (as long as the anchored one)
    result = verify(db, anchors)
    assert result.report.ok and not result.ok
    assert "saw seq 4 with hash" in result.anchor_problems[0] and "the trail was rewritten" in result.anchor_problems[0]


def test_verification_outcomes_are_recorded(db: Database) -> None:
    from qmsflow.services.verify import last_verification

    assert last_verification(db) is None
    append(db, 2)
    verify(db, None)
    last = last_verification(db)
    assert last.ok and last.count == 2


def test_sync_is_idempotent_and_trailed(ctx: QmsContext) -> None:
    with UnitOfWork(ctx.db, "ana") as uow:
        first = sync_config(uow, ctx.config, ctx.root)
        uow.commit()
        second = sync_config(uow, ctx.config, ctx.root)
        uow.commit()
    assert len(first.changes) == 4 + 10 + 11 + 11 + 2  # people, processes, documents, draft versions, AI systems
    assert not second
    with ctx.db.read() as s:
        events = trail.events_for(s, "document-version:SOP-DOC-001@1.0")
    assert [e.action for e in events] == ["document-version.registered"]
    assert events[0].after["status"] == "draft" and len(events[0].after["content_sha256"]) == 64


def test_due_scan_records_each_document_once(ctx: QmsContext) -> None:
    with UnitOfWork(ctx.db, "qmsflow") as uow:
        sync_config(uow, ctx.config, ctx.root)
        uow.commit()
        today = datetime.now(UTC).date()
        first = scan_due_reviews(uow, today)
        uow.commit()
        again = scan_due_reviews(uow, today)
        uow.commit()
    assert len(first) == 11 and all(d.created for d in first)  # nothing approved yet: all due
    assert [d.record_id for d in again] == [d.record_id for d in first]
    assert not any(d.created for d in again)
    assert first[0].record_id == f"DRD-{today.year}-0001"


def test_retention_refuses_deletion_and_records_the_attempt(ctx: QmsContext) -> None:
    with UnitOfWork(ctx.db, "qmsflow") as uow:
        row, _ = create_record(uow, "capa", "Mislabelled training data", systems=["triage-assist"])
        uow.commit()
        record_id = row.id
    # Art. 18(1): ten years from placing on the market (triage-assist: 2026-09-01), at least ten from the record
    with UnitOfWork(ctx.db, "dev") as uow, pytest.raises(RetentionError, match=r"must be kept until 20(36|37)-"):
        delete_record(uow, ctx.config, record_id, date(2036, 8, 31))
    with ctx.db.read() as s:
        assert s.get(RecordRow, record_id) is not None
        refused = s.scalars(select(TrailEventRow).where(TrailEventRow.action == "capa.delete-refused")).one()
    assert refused.actor == "dev" and refused.record == f"record:{record_id}"
    assert "must be kept" in refused.after_json


def test_document_version_deletion_is_refused_under_retention(ctx: QmsContext) -> None:
    with UnitOfWork(ctx.db, "qmsflow") as uow:
        sync_config(uow, ctx.config, ctx.root)
        uow.commit()
    with UnitOfWork(ctx.db, "ben") as uow, pytest.raises(RetentionError, match="must be kept"):
        delete_document_version(uow, ctx.config, "SOP-DOC-001", "1.0", date(2030, 1, 1))
    with ctx.db.read() as s:
        assert [e.actor for e in trail.events_for(s, "document-version:SOP-DOC-001@1.0")][-1] == "ben"


def test_record_past_retention_can_be_deleted_and_the_deletion_is_trailed(ctx: QmsContext) -> None:
    with UnitOfWork(ctx.db, "qmsflow") as uow:
        row, _ = create_record(uow, "capa", "Old", systems=[])
        uow.commit()
        record_id = row.id
    # a QMS without AI systems: the record's own ten years
    config = ctx.config.model_copy(update={"systems": []})
    with UnitOfWork(ctx.db, "ana") as uow:
        delete_record(uow, config, record_id, date(2100, 1, 1))
    with ctx.db.read() as s:
        assert s.get(RecordRow, record_id) is None
        assert [e.action for e in trail.events_for(s, f"record:{record_id}")] == ["capa.created", "capa.deleted"]
    assert verify(ctx.db, None).ok


def test_store_on_postgres_via_environment(pg_ctx: QmsContext) -> None:
    assert pg_ctx.db.dialect == "postgresql"
    with UnitOfWork(pg_ctx.db, "qmsflow") as uow:
        sync_config(uow, pg_ctx.config, pg_ctx.root)
        uow.commit()
    assert verify(pg_ctx.db, None).report.count == 38  # with the two AI systems' lifecycle records


def test_vacuum_analyze_after_a_bulk_load_on_postgresql(db: Database) -> None:
    """After a bulk load or a restore: VACUUM (ANALYZE) of every table of the store on PostgreSQL (the
    visibility map for index-only scans, the planner's statistics), nothing on SQLite."""
    ran = db.vacuum_analyze()
    assert ran is (db.dialect == "postgresql")
    if ran:  # the statistics views may report it a moment later on a busy server
        deadline = time.monotonic() + 30
        while True:
            with db.engine.connect() as conn:
                analyzed = conn.execute(
                    text(
                        "SELECT count(*) = 2 FROM pg_stat_user_tables WHERE last_vacuum IS NOT NULL "
                        "AND last_analyze IS NOT NULL AND schemaname = current_schema() "
                        "AND relname IN ('records', 'trail_events')"
                    )
                ).scalar_one()
            if analyzed or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert analyzed


def test_reads_on_postgresql_hold_no_transaction_and_snapshots_do(db: Database) -> None:
    """``read()`` on PostgreSQL runs each statement in autocommit (READ COMMITTED would take a snapshot per
    statement anyway: a transaction added only round trips); ``snapshot()`` is one REPEATABLE READ view;
    the trail streams from a read session too. SQLite's reads are WAL snapshot transactions."""
    append(db, 3)
    with db.read() as session:
        session.execute(text("SELECT 1"))
        dbapi = session.connection().connection.dbapi_connection
        if db.is_sqlite:
            assert dbapi.in_transaction
        else:
            from psycopg.pq import TransactionStatus

            assert dbapi.info.transaction_status == TransactionStatus.IDLE
        assert [seq for seq, _, _ in trail.iter_rows(session)] == [1, 2, 3]
    with db.snapshot() as session:
        first = trail.count(session)
        append(db, 1)  # committed by another connection meanwhile
        assert trail.count(session) == first == 3
        if not db.is_sqlite:
            level = session.execute(text("SHOW transaction_isolation")).scalar_one()
            assert level == "repeatable read"
