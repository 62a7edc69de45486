"""The record tables the audit trail vouches for: each row's ref and state, the state check, the commit guard.

Every row of a tracked table has a ref (``record:CAPA-2026-0001``, ``document-version:SOP-DOC-001@1.2``,
…) and a state: its columns as JSON-ready data, except surrogate ids and declared operational
columns, with secrets only as a SHA-256. Every change of such a row is followed, in the same unit
of work, by a *state event* on its ref whose ``after`` is the new state (``null`` once deleted).

Two consumers:

- ``StateGuard`` (installed on every session of a ``Database``): a unit of work refuses to commit
  when a tracked row was inserted, changed or deleted without a matching full-state event, or when
  a state event does not hold its row's state; a session outside a unit of work may not change a
  tracked row at all (only operational columns). So no code path changes a record silently.
- ``check_states`` (``qms verify``): replays the trail (``domain.trail.verify_chain``) and checks
  that every table holds exactly the state the trail implies, field by field.

Signatures are the one table whose events are not on their own ref: an ``approval.signed`` event on
``approval:<request>`` holds the signature's state, and the row names that event (``trail_seq``).
"""

from __future__ import annotations

import hashlib
import json
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import cached_property
from typing import Any

from sqlalchemy import Boolean, Date, DateTime, Integer, event, inspect, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.types import JSON, TypeDecorator

from ..domain.errors import DomainError
from ..domain.trail import SIGNATURE, STATE, Replay, after_is, canonical_json, event_kind, fields_of
from .tables import (
    ApiTokenRow,
    ApprovalRequestRow,
    Base,
    ContentRow,
    DocumentRow,
    DocumentVersionRow,
    PersonRow,
    ProcessRow,
    RecordRow,
    SignatureRow,
    SubmissionRow,
    UserRow,
)

try:
    from _json import encode_basestring as _enc  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover
    from json.encoder import py_encode_basestring as _enc


class StateNotRecorded(DomainError):
    """A tracked row would change without a trail event holding its new state (a bug, not user error)."""


# ------------------------------------------------------------------ the registry


@dataclass(frozen=True)
class Tracked:
    """A record table whose every row the trail holds the state of."""

    model: type[Base]
    entity: str  # the ref's prefix: "record" in "record:CAPA-2026-0001"
    key: tuple[str, ...]  # the columns of the ref's key, joined by "@"
    exclude: frozenset[str] = frozenset()  # surrogate ids and operational columns
    secrets: frozenset[str] = frozenset()  # in the state only as "<name>_sha256"
    z_times: bool = False  # datetimes as pydantic writes them (…Z), for rows built from domain models
    # columns added after rows were first stored that no event can adopt (a signature never changes):
    # in the state only when not NULL, so older rows keep the state their events were hashed with
    optional: frozenset[str] = frozenset()

    @property
    def table(self) -> str:
        return self.model.__tablename__

    @cached_property
    def columns(self) -> list[Any]:
        return [c for c in self.model.__table__.columns if c.key not in self.exclude]

    @cached_property
    def _plan(self) -> list[tuple[str, str, bool]]:
        """(column, state key, is a secret) for each column of the state."""
        return [
            (c.key, f"{c.key}_sha256" if c.key in self.secrets else c.key, c.key in self.secrets) for c in self.columns
        ]

    def ref(self, get: Callable[[str], Any]) -> str:
        return f"{self.entity}:" + "@".join(str(get(k)) for k in self.key)

    def state(self, get: Callable[[str], Any]) -> dict[str, Any]:
        """The state of a row whose column values ``get`` returns (Python values, as the ORM holds them)."""
        out: dict[str, Any] = {}
        z_times = self.z_times
        optional = self.optional
        for name, key, secret in self._plan:
            value = get(name)
            if value is None and name in optional:
                continue
            if secret:
                value = _sha256(value)
            elif isinstance(value, date):  # datetime is a date too
                if isinstance(value, datetime):
                    value = _z(value) if z_times else value.isoformat()
                else:
                    value = value.isoformat()
            out[key] = value
        return out

    def lookup(self, session: Session, ref: str) -> Any:
        """The row a ref names, or None."""
        values = ref.partition(":")[2].split("@", len(self.key) - 1)
        if len(values) != len(self.key):
            return None
        conditions = []
        for name, value in zip(self.key, values, strict=True):
            column = self.model.__table__.columns[name]
            if isinstance(column.type, Integer):
                if not value.isdigit():
                    return None
                value = int(value)
            conditions.append(getattr(self.model, name) == value)
        with session.no_autoflush:
            return session.scalar(select(self.model).where(*conditions))


