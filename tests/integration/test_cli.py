"""The qms command line: happy paths, and errors as one clear message (never a trace)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from qmsflow.cli.main import run
from qmsflow.store.db import head_revision


@pytest.fixture
def qms(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    monkeypatch.delenv("QMS_DATABASE_URL", raising=False)
    monkeypatch.delenv("QMS_CONFIG", raising=False)
    monkeypatch.setenv("COLUMNS", "200")

    def call(*args: str) -> tuple[int, str, str]:
        code = run(list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return call


def test_help_lists_every_command(qms) -> None:  # noqa: ANN001
    code, out, _ = qms("--help")
    assert code == 0
    for command in (
        "init",
        "check",
        "db",
        "sync",
        "verify",
        "anchor",
        "status",
        "up",
        "demo",
        "records",
        "document",
        "trail",
    ):
        assert command in out


def test_init_check_sync_verify_anchor_status(qms, tmp_path: Path) -> None:  # noqa: ANN001
    repo = tmp_path / "qms-repo"
    code, out, _ = qms("init", str(repo), "--org", "Acme AI", "--no-git")
    assert code == 0 and "Scaffolded 16 files" in out
    body = (repo / "procedures" / "SOP-CAPA-001-corrective-action.md").read_text()
    assert body.startswith("# SOP-CAPA-001 {{qms:doc.title}}")  # filled from qms.yaml in every copy
    for section in ("Purpose", "Scope", "Roles", "Procedure", "Records kept", "Art. 17(1)"):
        assert section in body
    assert "{{qms:org.name}}" in body and "Acme AI" not in body  # never frozen into the file
    cfg = str(repo / "qms.yaml")
    code, out, _ = qms("check", "-c", cfg)
    assert code == 0 and "aspects assigned to a process: 13/13" in out
    code, out, _ = qms("init", str(repo), "--no-git")
    assert code == 1
    code, out, _ = qms("sync", "-c", cfg, "--as", "qmsflow")
    assert code == 0 and "38 change(s) recorded" in out
    code, out, _ = qms("sync", "-c", cfg)
    assert "already in sync" in out
    code, out, _ = qms("document", "scan", "-c", cfg)
    assert code == 0 and "11 document(s) due for review" in out
    code, out, _ = qms(
        "verify", "-c", cfg
    )  # init started the trail (seq 1), recorded the anchors file (store.anchored) and anchored it
    assert code == 0 and "OK: 51 events verified" in out and "record states: 49 rows in 11 tables match" in out
    assert "anchors checked: 1" in out
    code, out, _ = qms("anchor", "-c", cfg)
    assert code == 0 and "anchored seq 51" in out and "is not a git repo" in out
    assert (repo / "records" / "trail-anchors.jsonl").read_text().count("\n") == 2
    code, out, _ = qms("verify", "-c", cfg)
    assert "anchors checked: 2" in out
    code, out, _ = qms("status", "-c", cfg)
    assert code == 0 and "document-control" in out and "Ana Alves" in out
    code, out, _ = qms("records", "list", "-c", cfg, "--kind", "document-review-due")
    assert code == 0 and "DRD-" in out
    code, out, _ = qms("trail", "show", "-c", cfg, "--actor", "qmsflow", "--limit", "3")
    assert code == 0 and "document-review-due.created" in out


def test_bad_config_is_one_clear_error(qms, repo: Path) -> None:  # noqa: ANN001
    text = (repo / "qms.yaml").read_text().replace("    owner: ben\n", "    owner: quality-team\n", 1)
    (repo / "qms.yaml").write_text(text)
    code, out, err = qms("check", "-c", str(repo / "qms.yaml"))
    assert code == 2
    assert "qms.yaml:55 processes[0].owner: 'quality-team' is not a person (people: ana, ben, chloe, dev)" in err
    assert "Traceback" not in err + out


def test_unmigrated_store_says_what_to_run(qms, repo: Path) -> None:  # noqa: ANN001
    code, _, err = qms("verify", "-c", str(repo / "qms.yaml"))
    assert code == 1 and "run 'qms db upgrade'" in err
    code, out, _ = qms("db", "upgrade", "-c", str(repo / "qms.yaml"))
    assert code == 0 and f"schema none → {head_revision()}" in out


def test_unreachable_database_is_a_clear_error(qms, repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("QMS_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    code, _, err = qms("db", "upgrade", "-c", str(repo / "qms.yaml"))
    assert code == 1 and "cannot open the records store at postgresql+psycopg://nobody@127.0.0.1:1/none" in err
    monkeypatch.setenv("QMS_DATABASE_URL", "not a url")
    code, _, err = qms("status", "-c", str(repo / "qms.yaml"))
    assert code == 1 and "is not a database URL" in err


def test_verify_exits_1_and_names_the_seq_after_tampering(qms, repo: Path) -> None:  # noqa: ANN001
    cfg = str(repo / "qms.yaml")
    qms("sync", "-c", cfg)
    import sqlite3

    conn = sqlite3.connect(repo / ".qms" / "qms.db")
    conn.execute("DROP TRIGGER trail_events_no_update")
    conn.execute(
        'UPDATE trail_events SET canonical = replace(canonical, \'"actor":"\', \'"actor":"eve-\') WHERE seq = 7'
    )
    conn.commit()
    conn.close()
    code, out, err = qms("verify", "-c", cfg)
    assert code == 1
    assert "BROKEN at seq 7: content changed" in err
    assert "the first 6 events verify" in err


def test_retention_refusal_via_cli(qms, repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    cfg = str(repo / "qms.yaml")
    qms("sync", "-c", cfg)
    from identityutil import token

    from qmsflow.store.db import Database

    monkeypatch.setenv("QMS_TOKEN", token(Database(f"sqlite:///{repo / '.qms' / 'qms.db'}"), "dev", role="viewer"))
    code, _, err = qms("document", "delete-version", "SOP-DOC-001", "1.0", "-c", cfg)
    assert code == 1 and "must be kept" in err
    code, out, _ = qms("trail", "show", "-c", cfg, "--actor", "dev")
    assert "document-version.delete-refused" in out
    code, _, err = qms("records", "delete", "CAPA-2026-9999", "-c", cfg)
    assert code == 1 and "no record CAPA-2026-9999" in err


def test_usage_error_is_not_a_trace(qms) -> None:  # noqa: ANN001
    code, out, err = qms("verify", "--no-such-flag")
    assert code == 2 and "No such option" in err and "Traceback" not in err


def test_console_script_runs(tmp_path: Path) -> None:
    qms_bin = Path(sys.executable).parent / "qms"
    done = subprocess.run(
        [str(qms_bin), "check"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert done.returncode == 2
    assert "no qms.yaml found" in done.stderr and "Traceback" not in done.stderr


def test_first_admin_then_login_and_a_ci_token_on_a_fresh_repo(
    qms, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    import io

    cfg = str(repo / "qms.yaml")
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    code, _, err = qms("user", "add", "ana", "--person", "ana", "--role", "admin", "--password-stdin", "-c", cfg)
    assert code == 1 and "at least 12 characters" in err
    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-password-123\n"))
    code, out, err = qms("user", "add", "ana", "--person", "ana", "--role", "admin", "--password-stdin", "-c", cfg)
    assert code == 0, err
    assert "first admin ana created" in out
    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-password-123\n"))
    code, out, err = qms("token", "create", "--user", "ana", "--name", "ci", "--password-stdin", "-c", cfg)
    assert code == 0, err
    assert out.strip().startswith("qms_") and "valid until" in err
    code, _, err = qms("token", "create", "ben", "-c", cfg)  # a token for someone else: no such usage
    assert code == 2 and "unexpected extra argument" in err.lower()


def test_identifiers_are_printed_whole_in_a_narrow_terminal(qms, repo: Path) -> None:  # noqa: ANN001
    """The id column is what people copy into the next command: narrow tables wrap titles, never ids."""
    import os
    import re

    cfg = str(repo / "qms.yaml")
    assert qms("sync", "-c", cfg)[0] == 0
    assert qms("document", "scan", "-c", cfg)[0] == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QMS_", "PREFECT_"))}
    listed = subprocess.run(
        [str(Path(sys.executable).parent / "qms"), "records", "list", "-c", cfg],
        env={**env, "COLUMNS": "50"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    ids = re.findall(r"^│ (\S+)", listed.stdout, flags=re.M)
    assert len([i for i in ids if re.fullmatch(r"DRD-\d{4}-\d{4}", i)]) == 11, listed.stdout


def test_a_dropped_trigger_fails_verify_and_db_upgrade_or_any_start_reinstalls_it(qms, repo: Path) -> None:  # noqa: ANN001
    import sqlite3

    cfg = str(repo / "qms.yaml")
    qms("sync", "-c", cfg)
    conn = sqlite3.connect(repo / ".qms" / "qms.db")
    conn.execute("DROP TRIGGER trail_events_append_at_head")
    conn.commit()
    code, _, err = qms("verify", "-c", cfg)
    assert code == 1
    assert "TRIGGER append-only trigger trail_events_append_at_head is missing (run 'qms db upgrade'" in err
    code, out, err = qms("db", "upgrade", "-c", cfg)
    assert code == 0 and "schema already at" in out
    assert "append-only trigger trail_events_append_at_head is missing: reinstalled, and recorded" in err
    code, out, err = qms("verify", "-c", cfg)
    assert code == 0 and "append-only triggers were found missing and reinstalled" in err
    conn.execute("DROP TRIGGER trail_events_no_delete")
    conn.commit()
    conn.close()
    from qmsflow.context import open_context

    with open_context(cfg, migrate=True) as ctx:  # what `qms up` opens and then prints
        assert ctx.repaired_guards == ["append-only trigger trail_events_no_delete is missing"]


def test_submit_with_the_stack_down_says_so_and_never_tries_a_default_port(
    qms, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    """Issue 10: with no `qms up` running, the submission is kept and the user is told, no 127.0.0.1:4200."""
    from identityutil import token

    from qmsflow.scaffold import scaffold
    from qmsflow.store.db import Database

    repo = tmp_path / "repo"
    scaffold(repo, org_name="Down GmbH", git=True)
    cfg = str(repo / "qms.yaml")
    code, _, err = qms("sync", "-c", cfg)
    assert code == 0, err
    db = Database(f"sqlite:///{repo / '.qms' / 'qms.db'}")
    monkeypatch.setenv("QMS_TOKEN", token(db, "ana", role="admin"))
    db.dispose()
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    (repo / ".qms" / "stack.json").write_text('{"api_url": "http://127.0.0.1:1/api", "pid": 999999999}')  # stale
    code, out, err = qms("document", "submit", "SOP-DOC-001", "-c", cfg)
    assert code == 1, out + err
    assert "recorded, but its review did not start: the stack is not running (start it with 'qms up')" in err
    assert "4200" not in err and "Traceback" not in err
