"""Engine, sessions and migrations of the records store.

SQLite by default (``.qms/qms.db`` in the compliance repo), PostgreSQL via ``QMS_DATABASE_URL``.
On SQLite every write transaction starts with ``BEGIN IMMEDIATE`` so that two writers never
read the same trail head; on PostgreSQL the trail takes a transaction-scoped advisory lock.

Least privilege on PostgreSQL: with ``QMS_MIGRATE_DATABASE_URL`` (the owner of the schema) set,
migrations run as that owner and then grant the application's role (the user of
``QMS_DATABASE_URL``) what it needs and no more (``APP_GRANTS``): it may read every table, write
the record tables, and only INSERT into ``trail_events``. Not owning the tables, it cannot drop or
disable the trail's triggers; not being a superuser, it cannot set ``session_replication_role``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from ..domain.trail import canonical_json
from . import state

MIGRATIONS = Path(__file__).parent / "migrations"
APPEND_ONLY = ("trail_events", "verifications")  # the app role may only SELECT and INSERT here
READ_ONLY = ("alembic_version",)  # the schema version: the owner's

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


def migrate_url() -> str | None:
    """``QMS_MIGRATE_DATABASE_URL``: the schema owner's URL, used only to migrate and grant."""
    return os.environ.get("QMS_MIGRATE_DATABASE_URL") or None


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
        # reads on PostgreSQL in autocommit: under READ COMMITTED every statement takes its own snapshot
        # anyway, so a transaction around a read adds only its BEGIN and ROLLBACK round trips (the guard
        # still checks every flush; snapshot() asks for REPEATABLE READ where one view matters)
        readers = {"qms_readonly": True} | ({} if self.is_sqlite else {"isolation_level": "AUTOCOMMIT"})
        self._readers = sessionmaker(self.engine.execution_options(**readers))
        # JSON columns hold canonical JSON, so the state check compares them as stored
        state.install((self._sessions, self._readers), self.engine)
        # the signing key of this process for this store (services.sealing.Sealer), set by open_context:
        # signatures are sealed with it (ADR 0018); a store opened without its compliance repo signs nothing
        self.sealer: Any = None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def session(self) -> Session:
        return self._sessions()

    @contextmanager
    def read(self, within: Session | None = None) -> Iterator[Session]:
        """A read-only session (no write lock on SQLite); ``within``, when given, is used instead, so a
        page that shows several read models reads them in one session (one connection checkout, with
        its pool's liveness ping, instead of one per read model)."""
        if within is not None:
            yield within
            return
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

    def vacuum_analyze(self) -> bool:
        """After a bulk load or a restore, PostgreSQL's ``VACUUM (ANALYZE)`` of the store's tables: the
        planner's statistics, and the visibility map without which the partial indexes on open records
        cannot answer alone (an index-only scan fetched every heap row: the overview's open-record count
        took 6-13 ms instead of 1.5 ms on the ten-year demo). Autovacuum gets there eventually; this does
        it now. True when it ran; SQLite keeps no statistics unless asked, and its plans here need none.
        A role that does not own the tables gets PostgreSQL's warning and nothing is done."""
        if self.dialect != "postgresql":
            return False
        from .tables import Base

        names = ", ".join(self.engine.dialect.identifier_preparer.quote(t.name) for t in Base.metadata.sorted_tables)
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f"VACUUM (ANALYZE) {names}"))  # VACUUM cannot run in a transaction
        return True

    def upgrade(self, owner_url: str | None = None) -> tuple[str | None, str]:
        """Migrate to the newest schema. Returns (revision before, revision after).

        On PostgreSQL with an owner URL (default ``QMS_MIGRATE_DATABASE_URL``), the owner migrates
        and then grants this database's role its privileges (``grant_app_role``).
        """
        owner_url = owner_url or migrate_url()
        if owner_url and not self.is_sqlite:
            owner = Database(owner_url)
            try:
                if owner.role == self.role:
                    return owner._upgrade()
                owner._same_store_as(self)
                result = owner._upgrade()
                owner.grant_app_role(self.role)
                return result
            finally:
                owner.dispose()
        return self._upgrade()

    def _upgrade(self) -> tuple[str | None, str]:
        before = self.current_revision()
        try:
            from alembic import command

            with self.engine.begin() as conn:
                cfg = self._alembic()
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        except OperationalError as exc:
            raise StoreError(f"cannot migrate the records store at {self.safe_url}: {exc.orig}") from None
        except ProgrammingError as exc:
            if getattr(exc.orig, "sqlstate", None) not in ("42501", "3F000"):  # no privilege, no usable schema
                raise
            raise StoreError(
                f"the role of {self.safe_url} may not change the schema ({str(exc.orig).splitlines()[0]}): "
                "migrate as the schema owner (set QMS_MIGRATE_DATABASE_URL, see README 'Running in production')"
            ) from None
        return before, self.head_revision()

    @property
    def role(self) -> str | None:
        return make_url(self.url).username

    def _same_store_as(self, other: Database) -> None:
        mine, theirs = make_url(self.url), make_url(other.url)
        if (mine.host, mine.port, mine.database, mine.query) != (
            theirs.host,
            theirs.port,
            theirs.database,
            theirs.query,
        ):
            raise StoreError(
                f"QMS_MIGRATE_DATABASE_URL ({self.safe_url}) and QMS_DATABASE_URL ({other.safe_url}) must name the "
                "same database (host, port, database and options); only the user may differ"
            )

    def grant_app_role(self, role: str | None) -> list[str]:
        """Grant ``role`` what the application needs on this (owner's) schema, and no more. Idempotent.

        Every table: SELECT, INSERT, UPDATE, DELETE; ``trail_events``: SELECT and INSERT only;
        ``alembic_version``: SELECT; sequences: USAGE and SELECT. Never TRUNCATE, REFERENCES, TRIGGER
        or ownership. Returns the statements run.
        """
        if self.is_sqlite:
            raise StoreError("roles and grants exist on PostgreSQL only; a SQLite store is one file")
        if not role:
            raise StoreError("name the role to grant (the user of QMS_DATABASE_URL)")
        with self.engine.begin() as conn:
            quote = conn.dialect.identifier_preparer.quote
            schema = conn.execute(text("SELECT current_schema()")).scalar()
            if schema is None:
                raise StoreError(f"{self.safe_url} has no schema to grant on (check its search_path)")
            if not conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).scalar():
                raise StoreError(f"there is no PostgreSQL role {role!r}: create it first (CREATE ROLE … LOGIN)")
            s, r = quote(schema), quote(role)
            statements = [
                f"GRANT USAGE ON SCHEMA {s} TO {r}",
                f"REVOKE ALL ON ALL TABLES IN SCHEMA {s} FROM {r}",
                f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {s} TO {r}",
                *(f"REVOKE UPDATE, DELETE ON {s}.{quote(t)} FROM {r}" for t in APPEND_ONLY),
                *(f"REVOKE INSERT, UPDATE, DELETE ON {s}.{quote(t)} FROM {r}" for t in READ_ONLY),
                f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {s} TO {r}",
            ]
            for statement in statements:
                conn.exec_driver_sql(statement)
        return statements

    def privilege_warnings(self) -> list[str]:
        """What is wrong with the role this store is used with, for an append-only trail (PostgreSQL)."""
        if self.is_sqlite:
            return []
        with self.engine.connect() as conn:
            superuser = conn.execute(text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")).scalar()
            owner = conn.execute(
                text(
                    "SELECT pg_has_role(current_user, c.relowner, 'USAGE') FROM pg_class c "
                    "WHERE c.oid = to_regclass('trail_events')"
                )
            ).scalar()
        warnings = []
        if superuser:
            warnings.append(
                f"{self.safe_url} connects as a superuser, who can switch the trail's append-only triggers off "
                "(session_replication_role); run qmsflow as a role without superuser (README 'Running in production')"
            )
        elif owner:
            warnings.append(
                f"{self.safe_url} connects as the owner of trail_events, who can drop its triggers; migrate as the "
                "owner (QMS_MIGRATE_DATABASE_URL) and run qmsflow as another role (README 'Running in production')"
            )
        return warnings

    def repair_guards(self, actor: str = "qmsflow", owner_url: str | None = None) -> list[str]:
        """Reinstall every append-only trigger that is missing, disabled or altered, and trail that it did.

        Returns what was repaired (empty when every guard is in place). Run by ``qms db upgrade`` and
        by everything that migrates on start (``qms up``). On PostgreSQL with an owner URL (default
        ``QMS_MIGRATE_DATABASE_URL``) the owner reinstalls them: the app role has no right to.
        """
        from sqlalchemy.exc import DBAPIError

        from . import guards
        from .uow import UnitOfWork

        owner_url = owner_url or migrate_url()
        owner = Database(owner_url) if owner_url and not self.is_sqlite else self
        try:
            with owner.engine.begin() as conn:
                repaired = [str(problem) for problem in guards.ensure(conn)]
        except DBAPIError as exc:
            raise StoreError(
                f"cannot reinstall the audit trail's append-only triggers at {self.safe_url}: {exc.orig} "
                "(run 'qms db upgrade' as the role that owns the schema, or set QMS_MIGRATE_DATABASE_URL)"
            ) from None
        finally:
            if owner is not self:
                owner.dispose()
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
