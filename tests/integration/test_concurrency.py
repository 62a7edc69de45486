"""Parallel writers never fork the chain (PostgreSQL: advisory lock; SQLite: BEGIN IMMEDIATE)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from qmsflow.services.records import create_record
from qmsflow.services.verify import verify
from qmsflow.store import Database, UnitOfWork
from qmsflow.store.tables import RecordRow

WRITERS = 8
TRANSACTIONS = 25


def test_parallel_writers_keep_one_chain(db: Database) -> None:
    start = threading.Barrier(WRITERS)

    def writer(n: int) -> int:
        start.wait()
        for t in range(TRANSACTIONS):
            with UnitOfWork(db, f"writer-{n}") as uow:
                create_record(uow, "capa", f"w{n} t{t}")
                uow.record("test.note", f"writer:{n}", None, {"t": t})
                uow.commit()
        return n

    with ThreadPoolExecutor(WRITERS) as pool:
        assert sorted(pool.map(writer, range(WRITERS))) == list(range(WRITERS))
    result = verify(db, None)
    assert result.ok, result.problem
    assert result.report.count == WRITERS * TRANSACTIONS * 2
    with db.read() as s:
        ids = s.scalars(select(RecordRow.id)).all()
        assert len(set(ids)) == WRITERS * TRANSACTIONS  # human ids unique too
        assert s.scalar(select(func.max(RecordRow.id))).endswith(f"{WRITERS * TRANSACTIONS:04d}")
