"""Shared fixtures: scaffolded compliance repos, SQLite and PostgreSQL stores.

PostgreSQL: QMS_TEST_PG_URL (default postgresql://postgres@127.0.0.1:5432/test). Each test gets
its own schema. When CI is set, an unreachable PostgreSQL fails the tests instead of skipping them.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# never read or write the developer's own 'qms login' credentials, nor act with their token
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="qms-test-config-")
for _name in ("QMS_TOKEN", "QMS_ACTOR"):
    os.environ.pop(_name, None)

from qmsflow.context import QmsContext, open_context  # noqa: E402
from qmsflow.scaffold import scaffold  # noqa: E402
from qmsflow.store.db import Database  # noqa: E402

PG_URL = os.environ.get("QMS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")

# Tests of the generic approvals machinery sign requests on ``test-step:…`` subjects: this reaction
# records nothing, so those tests do not depend on any procedure (document review, CAPA).
TEST_SUBJECT = "test-step:T-1@1"
DECIDED: list[tuple[str, str]] = []


def _test_reaction(uow, config, request, signature) -> None:  # noqa: ANN001
    DECIDED.append((request.id, request.status))


from qmsflow.services.reactions import on_decided  # noqa: E402

on_decided("test-step")(_test_reaction)


def pg_available() -> str | None:
    """None if PostgreSQL answers, else the reason."""
    import psycopg

    try:
        with psycopg.connect(PG_URL, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001
        return f"{exc.__class__.__name__}: {exc}"
    return None


def require_pg() -> None:
    reason = pg_available()
    if reason is None:
        return
    message = f"PostgreSQL at {PG_URL} is not reachable ({reason})"
    if os.environ.get("CI"):
        pytest.fail(message + " — CI is set, so this is a failure, not a skip")
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _own_credentials_folder(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test keeps 'qms login' credentials in a folder of its own."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))


@pytest.fixture(autouse=True)
def signing_key_file(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's signing processes hold one signing key, given to them as in production
    (QMS_SIGNING_KEY_FILE); tests of the embedded default (a key made in .qms/) unset it."""
    from qmsflow.adapters import keys

    path = tmp_path_factory.mktemp("signing-key") / "signing-key.pem"
    keys.generate(path)
    monkeypatch.setenv("QMS_SIGNING_KEY_FILE", str(path))
    return path


@pytest.fixture
def pg_schema_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    require_pg()
    import psycopg

    schema = f"qms_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{sep}options={quote(f'-csearch_path={schema}')}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'qms.db'}"
    return request.getfixturevalue("pg_schema_url")


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    database.upgrade()
    yield database
    database.dispose()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A scaffolded compliance repo (no git) in tmp_path/repo."""
    target = tmp_path / "repo"
    scaffold(target, org_name="Test AI GmbH", git=False)
    return target


@pytest.fixture
def ctx(repo: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[QmsContext]:
    """The scaffolded repo opened with a migrated SQLite store."""
    monkeypatch.delenv("QMS_DATABASE_URL", raising=False)
    context = open_context(repo / "qms.yaml", migrate=True)
    yield context
    context.close()


@pytest.fixture
def pg_ctx(repo: Path, pg_schema_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[QmsContext]:
    monkeypatch.setenv("QMS_DATABASE_URL", pg_schema_url)
    context = open_context(repo / "qms.yaml", migrate=True)
    yield context
    context.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def synced_ctx(request: pytest.FixtureRequest, repo: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[QmsContext]:
    """The scaffolded repo, synced, on SQLite or (via QMS_DATABASE_URL) a fresh PostgreSQL schema: CLI
    commands run in-process see the same store."""
    from qmsflow.services.sync import sync_config
    from qmsflow.store.uow import UnitOfWork

    monkeypatch.delenv("QMS_DATABASE_URL", raising=False)
    monkeypatch.delenv("QMS_CONFIG", raising=False)
    if request.param == "postgresql":
        monkeypatch.setenv("QMS_DATABASE_URL", request.getfixturevalue("pg_schema_url"))
    context = open_context(repo / "qms.yaml", migrate=True)
    with UnitOfWork(context.db, "qmsflow") as uow:
        sync_config(uow, context.config, context.root)
        uow.commit()
    yield context
    context.close()


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """Prefect's own test harness, once per session: a temporary Prefect server (its own SQLite database)
    that flows called in-process report to. Yields its API URL; started only by tests that ask for it."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield PREFECT_API_URL.value()


@pytest.fixture(params=["sqlite", "postgresql"])
def jira_ctx(request: pytest.FixtureRequest, repo: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple]:
    """The scaffolded repo with Jira switched on against a fake Jira server, synced; (context, fake)."""
    from fakes.jira import FakeJira

    from qmsflow.services.sync import sync_config
    from qmsflow.store.uow import UnitOfWork

    for var in ("SLACK_BOT_TOKEN", "QMS_DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)
    if request.param == "postgresql":
        monkeypatch.setenv("QMS_DATABASE_URL", request.getfixturevalue("pg_schema_url"))
    with FakeJira() as fake:
        text = (repo / "qms.yaml").read_text()
        block = f"integrations:\n  jira:\n    url: '{fake.url}'\n    project: QMS\n"
        (repo / "qms.yaml").write_text(text.replace("retention:", block + "retention:", 1))
        monkeypatch.setenv("JIRA_EMAIL", fake.email)
        monkeypatch.setenv("JIRA_API_TOKEN", "jira-token")
        ctx = open_context(repo / "qms.yaml", migrate=True)
        with UnitOfWork(ctx.db, "qmsflow") as uow:
            sync_config(uow, ctx.config, ctx.root)
            uow.commit()
        yield ctx, fake
        ctx.close()
