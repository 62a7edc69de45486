"""PostgreSQL least privilege (issue 11 point 6), on the CI PostgreSQL: the schema owner migrates and
grants; qmsflow runs as an application role that can do its real work but cannot touch the trail's
history or its protection. The attacks of the issue are the tests.

Roles are cluster-wide and others test against the same server: every role name carries a random
suffix, and the roles are dropped afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import PG_URL, require_pg

from qmsflow.cli.main import run
from qmsflow.context import QmsContext, open_context
from qmsflow.services import capa
from qmsflow.services.sync import sync_config
from qmsflow.services.verify import verify
from qmsflow.store import UnitOfWork
from qmsflow.store.db import Database, StoreError


@dataclass
class Roles:
    owner: str
    app: str
    schema: str

    def url(self, role: str) -> str:
        base = PG_URL.replace("postgresql://postgres@", f"postgresql://{role}@", 1)
        assert base != PG_URL or role == "postgres", "QMS_TEST_PG_URL must connect as postgres@ for this test"
        sep = "&" if "?" in base else "?"
        return f"{base}{sep}options={quote(f'-csearch_path={self.schema}')}"


@pytest.fixture
def roles() -> Iterator[Roles]:
    require_pg()
    import psycopg

    suffix = uuid.uuid4().hex[:10]
    made = Roles(owner=f"qms_owner_{suffix}", app=f"qms_app_{suffix}", schema=f"qms_lp_{suffix}")
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{made.owner}" LOGIN NOSUPERUSER')
        conn.execute(f'CREATE ROLE "{made.app}" LOGIN NOSUPERUSER')
        conn.execute(f'CREATE SCHEMA "{made.schema}" AUTHORIZATION "{made.owner}"')
    yield made
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        for role in (made.app, made.owner):  # end any connection a failed test left open
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
        conn.execute(f'DROP SCHEMA "{made.schema}" CASCADE')
        for role in (made.app, made.owner):
            conn.execute(f'DROP OWNED BY "{role}"')
            conn.execute(f'DROP ROLE "{role}"')


@pytest.fixture
def app_ctx(roles: Roles, repo: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[QmsContext]:
    """The compliance repo opened as the app role; the first open migrates as the owner and grants."""
    monkeypatch.setenv("QMS_DATABASE_URL", roles.url(roles.app))
    monkeypatch.setenv("QMS_MIGRATE_DATABASE_URL", roles.url(roles.owner))
    ctx = open_context(repo / "qms.yaml", migrate=True)
    yield ctx
    ctx.close()


def as_app(roles: Roles, statement: str) -> Exception | None:
    """Run one statement as the app role, alone in its transaction; the error, or None if it worked."""
    import psycopg

    with psycopg.connect(roles.url(roles.app), autocommit=True) as conn:
        try:
            conn.execute(statement)
        except psycopg.Error as exc:
            return exc
    return None


def test_the_app_role_does_real_work(app_ctx: QmsContext, roles: Roles) -> None:
    assert app_ctx.db.role == roles.app
    with UnitOfWork(app_ctx.db, "qmsflow") as uow:
        sync_config(uow, app_ctx.config, app_ctx.root)  # inserts people, processes, documents, versions
        uow.commit()
    with UnitOfWork(app_ctx.db, "ana") as uow:
        row = capa.open_capa(uow, app_ctx.config, title="Label drift", source="audit", owner="dev")
        uow.commit()
        capa_id = row.id
    with UnitOfWork(app_ctx.db, "dev") as uow:  # an UPDATE of a record table, with its trail event
        capa.advance(uow, app_ctx.config, capa_id, "containment", {"correction": "Labels re-checked"})
        uow.commit()
    result = verify(app_ctx.db, None)
    assert result.ok and result.report.count > 30
    assert app_ctx.db.privilege_warnings() == []


@pytest.mark.parametrize(
    "attack",
    [
        "UPDATE trail_events SET canonical = replace(canonical, 'qmsflow', 'mallory') WHERE seq = 1",
        "DELETE FROM trail_events WHERE seq = 1",
        "TRUNCATE trail_events",
        "ALTER TABLE trail_events DISABLE TRIGGER ALL",
        "ALTER TABLE trail_events DISABLE TRIGGER trail_events_no_update_delete",
        "DROP TRIGGER trail_events_no_update_delete ON trail_events",
        "DROP TRIGGER trail_events_no_truncate ON trail_events",
        "SET session_replication_role = replica",
        "DROP TABLE trail_events",
        "ALTER TABLE trail_events OWNER TO CURRENT_USER",
        "CREATE OR REPLACE FUNCTION qms_trail_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN OLD; END $$",
        "DROP FUNCTION qms_trail_append_only() CASCADE",
        "UPDATE alembic_version SET version_num = '0001'",
        "CREATE TABLE sneaky (x int)",
    ],
)
def test_the_app_role_cannot_rewrite_the_trail_or_switch_off_its_protection(
    app_ctx: QmsContext, roles: Roles, attack: str
) -> None:
    with UnitOfWork(app_ctx.db, "qmsflow") as uow:
        sync_config(uow, app_ctx.config, app_ctx.root)
        uow.commit()
    error = as_app(roles, attack)
    assert error is not None, f"the app role could run: {attack}"
    assert getattr(error, "sqlstate", None) == "42501" or "must be owner" in str(error), (attack, error)
    assert verify(app_ctx.db, None).ok


def test_the_owner_keeps_the_triggers_and_the_superuser_bypass_is_what_the_issue_found(
    app_ctx: QmsContext, roles: Roles
) -> None:
    """Control: a superuser session can bypass the triggers (hence: never run qmsflow as one)."""
    import psycopg

    with UnitOfWork(app_ctx.db, "qmsflow") as uow:
        sync_config(uow, app_ctx.config, app_ctx.root)
        uow.commit()
    with psycopg.connect(roles.url("postgres"), autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # works for a superuser …
        with conn.transaction():
            conn.execute("UPDATE trail_events SET canonical = replace(canonical, 'qmsflow', 'mallory') WHERE seq = 1")
            raise_rollback = psycopg.Rollback()
            raise raise_rollback
    superuser = Database(roles.url("postgres"))
    try:
        assert "superuser" in superuser.privilege_warnings()[0]
    finally:
        superuser.dispose()


def test_migrating_as_the_app_role_says_how_to_do_it(roles: Roles, repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = Database(roles.url(roles.app))
    try:
        with pytest.raises(StoreError, match="migrate as the schema owner .*QMS_MIGRATE_DATABASE_URL"):
            app.upgrade()
    finally:
        app.dispose()


def test_owner_and_app_urls_must_name_the_same_database(roles: Roles) -> None:
    app = Database(roles.url(roles.app))
    other = roles.url(roles.owner).replace(roles.schema, "public")
    try:
        with pytest.raises(StoreError, match="must name the same database"):
            app.upgrade(owner_url=other)
    finally:
        app.dispose()


def test_cli_upgrade_and_grant(roles: Roles, repo: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # noqa: ANN001
    cfg = str(repo / "qms.yaml")
    monkeypatch.setenv("QMS_DATABASE_URL", roles.url(roles.app))
    monkeypatch.setenv("QMS_MIGRATE_DATABASE_URL", roles.url(roles.owner))
    monkeypatch.setenv("COLUMNS", "300")
    assert run(["db", "upgrade", "-c", cfg]) == 0
    out = capsys.readouterr()
    assert f"migrated as {roles.owner}; granted {roles.app}" in out.out and "warning" not in out.err
    assert run(["sync", "-c", cfg]) == 0  # the app role writes
    capsys.readouterr()
    assert run(["db", "grant", "no_such_role_" + uuid.uuid4().hex[:6], "-c", cfg]) == 1
    assert "there is no PostgreSQL role" in capsys.readouterr().err
    assert run(["db", "grant", roles.app, "-c", cfg]) == 0  # idempotent
    assert as_app(roles, "DELETE FROM trail_events") is not None
    assert (
        as_app(roles, f"INSERT INTO id_counters (prefix, year, last) VALUES ('ZZ', {datetime.now(UTC).year}, 1)")
        is None
    )


def test_the_stack_children_never_get_the_owners_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from qmsflow.stack import prefect_env

    monkeypatch.setenv("QMS_MIGRATE_DATABASE_URL", "postgresql://qms_owner@db/qms")
    monkeypatch.setenv("QMS_DATABASE_URL", "postgresql://qms_app@db/qms")
    env = prefect_env(tmp_path, "http://127.0.0.1:4200/api", tmp_path / "qms.yaml")
    assert "QMS_MIGRATE_DATABASE_URL" not in env and env["QMS_DATABASE_URL"] == "postgresql://qms_app@db/qms"


def test_an_app_role_without_grants_gets_a_clear_error(roles: Roles, repo: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    owner = Database(roles.url(roles.owner))
    try:
        owner.upgrade()  # migrated, but nothing granted to the app role
        import psycopg

        with psycopg.connect(roles.url(roles.owner), autocommit=True) as conn:
            conn.execute(f'GRANT USAGE ON SCHEMA "{roles.schema}" TO "{roles.app}"')
            conn.execute(f'GRANT SELECT ON alembic_version TO "{roles.app}"')
    finally:
        owner.dispose()
    monkeypatch.setenv("QMS_DATABASE_URL", roles.url(roles.app))
    monkeypatch.delenv("QMS_MIGRATE_DATABASE_URL", raising=False)
    assert run(["status", "-c", str(repo / "qms.yaml")]) == 1
    err = capsys.readouterr().err
    assert "permission denied for table" in err and "qms db grant ROLE" in err and "internal error" not in err
