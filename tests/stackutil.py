"""Starting `qms up` as a real subprocess for end-to-end tests, and reading what it prints."""

from __future__ import annotations

import base64
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

QMS = str(Path(sys.executable).parent / "qms")
RETRYABLE = {429, 502, 503}  # what Prefect's own client retries (its server answers 503 when its database is busy)
# the Slack workspace of the scaffolded organisation, for the fake Slack of the stack tests
SLACK_USERS = [
    {"id": "U0ANA0001", "email": "ana@example.com", "name": "ana", "real_name": "Ana Alves"},
    {"id": "U0BEN0001", "email": "ben@example.com", "name": "ben", "real_name": "Ben Brandt"},
    {"id": "U0CHLOE01", "email": "chloe@example.com", "name": "chloe", "real_name": "Chloe Chen"},
    {"id": "U0DEV0001", "email": "dev@example.com", "name": "dev", "real_name": "Dev Patel"},
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ignore_sigint() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


class RunningStack:
    """A `qms up` process: its output lines, its ports, and a clean way to stop it."""

    def __init__(
        self,
        repo: Path,
        port: int,
        web_port: int,
        env_extra: dict[str, str] | None = None,
        cwd: Path | None = None,
        ignore_sigint: bool = False,
    ):
        self.repo, self.port, self.web_port = repo, port, web_port
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "QMS_", "SLACK_"))}
        env.update({"DO_NOT_TRACK": "1", "PREFECT_UI_ENABLED": "false", "PYTHONUNBUFFERED": "1", "COLUMNS": "200"})
        env.update(env_extra or {})
        self.env = env
        self.proc = subprocess.Popen(
            [QMS, "up", "-c", str(repo / "qms.yaml"), "--port", str(port), "--web-port", str(web_port)],
            cwd=cwd or repo,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            # as a background job of a shell starts it: SIGINT ignored, and the ignore is inherited
            preexec_fn=_ignore_sigint if ignore_sigint else None,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def state(self) -> dict:
        """The stack's own state file (`.qms/stack.json`): urls, pids, children, the API credential."""
        return json.loads((self.repo / ".qms" / "stack.json").read_text())

    @property
    def auth_string(self) -> str:
        return self.state()["auth_string"]

    def headers(self) -> dict[str, str]:
        """What an insider sends: the stack's credential (HTTP basic auth), read from its state file."""
        return {"Authorization": "Basic " + base64.b64encode(self.auth_string.encode()).decode()}

    def api(self, method: str, path: str, **kw) -> httpx.Response:  # noqa: ANN003
        """A request to the stack's Prefect API with its credential. Answers that Prefect's own client retries
        (429, 502, 503: e.g. its SQLite database busy on a loaded machine) are retried the same way."""
        for attempt in range(6):
            response = httpx.request(method, f"{self.api_url}{path}", headers=self.headers(), timeout=10, **kw)
            if response.status_code not in RETRYABLE:
                break
            time.sleep(0.5 * 2**attempt)
        return response

    def _read(self) -> None:
        for raw in self.proc.stdout:
            self._queue.put(raw.rstrip("\n"))

    def logs(self) -> str:
        folder = self.repo / ".qms" / "logs"
        if not folder.exists():
            return ""
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in sorted(folder.glob("*.log")))

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
        raise AssertionError(
            f"{text!r} not printed within {timeout} s; output:\n" + "\n".join(self.lines) + "\n" + self.logs()
        )

    def stop(self, sig: int | None = None, timeout: float = 120) -> int:
        """Send SIGINT (or ``sig``) and wait until `qms up` says it stopped and exits."""
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(sig if sig is not None else signal.SIGINT)
            self.wait_for("qmsflow stopped", timeout=timeout)
        return self.proc.wait(timeout=30)

    def children(self) -> list[int]:
        """Pids of the processes `qms up` started (server, runner, web app), from /proc."""
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        try:
            return [int(p) for p in path.read_text().split()]
        except OSError:
            return []

    def kill(self) -> None:
        """Teardown: stop cleanly if possible, else kill (the children die with `qms up`)."""
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def prefect(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(
            {
                "PREFECT_API_URL": self.api_url,
                "PREFECT_API_AUTH_STRING": self.auth_string,
                "DO_NOT_TRACK": "1",
                "PREFECT_HOME": str(self.repo / ".qms" / "prefect-cli"),
                "COLUMNS": "200",
            }
        )
        return subprocess.run(
            [sys.executable, "-m", "prefect", *args], env=env, capture_output=True, text=True, timeout=timeout
        )

    def flow_state(self, flow_run_id: str) -> str | None:
        response = self.api("GET", f"/flow_runs/{flow_run_id}")
        response.raise_for_status()
        state = response.json().get("state") or {}
        return state.get("type")

    def wait_state(self, flow_run_id: str, wanted: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            state = self.flow_state(flow_run_id)
            if state == wanted:
                return
            if state in ("FAILED", "CRASHED", "CANCELLED") and wanted != state:
                break
            time.sleep(0.5)
        raise AssertionError(f"flow run {flow_run_id} is {state}, not {wanted}\n" + self.logs())


def start_stack(
    repo: Path,
    env_extra: dict[str, str] | None = None,
    cwd: Path | None = None,
    port: int | None = None,
    web_port: int | None = None,
    ignore_sigint: bool = False,
) -> RunningStack:
    stack = RunningStack(repo, port or free_port(), web_port or free_port(), env_extra, cwd, ignore_sigint)
    try:
        stack.wait_for("qmsflow is up", timeout=240)
    except BaseException:
        stack.kill()
        raise
    return stack
