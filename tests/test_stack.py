"""End to end: `qms up` starts the Prefect server and the runner, the due-scan deployment runs and
records into the store, Ctrl-C stops the runner, then the server.

One embedded stack for the whole module (a Prefect server cold start takes ~20 s).
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from qmsflow.services.scaffold import scaffold
from qmsflow.store.db import Database
from qmsflow.store.tables import DocumentVersionRow, ProcessRunRow, RecordRow

pytestmark = [pytest.mark.prefect, pytest.mark.slow]
QMS = str(Path(sys.executable).parent / "qms")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Stack:
    def __init__(self, proc: subprocess.Popen, repo: Path, port: int):
        self.proc, self.repo, self.port = proc, repo, port
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for raw in self.proc.stdout:
            self._queue.put(raw.rstrip("\n"))

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            self.lines.append(line)
            if text in line:
                return
        log = self.repo / ".qms" / "logs"
        logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in log.glob("*.log")) if log.exists() else ""
        raise AssertionError(f"{text!r} not printed within {timeout} s; output:\n" + "\n".join(self.lines) + "\n" + logs)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("stack")
    repo = base / "repo"
    scaffold(repo, org_name="Stack Test GmbH", git=True)
    elsewhere = base / "elsewhere"  # qms up must not depend on where it is started
    elsewhere.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "QMS_"))}
    env.update({"DO_NOT_TRACK": "1", "PREFECT_UI_ENABLED": "false", "PYTHONUNBUFFERED": "1", "COLUMNS": "200"})
    proc = subprocess.Popen([QMS, "up", "-c", str(repo / "qms.yaml"), "--port", str(port)], cwd=elsewhere, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    s = Stack(proc, repo, port)
    try:
        s.wait_for("qmsflow is up", timeout=240)
        yield s
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def prefect(stack: Stack, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"PREFECT_API_URL": f"http://127.0.0.1:{stack.port}/api", "DO_NOT_TRACK": "1",
                "PREFECT_HOME": str(stack.repo / ".qms" / "prefect-cli"), "COLUMNS": "200"})
    return subprocess.run([sys.executable, "-m", "prefect", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def store(stack: Stack) -> Database:
    return Database(f"sqlite:///{stack.repo / '.qms' / 'qms.db'}")


def test_up_prints_the_urls_and_syncs_the_config(stack: Stack) -> None:
    printed = "\n".join(stack.lines)
    assert f"Prefect UI:  http://127.0.0.1:{stack.port}" in printed
    assert "qms.yaml synced (34 change(s))" in printed
    db = store(stack)
    with db.read() as s:
        version = s.scalars(select(DocumentVersionRow).where(DocumentVersionRow.document_id == "SOP-DOC-001")).one()
    head = subprocess.run(["git", "-C", str(stack.repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert version.git_commit == head  # the snapshot names the commit that holds the hashed content
    db.dispose()


def test_due_scan_deployment_runs_and_records(stack: Stack) -> None:
    done = prefect(stack, "deployment", "run", "document-review-due-scan/daily", "--watch")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Completed" in done.stdout
    db = store(stack)
    with db.read() as s:
        runs = s.scalars(select(ProcessRunRow)).all()
        due = s.scalars(select(RecordRow).where(RecordRow.kind == "document-review-due")).all()
    assert [(r.process_key, r.state) for r in runs] == [("document-control", "COMPLETED")]
    assert runs[0].summary["overdue"] == 10  # a fresh repo: no document approved yet
    assert len(due) == 10 and {r.process for r in due} == {"document-control"}
    db.dispose()


def test_deployment_schedule_comes_from_the_process_in_qms_yaml(stack: Stack) -> None:
    done = prefect(stack, "deployment", "inspect", "document-review-due-scan/daily")
    assert done.returncode == 0, done.stderr
    assert "0 6 * * *" in done.stdout  # document-control: schedule daily
    assert "flows.document_review_scan.document_review_due_scan" in done.stdout  # module entrypoint


def test_ctrl_c_stops_runner_then_server(stack: Stack) -> None:
    stack.proc.send_signal(signal.SIGINT)
    stack.wait_for("qmsflow stopped", timeout=120)
    assert stack.proc.wait(timeout=30) == 0
    order = [line for line in stack.lines if line.startswith("stopped ")]
    assert order == ["stopped runner", "stopped Prefect server"]
    assert not (stack.repo / ".qms" / "stack.pid").exists()
    with socket.socket() as sock:  # nothing listens on the server's port any more
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", stack.port))
