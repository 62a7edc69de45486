"""The dashboard's read models reach their indexes, on SQLite and PostgreSQL.

The partial indexes (open records, effective versions) serve a query only when its WHERE clause implies
the index's condition, written as a literal: a bound parameter in its place keeps SQLite's planner, and
PostgreSQL's generic plans, from using them, and ten years of records are then read to show a page. So
each read model's statements are captured as they run and explained with the same parameters (on
PostgreSQL with sequential scans off, as a small test table would otherwise be scanned whatever the
query says).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import TextClause, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from qmsflow.context import QmsContext
from qmsflow.services import queries
from qmsflow.services.status import process_status
from qmsflow.store.tables import record_is_open, version_is_effective

TODAY = date(2026, 12, 4)


@contextmanager
def captured(ctx: QmsContext) -> Iterator[list[tuple[str, object]]]:
    statements: list[tuple[str, object]] = []

    def before(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    event.listen(ctx.db.engine, "before_cursor_execute", before)
    try:
        yield statements
    finally:
        event.remove(ctx.db.engine, "before_cursor_execute", before)


def plans(ctx: QmsContext, read: Callable[[Session], object]) -> list[str]:
    """The plan of every SELECT that ``read`` issues, one text per statement."""
    with captured(ctx) as statements, ctx.db.read() as session:
        read(session)
    out = []
    with ctx.db.engine.connect() as conn:
        if ctx.db.is_sqlite:
            for statement, parameters in statements:
                rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
                out.append("\n".join(str(row[-1]) for row in rows))
        else:
            conn.exec_driver_sql("SET enable_seqscan = off")
            for statement, parameters in statements:
                rows = conn.exec_driver_sql(f"EXPLAIN {statement}", parameters).all()
                out.append("\n".join(row[0] for row in rows))
            conn.rollback()
    return out


BIG = ("records", "document_versions", "trail_events")


def full_scans(all_plans: list[str]) -> list[str]:
    """Plan lines that read one of the big tables whole (SQLite: SCAN, even in an index's order;
    PostgreSQL, with sequential scans off: a Seq Scan, i.e. no index could serve)."""
    lines = [line.strip() for plan in all_plans for line in plan.splitlines()]
    return [
        line
        for line in lines
        if any(re.search(rf"^(`--|\|--)?\s*SCAN {table}\b", line) or f"Seq Scan on {table} " in line for table in BIG)
    ]


READ_MODELS: dict[str, Callable[[QmsContext, Session], object]] = {
    "documents register": lambda ctx, s: queries.documents(s, TODAY, 1),
    "effective version": lambda ctx, s: queries.effective(s, ctx.config.documents[0].id),
    "registered on": lambda ctx, s: queries.registered_on(s, [d.id for d in ctx.config.documents]),
    "CAPA board": lambda ctx, s: queries.capa_board(s),
    "overdue": lambda ctx, s: queries.overdue(s, TODAY, 1),
    "overdue CAPAs": lambda ctx, s: queries.overdue(s, TODAY, 1, kind="capa"),
    "processes": lambda ctx, s: process_status(ctx.db, TODAY, datetime.now(UTC), session=s),
    "overdue chart": lambda ctx, s: queries.overdue_by_month(s, TODAY),
    "CAPA ageing": lambda ctx, s: queries.capa_ageing(s, datetime.now(UTC)),
}


@pytest.mark.parametrize("name", list(READ_MODELS))
def test_read_models_never_read_ten_years_of_a_big_table(synced_ctx: QmsContext, name: str) -> None:
    found = plans(synced_ctx, lambda s: READ_MODELS[name](synced_ctx, s))
    assert found, "no statement captured"
    assert full_scans(found) == [], found


def test_full_scans_are_recognised() -> None:
    """The check above can fail: both planners' wording of a whole-table read is caught."""
    assert full_scans(["`--SCAN records", "SEARCH records USING INDEX ix_records_open_due (due_date<?)"]) == [
        "`--SCAN records"
    ]
    assert full_scans(["SCAN document_versions USING INDEX ix_x"]) == ["SCAN document_versions USING INDEX ix_x"]
    assert full_scans(["  ->  Seq Scan on records  (cost=0.00..1.00 rows=1 width=8)"]) != []
    assert full_scans(["Index Scan using ix_records_open_due on records  (cost=0.1..8.1 rows=1)"]) == []


@pytest.mark.parametrize(
    ("table", "index", "condition"),
    [
        ("records", "ix_records_open_due", record_is_open),
        ("document_versions", "ix_document_versions_effective", version_is_effective),
    ],
)
def test_a_partial_index_is_reached_by_its_literal_condition_not_by_a_parameter(
    ctx: QmsContext, table: str, index: str, condition: Callable[[], TextClause]
) -> None:
    """SQLite uses a partial index only for a WHERE clause that implies the index's own condition as
    written (PostgreSQL's custom plans see the parameter's value, its generic plans do not): the read
    models' conditions (store.tables) are the indexes' own. ``INDEXED BY`` makes SQLite refuse a
    statement the named index cannot serve."""
    assert ctx.db.is_sqlite
    with ctx.db.engine.connect() as conn:
        conn.exec_driver_sql(f"SELECT count(*) FROM {table} INDEXED BY {index} WHERE {condition().text}").all()
        literal = condition().text.split(".", 1)[1]
        bound, values = re.sub(r"'[^']*'", "?", literal), re.findall(r"'([^']*)'", literal)
        with pytest.raises(OperationalError, match="no query solution"):
            conn.exec_driver_sql(f"SELECT count(*) FROM {table} INDEXED BY {index} WHERE {bound}", tuple(values)).all()
