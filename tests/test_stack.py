"""End to end: `qms up` starts the Prefect server and the runner, the due-scan deployment runs and
records into the store, Ctrl-C stops the runner, then the server.

One embedded stack for the whole module (a Prefect server cold start takes ~20 s).
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from stackutil import RunningStack, start_stack

from qmsflow.scaffold import scaffold
from qmsflow.store import trail
from qmsflow.store.db import Database
from qmsflow.store.tables import DocumentVersionRow, ProcessRunRow, RecordRow

pytestmark = [pytest.mark.prefect, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    base = tmp_path_factory.mktemp("stack")
    repo = base / "repo"
    scaffold(repo, org_name="Stack Test GmbH", git=True)
    elsewhere = base / "elsewhere"  # qms up must not depend on where it is started
    elsewhere.mkdir()
    s = start_stack(repo, cwd=elsewhere)
    try:
        yield s
    finally:
        s.kill()


def store(stack: RunningStack) -> Database:
    return Database(f"sqlite:///{stack.repo / '.qms' / 'qms.db'}")


def test_up_prints_the_urls_and_syncs_the_config(stack: RunningStack) -> None:
    printed = "\n".join(stack.lines)
    assert f"Prefect UI:  http://127.0.0.1:{stack.port}" in printed
    assert f"qmsflow web: {stack.web_url}" in printed
    assert "qms.yaml synced (34 change(s))" in printed
    db = store(stack)
    with db.read() as s:
        version = s.scalars(select(DocumentVersionRow).where(DocumentVersionRow.document_id == "SOP-DOC-001")).one()
    head = subprocess.run(
        ["git", "-C", str(stack.repo), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert version.git_commit == head  # the snapshot names the commit that holds the hashed content
    db.dispose()


def test_due_scan_deployment_runs_and_records(stack: RunningStack) -> None:
    done = stack.prefect("deployment", "run", "document-review-due-scan/daily", "--watch")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Completed" in done.stdout
    db = store(stack)
    with db.read() as s:
        runs = s.scalars(select(ProcessRunRow)).all()
        due = s.scalars(select(RecordRow).where(RecordRow.kind == "document-review-due")).all()
    assert [(r.process_key, r.state) for r in runs] == [("document-control", "COMPLETED")]
    # a fresh repo: no document approved yet, each due for approval since registered today (not overdue)
    assert (runs[0].summary["overdue"], runs[0].summary["due_soon"]) == (0, 10)
    assert len(due) == 10 and {r.process for r in due} == {"document-control"}
    db.dispose()


def test_deployment_schedule_comes_from_the_process_in_qms_yaml(stack: RunningStack) -> None:
    done = stack.prefect("deployment", "inspect", "document-review-due-scan/daily")
    assert done.returncode == 0, done.stderr
    assert "0 6 * * *" in done.stdout  # document-control: schedule daily
    assert "flows.document_review_scan.document_review_due_scan" in done.stdout  # module entrypoint


def test_the_hourly_anchor_deployment_anchors_the_head_and_commits_it(stack: RunningStack) -> None:
    done = stack.prefect("deployment", "run", "trail-anchor/hourly", "--watch")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Completed" in done.stdout
    db = store(stack)
    with db.read() as s:
        seq, digest = trail.head(s)
    db.dispose()
    anchors = (stack.repo / "records" / "trail-anchors.jsonl").read_text().splitlines()
    last = json.loads(anchors[-1])
    assert 0 < last["seq"] <= seq  # the head when the run anchored it (the run itself may add events later)
    log = subprocess.run(
        ["git", "-C", str(stack.repo), "log", "-1", "--format=%s", "--", "records/trail-anchors.jsonl"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert log == f"Anchor the audit trail at seq {last['seq']}"
    assert len(digest) == 64


def test_ctrl_c_stops_runner_then_server(stack: RunningStack) -> None:
    assert stack.stop() == 0
    order = [line for line in stack.lines if line.startswith("stopped ")]
    assert order == ["stopped web app", "stopped runner", "stopped Prefect server"]
    assert not (stack.repo / ".qms" / "stack.pid").exists()
    with socket.socket() as sock:  # nothing listens on the server's port any more
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", stack.port))


def test_killing_qms_up_takes_its_server_runner_and_web_app_with_it(tmp_path) -> None:  # noqa: ANN001
    """`qms up` killed by SIGKILL (no chance to clean up) must not leave a Prefect server holding the port."""
    import os
    import signal
    import time
    from pathlib import Path

    repo = tmp_path / "repo"
    scaffold(repo, org_name="Kill Test GmbH", git=True)
    s = start_stack(repo)
    try:
        children = Path(f"/proc/{s.proc.pid}/task/{s.proc.pid}/children").read_text().split()
        assert len(children) == 3  # Prefect server, runner, web app
        s.proc.send_signal(signal.SIGKILL)
        s.proc.wait(timeout=10)
        deadline = time.monotonic() + 30
        alive = children
        while alive and time.monotonic() < deadline:
            alive = [pid for pid in children if Path(f"/proc/{pid}").exists() and not _zombie(pid)]
            time.sleep(0.2)
        assert alive == [], f"children of a killed qms up still running: {alive}"
    finally:
        s.kill()
        for pid in children:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass


def _zombie(pid: str) -> bool:
    from pathlib import Path

    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return False
