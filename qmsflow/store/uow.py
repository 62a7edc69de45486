"""Unit of work: one transaction in which record changes and their trail events commit together."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from ..domain.trail import TrailEvent
from .db import Database
from .trail import TRAIL_LOCK_KEY, TrailWriter


class UnitOfWork:
    """``with UnitOfWork(db, actor="ana") as uow: ...; uow.commit()``.

    Leaving the block without ``commit()`` rolls back: the change and its trail events
    together, never one without the other.

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
        self.session = self.db.session()
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
        self, action: str, ref: str, before: Any, after: Any, actor: str | None = None, at: datetime | None = None
    ) -> TrailEvent:
        """Append a trail event for a change made in this unit of work."""
        return self.trail.append(actor or self.actor, action, ref, before, after, at)

    def commit(self) -> None:
        self.session.flush()
        self.trail.flush()
        self.session.commit()
        self._begin()

    def rollback(self) -> None:
        self.session.rollback()
        self._begin()

    @staticmethod
    def now() -> datetime:
        return datetime.now(UTC)
