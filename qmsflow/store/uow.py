"""Unit of work: one transaction in which record changes and their trail events commit together."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.orm import Session

from ..domain.trail import TrailEvent
from .db import Database
from .state import GUARD, StateGuard
from .tables import Base
from .trail import TRAIL_LOCK_KEY, TrailWriter


class UnitOfWork:
    """``with UnitOfWork(db, actor="ana") as uow: ...; uow.commit()``.

    Leaving the block without ``commit()`` rolls back: the change and its trail events
    together, never one without the other. ``commit()`` refuses (``StateNotRecorded``) when a
    row of a record table changed without a trail event holding its new state
    (qmsflow/store/state.py).

    Every transaction of a unit of work is a writer and is serialised with every other writer from
    its first statement: SQLite's ``BEGIN IMMEDIATE``, and on PostgreSQL the trail's advisory lock,
    taken when the transaction begins. So what a use case reads (a request and its signatures, a
    CAPA's stage) cannot change before it commits, under READ COMMITTED as under SQLite, and one
    lock taken first by everyone cannot deadlock with row locks taken later.
    """

    def __init__(self, db: Database, actor: str):
        if not actor:
            raise ValueError("a unit of work needs an actor (person id or system component)")
        self.db = db
        self.actor = actor
        self.session: Session
        self.trail: TrailWriter

    def __enter__(self) -> UnitOfWork:
        self._after_commit: list[Callable[[], None]] = []
        self.session = self.db.session()
        self.guard = self.session.info[GUARD] = StateGuard(in_uow=True)
        self.trail = TrailWriter(self.session)
        self._begin()
        return self

    def _begin(self) -> None:
        self.session.begin()
        self.trail.reset()
        if self.db.dialect == "postgresql":
            self.session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": TRAIL_LOCK_KEY})

    def __exit__(self, *exc: object) -> None:
        if self.session.in_transaction():
            self.session.rollback()
        self.session.close()

    def record(
        self,
        action: str,
        ref: str,
        before: Any,
        after: Any,
        actor: str | None = None,
        at: datetime | None = None,
        seal: Callable[[bytes], dict[str, Any]] | None = None,
    ) -> TrailEvent:
        """Append a trail event for a change made in this unit of work.

        On a row of a record table, ``after`` is the row's full new state (``state_of(row)``, or
        ``None`` for a deletion), unless the action is a declared note (domain/trail.py). ``seal``
        adds a signing key's proof over the event (``TrailWriter.append``).
        """
        event = self.trail.append(actor or self.actor, action, ref, before, after, at, seal)
        self.guard.recorded(event.seq, action, ref, event.after_json)
        return event

    def insert_rows(self, model: type[Base], rows: list[dict[str, Any]]) -> None:
        """Insert many rows with one Core statement (bulk loads); each still needs its state event."""
        if not rows:
            return
        self.guard.bulk_inserted(model, rows)
        self.guard.bulk = True
        try:
            self.session.connection().execute(insert(model.__table__), rows)
        finally:
            self.guard.bulk = False

    def after_commit(self, action: Callable[[], None]) -> None:
        """Run ``action`` once the current transaction has committed (dropped if it rolls back): for what
        must follow a committed change outside the database, such as a line in a git-witnessed file."""
        self._after_commit.append(action)

    def commit(self) -> None:
        self.session.flush()
        self.guard.check(self.session)
        self.trail.flush()
        self.session.commit()
        pending, self._after_commit = self._after_commit, []
        try:
            for action in pending:  # before the next transaction takes the writers' lock again
                action()
        finally:
            self._begin()

    def rollback(self) -> None:
        self.session.rollback()
        self._after_commit = []
        self._begin()

    def release(self) -> None:
        """End the transaction, which has only read so far, and hold no lock: for slow work outside the
        database (rendering a PDF) that must not hold back every writer. Objects read before are expired;
        take what is needed as plain values first. Call ``rollback()`` before reading what a later write
        depends on: it begins a new transaction that holds the writers' lock again."""
        self.session.rollback()
        self._after_commit = []

    @staticmethod
    def now() -> datetime:
        return datetime.now(UTC)