TRACKED: tuple[Tracked, ...] = (
    Tracked(PersonRow, "person", ("id",)),
    Tracked(ProcessRow, "process", ("key",)),
    Tracked(DocumentRow, "document", ("id",)),
    Tracked(DocumentVersionRow, "document-version", ("document_id", "version"), exclude=frozenset({"id"})),
    Tracked(ApprovalRequestRow, "approval", ("id",)),
    Tracked(RecordRow, "record", ("id",)),
    Tracked(UserRow, "user", ("username",), secrets=frozenset({"password_hash"})),
    Tracked(ApiTokenRow, "token", ("id",), exclude=frozenset({"last_used_at"}), secrets=frozenset({"token_hash"})),
    Tracked(SubmissionRow, "submission", ("id",)),
    # content under signature: the body in the state as its SHA-256 (which is also the row's key)
    Tracked(ContentRow, "content", ("sha256",), secrets=frozenset({"body"})),
)
# a signature's state is what its approval.signed event holds: the row minus its id and its links
SIGNATURES = Tracked(
    SignatureRow,
    "signature",
    ("trail_seq",),
    exclude=frozenset({"id", "request_id", "trail_seq"}),
    z_times=True,
    optional=frozenset({"account", "auth", "proof"}),  # since 0013 (domain.approvals.OPTIONAL_SIGNATURE_FIELDS)
)
BY_ENTITY = {t.entity: t for t in TRACKED}
BY_MODEL: dict[type, Tracked] = {t.model: t for t in (*TRACKED, SIGNATURES)}
BY_TABLE = {t.table: t for t in (*TRACKED, SIGNATURES)}
ENTITIES = frozenset(BY_ENTITY)


def _sha256(value: Any) -> str | None:
    if value is None:
        return None
    return hashlib.sha256(bytes(value) if isinstance(value, (bytes, memoryview)) else str(value).encode()).hexdigest()


def _z(value: datetime) -> str:
    value = value.astimezone(UTC)
    fraction = f".{value.microsecond:06d}" if value.microsecond else ""
    return value.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"


def ref_of(row: Base) -> str:
    spec = BY_MODEL[type(row)]
    return spec.ref(lambda k: getattr(row, k))


def state_of(row: Base) -> dict[str, Any]:
    """The full state of a tracked row, as its state event's ``after`` must hold it."""
    spec = BY_MODEL[type(row)]
    return spec.state(lambda k: getattr(row, k))


# ------------------------------------------------------------------ the commit guard

GUARD = "qms_state_guard"
_BY_CONNECTION: weakref.WeakKeyDictionary[Connection, StateGuard] = weakref.WeakKeyDictionary()


