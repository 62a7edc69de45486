"""Sign-in throttling and aggregated refusal notes, so that nobody can guess passwords at speed or grow
the audit trail without limit.

Keys are ``user:<name>`` (an account, known or not) and ``address:<client>`` (an IP address, or
``cli:<os user>`` for the command line). Per key and 10-minute window:

- at most ``MAX_FAILURES`` password checks may fail; an attempt is counted *before* the password is
  checked (and refunded if it was right), so parallel guesses cannot overshoot the limit;
- the 10th failure locks the key for ``LOCK``: every attempt is answered "too many attempts, retry
  after N s" before any password is checked, the right password included.

The trail gets, per existing account and window, one ``sign-in.failed`` event (its first failure),
one ``sign-in.locked`` when its lock engages and one ``sign-in.refused-while-locked`` at the 10th,
100th, 1000th ... refused attempt, on ``security:sign-in:<name>``. Failures for names that are no
account, locked addresses and refusals for a locked address are aggregated notes on
``security:sign-in`` (events at the 1st, 10th, 100th ... per window), so neither many names nor many
addresses grow the trail faster than O(log n) per window.

``note`` aggregates other unauthenticated refusals the same way (unknown or expired tokens, sign-in
forms without a valid CSRF token, ``--as`` outside trusted mode), each event carrying the count.

The table is operational (not a QMS record): rows are deleted once their window and lock are over.
Note events live on ``security:…`` refs, never on the ref of a record table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from ..domain.errors import DomainError
from ..store.db import Database
from ..store.tables import SignInThrottleRow
from ..store.uow import UnitOfWork

MAX_FAILURES = 10
WINDOW = timedelta(minutes=10)
LOCK = timedelta(minutes=10)
GLOBAL_REF = "security:sign-in"  # aggregated notes about unknown names and locked addresses
_UNKNOWN, _ADDRESS_LOCKED = "sign-in:unknown-user", "sign-in:address-locked"


class TooManyAttempts(DomainError):
    """Sign-in refused before any password check: the account or the client is locked for a while."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class Attempt:
    """A counted sign-in attempt, waiting for the outcome of its password check."""

    account: str  # the user name tried
    known: bool  # an account of that name exists
    address: str
    at: datetime
    numbers: dict[str, int] = field(default_factory=dict)

    @property
    def keys(self) -> tuple[str, str]:
        return (f"user:{self.account}", f"address:{self.address}")

    @property
    def account_key(self) -> str:
        return f"user:{self.account}"

    @property
    def ref(self) -> str:
        return f"security:sign-in:{self.account}"


def _now() -> datetime:
    return datetime.now(UTC)


def _milestone(count: int) -> bool:
    """1, 10, 100, 1000, ...: where an aggregated note is written."""
    while count >= 10 and count % 10 == 0:
        count //= 10
    return count == 1


