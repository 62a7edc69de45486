"""Every input is checked at the edge against the limits of its column (qmsflow/domain/limits.py):
the same refusal on SQLite and PostgreSQL, one clear line, nothing stored. The inputs of issue 11."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import identityutil
import pytest
from sqlalchemy import func, select

from qmsflow.cli.main import run
from qmsflow.context import open_context
from qmsflow.domain import limits
from qmsflow.domain.approvals import Decision
from qmsflow.services import approvals, capa
from qmsflow.services.sync import sync_config
from qmsflow.store import UnitOfWork
from qmsflow.store.tables import RecordRow

QMS = str(Path(sys.executable).parent / "qms")


@pytest.fixture
def store(repo: Path, db_url: str, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """The scaffolded repo, synced, on SQLite and on PostgreSQL."""
    monkeypatch.setenv("QMS_DATABASE_URL", db_url)
    monkeypatch.delenv("QMS_CONFIG", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    ctx = open_context(repo / "qms.yaml", migrate=True)
    with UnitOfWork(ctx.db, "qmsflow") as uow:
        sync_config(uow, ctx.config, ctx.root)
        uow.commit()
    yield ctx
    ctx.close()


@pytest.fixture
def qms(capsys: pytest.CaptureFixture):  # noqa: ANN201
    def call(*args: str) -> tuple[int, str, str]:
        code = run(list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return call


def records(ctx) -> int:  # noqa: ANN001
    with ctx.db.read() as session:
        # the AI systems' lifecycle records (kind ai-system) come from qms sync, not from the commands tested
        return session.scalar(select(func.count()).select_from(RecordRow).where(RecordRow.kind != "ai-system"))


def open_args(cfg: str, title: str) -> list[str]:
    return ["capa", "open", "-c", cfg, "--title", title, "--source", "audit", "--owner", "dev"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["records", "list", "--limit", "99999999999999999999"],
            "'--limit': Input should be less than or equal to 10000",
        ),
        (["records", "list", "--limit", "0"], "'--limit': Input should be greater than or equal to 1"),
        (["trail", "show", "--limit", "-5"], "'--limit': Input should be greater than or equal to 1"),
        (["capa", "list", "--limit", "10001"], "'--limit': Input should be less than or equal to 10000"),
        (["document", "scan", "--window", "99999999999"], "'--window': Input should be less than or equal to 3660"),
        (["token", "revoke", "99999999999999999999"], "'token_id': Input should be less than or equal to 2147483647"),
        (["up", "--port", "70000"], "'--port': Input should be less than or equal to 65535"),
    ],
)
def test_numbers_out_of_range_are_usage_errors(qms, store, args: list[str], expected: str) -> None:  # noqa: ANN001
    code, out, err = qms(*args, "-c", str(store.loaded.path))
    assert code == 2, out + err
    assert expected in " ".join(err.split()) and "Traceback" not in err


def test_a_title_longer_than_its_column_is_refused_on_both_stores(qms, store, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("QMS_TOKEN", identityutil.token(store.db, "ana"))
    cfg = str(store.loaded.path)
    code, out, err = qms(*open_args(cfg, "T" * 100_000))
    assert code == 2 and "100,000 characters long, at most 500 allowed" in " ".join(err.split())
    assert "internal error" not in err and "INSERT" not in err and records(store) == 0
    code, out, err = qms(*open_args(cfg, "T" * limits.RECORD_TITLE))  # exactly the column: stored on both
    assert code == 0, err
    with store.db.read() as session:
        assert len(session.scalars(select(RecordRow.title).where(RecordRow.kind == "capa")).one()) == 500


def test_the_service_refuses_what_the_column_cannot_hold(store) -> None:  # noqa: ANN001
    for title, problem in (
        ("T" * 501, "title: 501 characters long, at most 500 allowed"),
        ("Leak\x00ed", "title: contains the control character U+0000 at character 5"),
        ("two\nlines", "title: contains the control character U+000A at character 4"),
        ("   ", "a CAPA needs a title"),
    ):
        with (
            UnitOfWork(store.db, "ana") as uow,
            pytest.raises(limits.InvalidInput if "title:" in problem else Exception) as caught,
        ):
            capa.open_capa(uow, store.config, title=title, source="audit", owner="dev")
        assert problem in str(caught.value)
    with UnitOfWork(store.db, "ana") as uow, pytest.raises(limits.InvalidInput, match="description: 20,001 characters"):
        capa.open_capa(uow, store.config, title="ok", source="audit", owner="dev", description="d" * 20_001)
    assert records(store) == 0


def test_stage_data_is_bounded(qms, store, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("QMS_TOKEN", identityutil.token(store.db, "ana"))
    cfg = str(store.loaded.path)
    assert qms(*open_args(cfg, "Label drift"))[0] == 0
    with store.db.read() as session:
        capa_id = session.scalars(select(RecordRow.id).where(RecordRow.kind == "capa")).one()
    deep = "[" * 100_000 + "]" * 100_000
    code, _, err = qms("capa", "advance", capa_id, "-c", cfg, "--to", "containment", "-f", f"correction={deep}")
    assert code == 2 and "--field correction: JSON nested deeper than 8 levels" in err
    code, _, err = qms(
        "capa", "advance", capa_id, "-c", cfg, "--to", "containment", "-f", "correction=" + "[" * 9 + "]" * 9
    )
    assert code == 1 and "nested deeper than 8 levels" in err
    code, _, err = qms("capa", "advance", capa_id, "-c", cfg, "--to", "containment", "-f", 'correction="a\\u0000b"')
    assert code == 1 and "fields.correction: contains the control character U+0000" in err
    with store.db.read() as session:
        assert session.get(RecordRow, capa_id).status == "opened"


def test_a_comment_with_a_nul_is_refused_before_the_store_sees_it(store) -> None:  # noqa: ANN001
    with UnitOfWork(store.db, "chloe") as uow:
        row, _ = approvals.open_request(
            uow,
            store.config,
            key="k",
            subject="document-version:SOP-DES-001@1.0",
            title="t",
            content_sha256="ab" * 32,
            approvers=["ben"],
            meaning="m",
            author="chloe",
        )
        uow.commit()
        request_id = row.id
    with UnitOfWork(store.db, "ben") as uow, pytest.raises(limits.InvalidInput, match="comment: contains the control"):
        identityutil.sign(uow, store.config, request_id, "ben", Decision.REJECT, "no\x00")


def test_non_utf8_arguments_are_named(qms, store) -> None:  # noqa: ANN001
    cfg = str(store.loaded.path)
    title = b"Caf\xe9 label drift".decode("utf-8", "surrogateescape")  # what Python makes of a Latin-1 argv
    code, out, err = qms(*open_args(cfg, title))
    assert code == 2
    assert "argument 6 (Caf\\xe9 label drift) is not valid UTF-8 (byte 0xe9 at character 4)" in " ".join(err.split())
    assert records(store) == 0


def test_non_utf8_arguments_through_the_real_console_script(repo: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QMS_", "PREFECT_"))}
    done = subprocess.run(
        [QMS, "capa", "open", "-c", str(repo / "qms.yaml"), "--title", b"Caf\xe9", "--source", "audit"],
        capture_output=True,
        env={**env, "COLUMNS": "200"},
        timeout=120,
    )
    assert done.returncode == 2
    assert b"is not valid UTF-8 (byte 0xe9 at character 4)" in done.stderr and b"Traceback" not in done.stderr


def test_an_over_long_actor_is_refused(qms, store, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    cfg = str(store.loaded.path)
    code, _, err = qms("sync", "-c", cfg, "--as", "a" * 201)
    assert code == 2 and "201 characters long, at most 200 allowed" in " ".join(err.split())
    monkeypatch.setenv("QMS_ACTOR", "b" * 201)
    code, _, err = qms("sync", "-c", cfg)
    assert code == 2 and "the actor (QMS_ACTOR): 201 characters long" in err


def test_a_yaml_bomb_is_one_error_line_from_the_cli(qms, repo: Path) -> None:  # noqa: ANN001
    cfg = repo / "qms.yaml"
    levels = ["l0: &l0 [" + ", ".join(["x"] * 10) + "]"]
    levels += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 10)]
    cfg.write_text(cfg.read_text() + "\n".join(levels) + "\n")
    code, out, err = qms("check", "-c", str(cfg))
    assert code == 2 and "expands to more than 250,000 values through aliases" in err
    assert err.startswith("error: qms.yaml:") and "Traceback" not in err