@dataclass
class StateGuard:
    """What one transaction changed in tracked tables, and the state events it recorded."""

    in_uow: bool
    flushing: bool = False
    bulk: bool = False
    connection: Connection | None = None
    changed: dict[int, Base] = field(default_factory=dict)  # id(row) -> row inserted or changed (ORM)
    deleted: dict[str, Tracked] = field(default_factory=dict)  # ref -> its table
    inserted: dict[str, tuple[Tracked, str]] = field(default_factory=dict)  # ref -> state JSON (insert_rows)
    signatures: list[tuple[str, int, str]] = field(default_factory=list)  # new: (request, trail_seq, state JSON)
    refused: list[str] = field(default_factory=list)  # changes that no event can make right
    events: dict[str, str] = field(default_factory=dict)  # ref -> after JSON of its last state event
    signed: dict[int, tuple[str, str]] = field(default_factory=dict)  # seq -> (ref, after JSON)
    checked: bool = False

    def reset(self) -> None:
        if self.connection is not None:
            _BY_CONNECTION.pop(self.connection, None)
        self.connection = None
        self.flushing = self.bulk = self.checked = False
        for collected in (self.changed, self.deleted, self.inserted, self.events, self.signed):
            collected.clear()
        self.signatures.clear()
        self.refused.clear()

    def recorded(self, seq: int, action: str, ref: str, after_json: str) -> None:
        """A trail event appended in this transaction."""
        kind = event_kind(action, ref.partition(":")[0], ENTITIES)
        if kind == STATE:
            self.events[ref] = after_json
        elif kind == SIGNATURE:
            self.signed[seq] = (ref, after_json)
        self.checked = False

    def bulk_inserted(self, model: type[Base], rows: list[dict[str, Any]]) -> None:
        """Rows ``UnitOfWork.insert_rows`` is about to insert with one Core statement."""
        spec = BY_MODEL[model]
        for values in rows:
            state = canonical_json(spec.state(values.get))
            if spec is SIGNATURES:
                self.signatures.append((values["request_id"], values["trail_seq"], state))
            else:
                self.inserted[spec.ref(values.get)] = (spec, state)
        self.checked = False

    def check(self, session: Session) -> None:
        """Refuse (``StateNotRecorded``) unless every tracked change has its full-state event, and back."""
        problems = list(self.refused)
        actual: dict[str, tuple[Tracked, str]] = {}
        signatures = list(self.signatures)
        for row in self.changed.values():
            if inspect(row).deleted or inspect(row).was_deleted:
                continue
            spec = BY_MODEL[type(row)]
            state = canonical_json(state_of(row))
            if spec is SIGNATURES:
                signatures.append((row.request_id, row.trail_seq, state))
            else:
                actual[ref_of(row)] = (spec, state)
        for ref, spec in self.deleted.items():
            actual[ref] = (spec, "null")
        actual.update(self.inserted)
        for ref in self.events.keys() - actual.keys():
            spec = BY_ENTITY[ref.partition(":")[0]]
            row = spec.lookup(session, ref)
            actual[ref] = (spec, "null" if row is None else canonical_json(state_of(row)))
        for ref, (spec, state) in actual.items():
            recorded = self.events.get(ref)
            label = f"{spec.table} {ref.partition(':')[2]}"
            if recorded is None:
                problems.append(f"{label} changed without a trail event holding its new state ({ref})")
            elif recorded != state and "null" in (recorded, state):
                said = "says it was deleted, but the row exists" if recorded == "null" else "holds a state, but no row"
                problems.append(f"{label}: its last trail event {said}")
            elif recorded != state:
                fields = ", ".join(p for p, _, _ in differences(json.loads(recorded), json.loads(state))[:5])
                problems.append(f"{label}: its last trail event does not hold the row's state (differs in {fields})")
        claimed: set[int] = set()
        for request_id, seq, state in signatures:
            signs = self.signed.get(seq)
            label = f"the signature on {request_id}"
            if signs is None:
                problems.append(f"{label}: seq {seq} is no approval.signed event of this unit of work")
            elif signs[0] != f"approval:{request_id}":
                problems.append(f"{label}: its event at seq {seq} signs {signs[0]}")
            elif signs[1] != state:
                problems.append(f"{label}: its event at seq {seq} holds another signature")
            claimed.add(seq)
        for seq in self.signed.keys() - claimed:
            problems.append(f"the approval.signed event at seq {seq} ({self.signed[seq][0]}) has no signature row")
        if problems:
            raise StateNotRecorded(
                "refusing to commit: "
                + "; ".join(problems[:5])
                + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
                + ". Every change of a record table needs uow.record(action, ref, before, state_of(row)) in the "
                "same unit of work; an event that only notes something is declared in qmsflow/domain/trail.py "
                "(NOTE_ACTIONS)."
            )
        self.checked = True


