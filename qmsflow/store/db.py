"""Engine, sessions and migrations of the records store.

SQLite by default (``.qms/qms.db`` in the compliance repo), PostgreSQL via ``QMS_DATABASE_URL``.
On SQLite every write transaction starts with ``BEGIN IMMEDIATE`` so that two writers never
read the same trail head; on PostgreSQL the trail takes a transaction-scoped advisory lock.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ..domain.trail import canonical_json
from . import state

MIGRATIONS = Path(__file__).parent / "migrations"
GUARDS_REINSTALLED = "store.guards-reinstalled"


def head_revision() -> str:
    """The newest migration: revisions form one line, each naming the one before (``down_revision``)."""
    import re

    revisions, parents = set(), set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        source = path.read_text(encoding="utf-8")
        found = re.search(r'^revision = "([^"]+)"', source, re.M)
        parent = re.search(r'^down_revision = "([^"]+)"', source, re.M)
        if found:
            revisions.add(found.group(1))
        if parent:
            parents.add(parent.group(1))
    heads = sorted(revisions - parents)
    if len(heads) != 1:
        raise RuntimeError(f"the migrations must have exactly one head, found {heads}")
    return heads[0]


class StoreError(Exception):
    """The records store cannot be reached or is not usable; the message says why."""


def default_url(state_dir: Path) -> str:
    return f"sqlite:///{(state_dir / 'qms.db').as_posix()}"


def resolve_url(state_dir: Path | None) -> str:
    url = os.environ.get("QMS_DATABASE_URL")
    if url:
        return url
    if state_dir is None:
        raise StoreError("no records store: set QMS_DATABASE_URL or run inside a compliance repo")
    return default_url(state_dir)


def _normalise(url: str) -> str:
    """``postgresql://`` means psycopg 3 here (the driver qmsflow installs)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(f"QMS_DATABASE_URL {url!r} is not a database URL (e.g. postgresql://user@host/db)") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


class Database:
    def __init__(self, url: str, echo: bool = False):
        self.url = _normalise(url)
        self.is_sqlite = self.url.startswith("sqlite")
        if self.is_sqlite:
            path = make_url(self.url).database
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(
                self.url, echo=echo, connect_args={"timeout": 60}, json_serializer=canonical_json
            )
            _sqlite_pragmas(self.engine)
        else:
            self.engine = create_engine(self.url, echo=echo, pool_pre_ping=True, json_serializer=canonical_json)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._readers = sessionmaker(self.engine.execution_options(qms_readonly=True))
        # JSON columns hold canonical JSON, so the state check compares them as stored
        state.install((self._sessions, self._readers), self.engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def session(self) -> Session:
        return self._sessions()

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only session (no write lock on SQLite)."""
        with self._readers() as session:
            yield session

    @contextmanager
    def snapshot(self) -> Iterator[Session]:
        """A read-only session whose every query sees the same committed state, whatever commits meanwhile.

        ``qms verify`` compares the trail with the tables in several queries while the stack keeps
        writing: on PostgreSQL (READ COMMITTED by default) a change committed between two of them would
        look like tampering. SQLite's read transaction is such a snapshot already (WAL).
        """
        with self._readers() as session:
            if not self.is_sqlite:
                session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
                session.execute(text("SET TRANSACTION READ ONLY"))
            yield session

    # ------------------------------------------------------------ migrations

    def _alembic(self):  # noqa: ANN202 - alembic is imported only to migrate (it is slow to import)
        from alembic.config import Config as AlembicConfig

        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        return cfg

    def upgrade(self) -> tuple[str | None, str]:
        """Migrate to the newest schema. Returns (revision before, revision after)."""
        before = self.current_revision()
        try:
            from alembic import command

            with self.engine.begin() as conn:
                cfg = self._alembic()
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except OperationalError as exc:
            raise StoreError(f"cannot migrate the records store at {self.safe_url}: {exc.orig}") from None
        return before, self.head_revision()

    def repair_guards(self, actor: str = "qmsflow") -> list[str]:
        """Reinstall every append-only trigger that is missing, disabled or altered, and trail that it did.

        Returns what was repaired (empty when every guard is in place). Run by ``qms db upgrade`` and
        by everything that migrates on start (``qms up``).
        """
        from sqlalchemy.exc import DBAPIError

        from . import guards
        from .uow import UnitOfWork

        try:
            with self.engine.begin() as conn:
                repaired = [str(problem) for problem in guards.ensure(conn)]
        except DBAPIError as exc:
            raise StoreError(
                f"cannot reinstall the audit trail's append-only triggers at {self.safe_url}: {exc.orig} "
                "(run 'qms db upgrade' as the role that owns the schema)"
            ) from None
        if repaired:
            with UnitOfWork(self, actor) as uow:
                uow.record(GUARDS_REINSTALLED, "store:trail", None, {"reinstalled": repaired, "dialect": self.dialect})
                uow.commit()
        return repaired

    def current_revision(self) -> str | None:
        """The schema revision recorded by Alembic (read with plain SQL: no alembic import needed)."""
        try:
            with self.engine.connect() as conn:
                if not inspect(conn).has_table("alembic_version"):
                    return None
                return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except OperationalError as exc:
            raise StoreError(f"cannot open the records store at {self.safe_url}: {exc.orig}") from None

    def head_revision(self) -> str:
        return head_revision()

    def require_current(self) -> None:
        current, head = self.current_revision(), self.head_revision()
        if current != head:
            raise StoreError(
                f"the records store at {self.safe_url} is at schema {current or 'none'}, "
                f"this qmsflow needs {head}: run 'qms db upgrade'"
            )

    @property
    def safe_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # noqa: ANN001
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # noqa: ANN001
        if conn.get_execution_options().get("qms_readonly"):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
