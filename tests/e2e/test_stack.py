"""End to end: `qms up` starts the Prefect server and the runner, the due-scan deployment runs and
records into the store; a child that dies is restarted while the others serve; SIGINT and SIGTERM stop
everything within 15 s, also in the background, during start-up and under a CPU hog.

One shared stack for the tests that only use it (a Prefect server cold start takes ~20 s); the tests
that stop a stack start their own, so no test depends on another's order.
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from stackutil import QMS, RunningStack, free_port, start_stack

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
    assert "qms.yaml synced (38 change(s))" in printed
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
    assert (runs[0].summary["overdue"], runs[0].summary["due_soon"]) == (0, 11)
    assert len(due) == 11 and {r.process for r in due} == {"document-control"}
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


def test_a_killed_runner_or_web_app_is_restarted_while_the_rest_keeps_serving(stack: RunningStack) -> None:
    """kill -9 of the runner: the web app (and so Slack) keeps answering, the runner comes back with backoff,
    `qms status` shows the restart; then the same for the web app."""
    import os
    import signal
    import time

    import httpx

    def pid_of(name: str) -> int:
        return stack.state()["children"][name]["pid"]

    runner = pid_of("runner")
    os.kill(runner, signal.SIGKILL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # the web app answers all along the runner's restart
        assert httpx.get(f"{stack.web_url}/health", timeout=10).status_code == 200
        state = stack.state()["children"]["runner"]
        if state["status"] == "running" and state["pid"] not in (None, runner):
            break
        time.sleep(0.3)
    stack.wait_for("restarted runner", timeout=30)
    assert any("runner exited with code -9; restarting in" in line for line in stack.lines)
    status = subprocess.run(
        [QMS, "status", "-c", str(stack.repo / "qms.yaml")], env=stack.env, capture_output=True, text=True, timeout=120
    )
    assert status.returncode == 0, status.stderr
    assert "runner running (restarted 1x, last exit code -9)" in " ".join(status.stdout.split()), status.stdout
    assert not Path(f"/proc/{runner}").exists() or _zombie(str(runner))
    # the restarted runner serves: a deployment run completes
    done = stack.prefect("deployment", "run", "trail-anchor/hourly", "--watch")
    assert done.returncode == 0 and "Completed" in done.stdout, done.stdout + done.stderr

    web = pid_of("web app")
    os.kill(web, signal.SIGKILL)
    stack.wait_for("restarted web app", timeout=60)
    deadline = time.monotonic() + 60
    answered = None
    while time.monotonic() < deadline and answered != 200:
        try:
            answered = httpx.get(f"{stack.web_url}/health", timeout=5).status_code
        except httpx.HTTPError:
            time.sleep(0.3)
    assert answered == 200
    assert stack.proc.poll() is None  # `qms up` itself never stopped


def test_ctrl_c_of_a_background_qms_up_stops_web_app_runner_then_server(tmp_path: Path) -> None:
    """Started as a background job starts it (SIGINT ignored, inherited): SIGINT still stops everything,
    within 15 s, web app and runner first, the server last; the children do not ignore SIGINT either."""
    import time

    repo = tmp_path / "repo"
    scaffold(repo, org_name="Background GmbH", git=True)
    s = start_stack(repo, ignore_sigint=True)
    try:
        children = s.children()
        assert len(children) == 3
        for pid in children:  # SigIgn: bit 2 is SIGINT; a child deaf to SIGINT could only be killed
            ignored = int(Path(f"/proc/{pid}/status").read_text().split("SigIgn:")[1].split()[0], 16)
            assert not ignored & (1 << (2 - 1)), f"child {pid} ignores SIGINT"
        started = time.monotonic()
        assert s.stop(timeout=15) == 0
        assert time.monotonic() - started < 15
        order = [line for line in s.lines if line.startswith("stopped ")]
        assert order == ["stopped web app", "stopped runner", "stopped Prefect server"]
        assert not (repo / ".qms" / "stack.pid").exists() and not (repo / ".qms" / "stack.json").exists()
        assert _gone(children, within=5) == []
        with socket.socket() as sock:  # nothing listens on the server's port any more
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", s.port))
    finally:
        s.kill()


def test_sigterm_during_start_up_stops_within_15_s(tmp_path: Path) -> None:
    """SIGTERM while the Prefect server is still starting (also in the background, SIGINT ignored)."""
    import signal
    import time

    repo = tmp_path / "repo"
    scaffold(repo, org_name="Early Stop GmbH", git=True)
    s = RunningStack(repo, free_port(), free_port(), ignore_sigint=True)
    try:
        s.wait_for("starting the Prefect server", timeout=120)
        children = s.children()
        started = time.monotonic()
        assert s.stop(signal.SIGTERM, timeout=15) == 0
        assert time.monotonic() - started < 15
        assert "qmsflow is up. Ctrl-C stops it." not in s.lines
        assert _gone(children, within=5) == []
    finally:
        s.kill()


def test_stop_and_restart_on_a_loaded_machine(tmp_path: Path) -> None:
    """Two busy loops keep both cores busy: the stack still starts, stops within 15 s (SIGINT, then
    SIGTERM after a restart on the same ports), and leaves no child behind."""
    import signal
    import sys
    import time

    repo = tmp_path / "repo"
    scaffold(repo, org_name="Busy GmbH", git=True)
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    s = None
    try:
        s = start_stack(repo)
        for sig in (signal.SIGINT, signal.SIGTERM):
            children = s.children()
            started = time.monotonic()
            assert s.stop(sig, timeout=15) == 0
            assert time.monotonic() - started < 15, f"{sig!r} took {time.monotonic() - started:.1f} s"
            assert _gone(children, within=5) == []
            if sig == signal.SIGINT:
                s = start_stack(repo, port=s.port, web_port=s.web_port)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
        if s is not None:
            s.kill()


def test_a_flow_run_process_dies_with_the_runner_that_started_it(tmp_path: Path) -> None:
    """A flow-run process of the runner (it imports `flows` with QMS_RUNNER_PID set) is killed when the
    runner dies, even by SIGKILL: it never outlives the stack to reconnect to a later server."""
    import os
    import signal
    import sys
    import time

    pidfile = tmp_path / "flow-run.pid"
    (tmp_path / "flow_run.py").write_text(
        f"import os, time, flows\nopen({str(pidfile)!r}, 'w').write(str(os.getpid()))\ntime.sleep(120)\n"
    )
    fake_runner = (
        "import os, subprocess, sys, time\n"
        "os.environ['QMS_RUNNER_PID'] = str(os.getpid())\n"
        f"subprocess.Popen([sys.executable, {str(tmp_path / 'flow_run.py')!r}])\n"
        "time.sleep(120)\n"
    )
    runner = subprocess.Popen([sys.executable, "-c", fake_runner], start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (pidfile.is_file() and pidfile.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        flow_run = int(pidfile.read_text())
        assert _gone([flow_run], within=0.5) == [flow_run]  # it runs while its runner does
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=10)
        assert _gone([flow_run], within=10) == []
    finally:
        try:
            os.killpg(runner.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _gone(pids: list[int], within: float) -> list[int]:
    """Pids still alive (not zombies) after waiting up to ``within`` seconds."""
    import time

    deadline = time.monotonic() + within
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if Path(f"/proc/{pid}").exists() and not _zombie(str(pid))]
        time.sleep(0.1)
    return alive


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