def guard_of(session: Session) -> StateGuard:
    guard = session.info.get(GUARD)
    if guard is None:
        guard = session.info[GUARD] = StateGuard(in_uow=False)
    return guard


def _state_columns_changed(row: Base, spec: Tracked) -> list[str]:
    """Columns of the row's state (all but operational ones) whose value really changed."""
    attrs = inspect(row).attrs
    changed = []
    for column in spec.model.__table__.columns:
        if column.key in spec.exclude and spec is not SIGNATURES:  # a signature's links are part of it
            continue
        history = attrs[column.key].history
        if history.added and (not history.deleted or history.added[0] != history.deleted[0]):
            changed.append(column.key)
    return changed


def _before_flush(session: Session, _context: Any, _instances: Any) -> None:
    guard = guard_of(session)
    guard.flushing = True
    touched = []
    for row in session.new:
        spec = BY_MODEL.get(type(row))
        if spec is not None:
            guard.changed[id(row)] = row
            touched.append(f"{spec.table} (new row)")
    for row in session.dirty:
        spec = BY_MODEL.get(type(row))
        if spec is not None and (columns := _state_columns_changed(row, spec)):
            touched.append(f"{spec.table} {ref_of(row)} ({', '.join(columns)})")
            if spec is SIGNATURES and id(row) not in guard.changed:
                guard.refused.append(f"signatures #{row.id}: a signature is never changed")
            guard.changed[id(row)] = row
    for row in session.deleted:
        spec = BY_MODEL.get(type(row))
        if spec is not None:
            guard.changed.pop(id(row), None)
            touched.append(f"{spec.table} {ref_of(row)} (deleted)")
            if spec is SIGNATURES:
                guard.refused.append(f"signatures #{row.id}: a signature is never deleted")
            else:
                guard.deleted[ref_of(row)] = spec
    if touched and not guard.in_uow:
        guard.flushing = False
        raise StateNotRecorded(
            f"refusing to change {', '.join(touched[:3])} outside a unit of work: record tables change only "
            "through UnitOfWork, with a trail event holding the new state"
        )


def _after_flush_postexec(session: Session, _context: Any) -> None:
    guard_of(session).flushing = False


def _after_begin(session: Session, _transaction: Any, connection: Connection) -> None:
    guard = guard_of(session)
    guard.connection = connection
    _BY_CONNECTION[connection] = guard


def _after_transaction_end(session: Session, transaction: Any) -> None:
    if transaction.parent is None:
        guard = session.info.get(GUARD)
        if guard is not None:
            guard.reset()


def _before_commit(session: Session) -> None:
    guard = session.info.get(GUARD)
    if guard is not None and guard.in_uow and not guard.checked:
        session.flush()
        guard.check(session)


def _before_execute(conn: Connection, statement: Any, *_args: Any) -> None:
    if not isinstance(statement, UpdateBase):
        return
    table = getattr(statement, "table", None)
    if getattr(table, "name", None) not in BY_TABLE:
        return
    guard = _BY_CONNECTION.get(conn)
    if guard is None or guard.flushing or guard.bulk:
        return  # not a session's connection (migrations, tools), or the ORM's own flush, or insert_rows
    raise StateNotRecorded(
        f"refusing a Core {statement.__visit_name__.upper()} on {table.name} in a session: change record rows "
        "through the ORM (or UnitOfWork.insert_rows) so that their state events can be checked"
    )


def install(sessions: Iterable[sessionmaker], engine: Engine) -> None:
    """Put the guard on every session the store makes, and on Core statements of their connections."""
    for maker in sessions:
        event.listen(maker, "before_flush", _before_flush)
        event.listen(maker, "after_flush_postexec", _after_flush_postexec)
        event.listen(maker, "after_begin", _after_begin)
        event.listen(maker, "after_transaction_end", _after_transaction_end)
        event.listen(maker, "before_commit", _before_commit)
    event.listen(engine, "before_execute", _before_execute)


# ------------------------------------------------------------------ comparing states