def _rows(session: Session, keys: list[str], now: datetime) -> dict[str, SignInThrottleRow]:
    """Lock (PostgreSQL: FOR UPDATE; SQLite: the write transaction) and return the rows of ``keys``,
    created if missing, windows rolled over when over."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    keys = sorted(set(keys))  # one order for everyone: no deadlock between two attempts
    for key in keys:
        session.execute(
            insert(SignInThrottleRow.__table__)
            .values(key=key, window_start=now, failures=0, refused=0)
            .on_conflict_do_nothing(index_elements=["key"])
        )
    rows = {
        row.key: row
        for row in session.scalars(
            select(SignInThrottleRow)
            .where(SignInThrottleRow.key.in_(keys))
            .order_by(SignInThrottleRow.key)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    }
    for row in rows.values():
        lock_over = row.locked_until is not None and row.locked_until <= now
        window_over = row.locked_until is None and row.window_start + WINDOW <= now
        if lock_over or window_over:
            row.window_start, row.failures, row.refused, row.locked_until = now, 0, 0, None
    return rows


_CLEANUP_EVERY = timedelta(minutes=1)
_last_cleanup = [datetime.min.replace(tzinfo=UTC)]


def _cleanup(db: Database, now: datetime) -> None:
    """Delete rows whose window and lock are over, at most once a minute per process, in a transaction
    of its own that skips rows someone holds (so it never waits for, nor blocks, an attempt)."""
    if now - _last_cleanup[0] < _CLEANUP_EVERY:
        return
    _last_cleanup[0] = now
    stale = (
        select(SignInThrottleRow.key)
        .where(
            SignInThrottleRow.window_start < now - WINDOW,
            or_(SignInThrottleRow.locked_until.is_(None), SignInThrottleRow.locked_until < now),
        )
        .with_for_update(skip_locked=True)
    )
    with db.session() as session, session.begin():
        session.execute(delete(SignInThrottleRow).where(SignInThrottleRow.key.in_(stale)))


def _blocked_until(row: SignInThrottleRow, now: datetime) -> datetime | None:
    if row.locked_until is not None and row.locked_until > now:
        return row.locked_until
    if row.failures >= MAX_FAILURES:  # the last allowed attempts are still being checked
        return row.window_start + WINDOW
    return None


def reserve(db: Database, account: str, address: str, *, known: bool, actor: str, detail: dict[str, Any]) -> Attempt:
    """Count an attempt before its password is checked; ``TooManyAttempts`` when a key is locked."""
    attempt = Attempt(account, known, address, _now())
    now = attempt.at
    _cleanup(db, now)
    with UnitOfWork(db, actor) as uow:
        rows = _rows(uow.session, list(attempt.keys), now)
        blocked = {key: until for key, row in rows.items() if (until := _blocked_until(row, now)) is not None}
        if blocked:
            for key in blocked:
                rows[key].refused += 1
            refused = rows[attempt.account_key].refused
            locked = {"locked_until": _iso(blocked)}
            if known and attempt.account_key in blocked:
                if refused >= 10 and _milestone(refused):
                    uow.record(
                        "sign-in.refused-while-locked",
                        attempt.ref,
                        None,
                        {**detail, **locked, "refused_while_locked": refused},
                    )
            else:  # an unknown name or a locked address: one aggregated note for all of them
                _note(uow, "sign-in:refused", "sign-in.refused-while-locked", GLOBAL_REF, {**detail, **locked})
            uow.commit()
            until = max(blocked.values())
            retry = max(1, int((until - now).total_seconds()) + 1)
            raise TooManyAttempts(
                f"too many failed sign-ins: try again in {_human(retry)} (at {until:%H:%M:%S} UTC)", retry
            )
        for key, row in rows.items():
            row.failures += 1
            attempt.numbers[key] = row.failures
        uow.commit()
    return attempt


def failed(db: Database, attempt: Attempt, *, actor: str, detail: dict[str, Any]) -> None:
    """The password check failed: keep the count, lock keys at the limit, note milestones in the trail.

    Events: for an existing account, ``sign-in.failed`` at its first failure of a window and
    ``sign-in.locked`` when its lock engages (on ``security:sign-in:<name>``); unknown names and
    address locks are aggregated notes on ``security:sign-in``, so neither many names nor many
    addresses make the trail grow faster than O(log n) per window.
    """
    now = _now()
    with UnitOfWork(db, actor) as uow:
        # every row this may touch is locked at once, in one order, before any trail event (which takes
        # the trail lock): no two transactions can wait for each other
        rows = _rows(uow.session, [*attempt.keys, f"note:{_UNKNOWN}", f"note:{_ADDRESS_LOCKED}"], now)
        notes = {key: rows.pop(key) for key in (f"note:{_UNKNOWN}", f"note:{_ADDRESS_LOCKED}")}
        locked = {}
        for key, row in rows.items():
            if row.failures >= MAX_FAILURES and row.locked_until is None:
                row.locked_until = now + LOCK
                locked[key] = row.locked_until
        about = {**detail, "failures": {k: r.failures for k, r in rows.items()}, "locked_until": _iso(locked)}
        recorded = False
        if attempt.known and attempt.account_key in locked:
            uow.record("sign-in.locked", attempt.ref, None, about)
            recorded = True
        elif attempt.known and attempt.numbers.get(attempt.account_key) == 1:
            uow.record("sign-in.failed", attempt.ref, None, about)
            recorded = True
        elif not attempt.known:
            _count(uow, notes[f"note:{_UNKNOWN}"], "sign-in.failed-unknown-user", GLOBAL_REF, about)
        if locked and not recorded:
            _count(uow, notes[f"note:{_ADDRESS_LOCKED}"], "sign-in.address-locked", GLOBAL_REF, about)
        uow.commit()


def succeeded(db: Database, attempt: Attempt) -> None:
    """The password was right: refund the attempt; the account starts afresh."""
    now = _now()
    with db.session() as session, session.begin():
        rows = _rows(session, list(attempt.keys), now)
        for key, row in rows.items():
            if key == attempt.account_key and row.locked_until is None:
                row.failures, row.refused = 0, 0
            elif row.window_start <= attempt.at:  # still the attempt's window
                row.failures = max(0, row.failures - 1)


def refund(db: Database, attempt: Attempt) -> None:
    """The password was not checked at all (too busy): the attempt does not count."""
    now = _now()
    with db.session() as session, session.begin():
        for row in _rows(session, list(attempt.keys), now).values():
            if row.window_start <= attempt.at:
                row.failures = max(0, row.failures - 1)


def _note(uow: UnitOfWork, key: str, action: str, ref: str, detail: dict[str, Any]) -> None:
    """Count one occurrence under ``note:<key>``; call it after every other throttle row is locked."""
    _count(uow, _rows(uow.session, [f"note:{key}"], uow.now())[f"note:{key}"], action, ref, detail)


def _count(uow: UnitOfWork, row: SignInThrottleRow, action: str, ref: str, detail: dict[str, Any]) -> None:
    row.refused += 1
    if _milestone(row.refused):
        uow.record(
            action, ref, None, {**detail, "count_in_window": row.refused, "window_start": row.window_start.isoformat()}
        )


def note(db: Database, key: str, *, actor: str, action: str, ref: str, detail: dict[str, Any]) -> None:
    """Record an unauthenticated refusal, aggregated: events at the 1st, 10th, 100th ... per key and window."""
    _cleanup(db, _now())
    with UnitOfWork(db, actor) as uow:
        _note(uow, key, action, ref, detail)
        uow.commit()


def state(db: Database, key: str) -> SignInThrottleRow | None:
    """The throttle row of a key, as stored (tests and diagnostics)."""
    with db.read() as session:
        return session.get(SignInThrottleRow, key)


def clear(db: Database, key: str) -> None:
    """End a lock early (an admin resetting an account's password)."""
    with db.session() as session, session.begin():
        session.execute(delete(SignInThrottleRow).where(SignInThrottleRow.key == key))


def _iso(values: dict[str, datetime]) -> dict[str, str]:
    return {k: v.isoformat() for k, v in values.items()}


def _human(seconds: int) -> str:
    if seconds < 90:
        return f"{seconds} s"
    return f"{(seconds + 59) // 60} minutes"
