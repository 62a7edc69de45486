"""Appending to and reading the audit trail in the records store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import nullcontext
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert, select, text
from sqlalchemy.orm import Session

from ..domain.seals import message
from ..domain.trail import GENESIS, TrailEvent, make_event, parse_event
from .tables import TRAIL_COLUMNS, TrailEventRow

# any constant: PostgreSQL advisory lock that serialises appends to the chain
TRAIL_LOCK_KEY = 0x716D_7366  # "qmsf"


class TrailWriter:
    """Chains events within one transaction; the first append locks and reads the head."""

    def __init__(self, session: Session):
        self.session = session
        self._head: tuple[int, str] | None = None
        self._pending: list[dict[str, Any]] = []

    def _load_head(self) -> tuple[int, str]:
        if self.session.get_bind().dialect.name == "postgresql":
            self.session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": TRAIL_LOCK_KEY})
        row = self.session.execute(
            select(TrailEventRow.seq, TrailEventRow.hash).order_by(TrailEventRow.seq.desc()).limit(1)
        ).first()
        return (row[0], row[1]) if row else (0, GENESIS)

    def lock(self) -> None:
        """Serialise this transaction with every other writer (taken at the first append anyway).

        Call it before reading state that the transaction will change, such as id counters.
        """
        if self._head is None:
            self._head = self._load_head()

    def append(
        self,
        actor: str,
        action: str,
        record: str,
        before: Any,
        after: Any,
        at: datetime | None = None,
        seal: Callable[[bytes], dict[str, Any]] | None = None,
    ) -> TrailEvent:
        """Append an event after the head. ``seal`` (signatures, ADR 0018) is given the bytes of the event as
        it would be without a proof (``domain.seals.message``) and returns the proof, which is added to
        ``after`` under ``"proof"``: the proof covers the event's seq, time, actor, ref, content and the
        hash of the event before it."""
        self.lock()
        seq, prev = self._head
        moment = at or datetime.now(UTC)
        if seal is not None:
            unsealed = make_event(seq + 1, moment, actor, action, record, before, after, prev)
            after = {**after, "proof": seal(message(unsealed))}
        event = make_event(seq + 1, moment, actor, action, record, before, after, prev)
        self._pending.append({"seq": event.seq, "canonical": event.canonical().decode("utf-8"), "hash": event.hash})
        self._head = (event.seq, event.hash)
        return event

    def flush(self) -> None:
        if self._pending:
            # Core executemany on the session's connection: same transaction, no ORM bookkeeping
            self.session.connection().execute(insert(TrailEventRow.__table__), self._pending)
            self._pending = []

    def reset(self) -> None:
        self._head = None
        self._pending = []


def head(session: Session) -> tuple[int, str]:
    row = session.execute(
        select(TrailEventRow.seq, TrailEventRow.hash).order_by(TrailEventRow.seq.desc()).limit(1)
    ).first()
    return (row[0], row[1]) if row else (0, GENESIS)


def count(session: Session) -> int:
    return session.execute(select(func.count()).select_from(TrailEventRow)).scalar_one()


def iter_rows(session: Session, batch: int = 20_000) -> Iterator[tuple[int, str, str]]:
    """Every event as stored, ``(seq, canonical, hash)`` in seq order, streamed in batches (constant memory).

    Uses the DBAPI cursor directly: this feeds ``qms verify`` over millions of rows, where
    SQLAlchemy's row objects would cost as much as the hashing itself.
    """
    cols = ", ".join(TRAIL_COLUMNS)
    dbapi = session.connection().connection.dbapi_connection
    postgresql = session.get_bind().dialect.name == "postgresql"
    # a server-side cursor lives in a transaction: a read() session on PostgreSQL is in autocommit
    block = dbapi.transaction() if postgresql and dbapi.autocommit else nullcontext()
    with block:
        cursor = dbapi.cursor(name="qms_trail_verify") if postgresql else dbapi.cursor()  # server-side: streams
        try:
            cursor.execute(f"SELECT {cols} FROM trail_events ORDER BY seq")
            while True:
                rows = cursor.fetchmany(batch)
                if not rows:
                    return
                yield from rows
        finally:
            cursor.close()


def events_for(session: Session, record: str, limit: int = 200) -> list[TrailEvent]:
    rows = session.execute(
        select(TrailEventRow.seq, TrailEventRow.canonical, TrailEventRow.hash)
        .where(TrailEventRow.record == record)
        .order_by(TrailEventRow.seq)
        .limit(limit)
    ).all()
    return [parse_event(*row) for row in rows]