def differences(trail: Any, table: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """Field paths (``data.stages.root_cause.cause``) where two states differ, with both values."""
    if isinstance(trail, dict) and isinstance(table, dict):
        out = []
        for key in sorted(trail.keys() | table.keys()):
            sub = f"{path}.{key}" if path else key
            if key not in table:
                out.append((sub, trail[key], "<absent>"))
            elif key not in trail:
                out.append((sub, "<absent>", table[key]))
            else:
                out.extend(differences(trail[key], table[key], sub))
        return out
    if canonical_json(trail) != canonical_json(table):
        return [(path or "(state)", trail, table)]
    return []


def _show(value: Any) -> str:
    text = value if isinstance(value, str) and value == "<absent>" else canonical_json(value)
    return text if len(text) <= 80 else text[:77] + "…"


@dataclass(frozen=True)
class RowFormat:
    """How to read a tracked table raw (DBAPI values, no ORM) and write each row's state as canonical JSON."""

    select: str
    state: Callable[[tuple], str]  # raw row -> canonical JSON of its state
    ref: Callable[[tuple], str]
    width: int  # the state's columns come first in each raw row, then the ref's, then the extra ones


def row_format(spec: Tracked, dialect: str, present: set[str] | None = None, extra: tuple[str, ...] = ()) -> RowFormat:
    """Compile the state of a tracked table into one Python function per table (string formatting only).

    The state check turns every row of every record table into its canonical JSON, 130,000 rows in
    the large demo: a generated function that concatenates the sorted keys with each raw value
    already in JSON (strings through json's C encoder, JSON columns as stored, which is canonical
    JSON) costs a few microseconds a row, where building dictionaries and dumping them costs tens.
    ``present``: the columns the table has now (a migration may run before a later one adds some).
    """
    items = []
    json_keys = set()
    for column in spec.columns:
        if present is not None and column.key not in present:
            continue
        kind = column.type.impl if isinstance(column.type, TypeDecorator) else column.type
        name, sql, null = column.key, column.key, column.nullable
        if name in spec.secrets:
            items.append((f"{name}_sha256", sql, "_h({v})"))
        elif isinstance(kind, JSON):
            sql = f"CAST({name} AS TEXT)" if dialect == "postgresql" else name
            json_keys.add(name)
            items.append((name, sql, '("null" if {v} is None else {v})' if null else "{v}"))
        elif isinstance(kind, Boolean):
            items.append((name, sql, '("null" if {v} is None else "true" if {v} else "false")'))
        elif isinstance(kind, DateTime):
            items.append((name, sql, "_tz({v})" if spec.z_times else "_t({v})"))
        elif isinstance(kind, Date):
            items.append((name, sql, "_d({v})"))
        elif isinstance(kind, Integer):
            items.append((name, sql, '("null" if {v} is None else str({v}))'))
        else:
            items.append((name, sql, '("null" if {v} is None else _enc({v}))' if null else "_enc({v})"))
    items.sort()
    if spec.optional:
        # every item writes its own leading comma (an optional one nothing when NULL); the first is cut off
        parts = []
        for i, (key, sql, expr) in enumerate(items):
            value = expr.format(v=f"r[{i}]")
            if key in spec.optional:  # optional columns are no secrets: the state key is the column name
                absent = f"r[{i}] is None" + (f" or r[{i}] == 'null'" if key in json_keys else "")
                parts.append(f"('' if {absent} else {(',' + _enc(key) + ':')!r} + {value})")
            else:
                parts.append(f"{(',' + _enc(key) + ':')!r} + {value}")
        body = "'{' + (" + (" + ".join(parts) or "''") + ")[1:]"
    else:
        body = " + ".join(
            f"{(('{' if i == 0 else ',') + _enc(key) + ':')!r} + " + expr.format(v=f"r[{i}]")
            for i, (key, _, expr) in enumerate(items)
        )
    n = len(items)
    keys = " + '@' + ".join(f"str(r[{n + j}])" for j in range(len(spec.key)))
    source = (
        f"def state(r):\n    return {body or repr('{')} + '}}'\n"
        f"def ref(r):\n    return {spec.entity + ':'!r} + {keys}\n"
    )
    namespace: dict[str, Any] = {"_enc": _enc, "_h": _h, "_t": _t, "_tz": _tz, "_d": _d}
    exec(compile(source, f"<state of {spec.table}>", "exec"), namespace)  # noqa: S102 - our own source
    columns = [sql for _, sql, _ in items] + list(spec.key) + list(extra)
    return RowFormat(f"SELECT {', '.join(columns)} FROM {spec.table}", namespace["state"], namespace["ref"], n)


def _h(value: Any) -> str:
    return "null" if value is None else _enc(_sha256(value))


def _d(value: Any) -> str:
    if value is None:
        return "null"
    return '"' + value + '"' if value.__class__ is str else '"' + value.isoformat() + '"'


def _t(value: Any) -> str:
    """A stored UTC datetime as ``datetime.isoformat`` writes it (``…+00:00``, no fraction when zero)."""
    if value is None:
        return "null"
    if value.__class__ is str and len(value) == 26 and value[19] == ".":  # SQLite: 'YYYY-MM-DD HH:MM:SS.ffffff'
        return '"' + value[:10] + "T" + (value[11:19] if value[20:] == "000000" else value[11:]) + '+00:00"'
    return _enc(_utc(value).isoformat())


def _tz(value: Any) -> str:
    """A stored UTC datetime as pydantic writes it (``…Z``), for rows built from domain models."""
    if value is None:
        return "null"
    if value.__class__ is str and len(value) == 26 and value[19] == ".":
        return '"' + value[:10] + "T" + (value[11:19] if value[20:] == "000000" else value[11:]) + 'Z"'
    return _enc(_z(_utc(value)))


def _utc(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _table_states(session: Session, spec: Tracked, present: set[str] | None = None) -> Iterator[tuple[str, str, tuple]]:
    """(ref, state JSON, raw row) of every row of a tracked table."""
    form = row_format(spec, session.get_bind().dialect.name, present)
    state, ref = form.state, form.ref
    result = session.connection().exec_driver_sql(form.select)
    while rows := result.fetchmany(10_000):
        for raw in rows:
            yield ref(raw), state(raw), raw


@dataclass
class StateReport:
    rows: int = 0
    problems: list[str] = field(default_factory=list)
    total: int = 0  # problems found (only the first ``limit`` are kept)
    by_table: dict[str, int] = field(default_factory=dict)

    def add(self, message: str, limit: int) -> None:
        self.total += 1
        if len(self.problems) < limit:
            self.problems.append(message)


def check_states(session: Session, replay: Replay, limit: int = 200) -> StateReport:
    """Every tracked table holds exactly what the trail implies: reported by table, id and field."""
    report = StateReport()
    states = dict(replay.states)
    for spec in TRACKED:
        count = 0
        for ref, state, _raw in _table_states(session, spec):
            count += 1
            canonical = states.pop(ref, None)
            label = f"{spec.table} {ref.partition(':')[2]}"
            if canonical is None:
                report.add(f"{label}: the row has no trail history (it was not written through qmsflow)", limit)
                continue
            if after_is(canonical, state):
                continue
            _compare(report, label, canonical, state, limit)
        report.rows += count
        report.by_table[spec.table] = count
    for ref, canonical in states.items():
        spec = BY_ENTITY.get(ref.partition(":")[0])
        if spec is not None and not after_is(canonical, "null"):  # refs of no record table are no rows
            report.add(
                f"{spec.table} {ref.partition(':')[2]}: the trail says it exists (seq {_seq(canonical)}), "
                "the table has no such row",
                limit,
            )
    _check_signatures(session, replay, report, limit)
    return report


def _seq(canonical: str) -> int:
    return json.loads(canonical)["seq"]


def _compare(report: StateReport, label: str, canonical: str, state: str, limit: int) -> None:
    trail = json.loads(canonical)["after"]
    try:
        table = json.loads(state)
    except ValueError:
        report.add(f"{label}: a JSON column holds text that is not JSON", limit)
        return
    found = differences(trail, table)
    if not found:
        return  # the same state, written before JSON columns were stored in canonical form
    seq = _seq(canonical)
    for path, said, holds in found:
        report.add(
            f"{label} {path}: the trail says {_show(said)} (seq {seq}), the table holds {_show(holds)}",
            limit,
        )


def _check_signatures(session: Session, replay: Replay, report: StateReport, limit: int) -> None:
    """Each signature row matches its approval.signed event: signer, content, time, and the request it signs."""
    signed = dict(replay.signatures)
    spec = SIGNATURES
    form = row_format(spec, session.get_bind().dialect.name, extra=("id", "request_id"))
    result = session.connection().exec_driver_sql(form.select + " ORDER BY id")
    n = form.width
    count = 0
    while rows := result.fetchmany(10_000):
        for raw in rows:
            count += 1
            seq, sig_id, request_id = raw[n], raw[n + 1], raw[n + 2]
            label = f"signatures #{sig_id} (on {request_id})"
            canonical = signed.pop(seq, None)
            if canonical is None:
                report.add(f"{label}: trail_seq {seq} is not the approval.signed event of this signature", limit)
                continue
            signs = fields_of(canonical)[2]
            if signs != f"approval:{request_id}":
                report.add(
                    f"{label} request_id: the trail says {_enc(signs.partition(':')[2])} (seq {seq}), "
                    f"the table holds {_enc(request_id)}",
                    limit,
                )
            state = form.state(raw)
            if not after_is(canonical, state):
                _compare(report, label, canonical, state, limit)
    report.rows += count
    report.by_table[spec.table] = count
    for seq, canonical in signed.items():
        report.add(
            f"signatures: the trail says {fields_of(canonical)[1]} signed {fields_of(canonical)[2]} at seq {seq}, "
            "no signature row holds it",
            limit,
        )


# ------------------------------------------------------------------ adopting states (migrations)


def adopt(session: Session, actor: str) -> dict[str, int]:
    """Append a state event for every tracked row whose state the trail does not hold exactly.

    For migrations only, and only once for the change they make: 0008 adopts what older qmsflow
    wrote without full-state events; a migration that adds or changes a column of a tracked table
    calls this at its end, so that the new column's values are in the trail. Each adoption is an
    ``<entity>.state-adopted`` event (before: what the trail said; after: what the table holds), so
    an auditor sees exactly what was adopted and when. Nothing is adopted on a broken chain (verify
    reports it; adopting would hide what it says). Returns the count per table.
    """
    from sqlalchemy import inspect as inspect_db

    from ..domain.trail import verify_chain
    from .trail import TrailWriter, iter_rows

    report, replay = verify_chain(iter_rows(session))
    if not report.ok:
        return {}
    writer = TrailWriter(session)
    db_inspector = inspect_db(session.connection())
    counts: dict[str, int] = {}
    states = dict(replay.states)
    now = datetime.now(UTC)
    for spec in TRACKED:
        if not db_inspector.has_table(spec.table):
            continue
        present = {c["name"] for c in db_inspector.get_columns(spec.table)}
        for ref, state, _raw in _table_states(session, spec, present):
            canonical = states.pop(ref, None)
            if canonical is not None and after_is(canonical, state):
                continue
            table = json.loads(state)
            said = json.loads(canonical)["after"] if canonical is not None else None
            if canonical is not None and not differences(said, table):
                continue
            writer.append(actor, f"{spec.entity}.state-adopted", ref, said, table, now)
            counts[spec.table] = counts.get(spec.table, 0) + 1
    for ref, canonical in states.items():
        if not after_is(canonical, "null") and ref.partition(":")[0] in BY_ENTITY:
            spec = BY_ENTITY[ref.partition(":")[0]]
            writer.append(actor, f"{spec.entity}.state-adopted", ref, json.loads(canonical)["after"], None, now)
            counts[spec.table] = counts.get(spec.table, 0) + 1
    writer.flush()
    return counts
