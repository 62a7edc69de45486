"""The embedded stack of ``qms up``: a local Prefect server, a runner serving every deployment, the web app.

The children are supervised: one that dies is restarted with backoff (logged, and shown in the state
file ``.qms/stack.json`` that ``qms status`` reads); the others keep running. The embedded Prefect
server requires HTTP basic auth with a credential generated for each start (``auth_string`` in the
state file, mode 0600), which the runner, the web app and every ``qms`` command use. Stopping sends
SIGINT to the web app and the runner together, then to the server, under one shared deadline, and
SIGKILLs what is left, including the flow-run processes of the runner's process group.
With ``PREFECT_API_URL`` set (production: a shared Prefect server on PostgreSQL), no server is
started and the runner connects to that one with Prefect's own settings.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .context import QmsContext

DEFAULT_PORT = 4200
STOP_WITHIN = 10.0  # seconds from the first signal until every child is gone (SIGKILL after it)
BACKOFF_FIRST, BACKOFF_MAX, STABLE_AFTER = 1.0, 60.0, 60.0


class StackError(Exception):
    pass


class StackInterrupted(BaseException):  # noqa: N818 - like KeyboardInterrupt: not caught by `except Exception`
    """SIGINT or SIGTERM reached `qms up`: stop everything (raised at the next check, not in the handler:
    an exception raised in a signal handler can land in code that swallows it, e.g. an at-fork hook)."""


def new_auth_string() -> str:
    """A fresh ``user:password`` for the embedded Prefect server's basic auth (one per `qms up`)."""
    return f"qmsflow:{secrets.token_urlsafe(32)}"


def prefect_env(state_dir: Path, api_url: str, config_path: Path, auth_string: str | None = None) -> dict[str, str]:
    """Environment for Prefect children: private PREFECT_HOME, no telemetry, our config, the API credential.

    With ``auth_string`` (the embedded server), the server requires it (``PREFECT_SERVER_API_AUTH_STRING``)
    and every client in the stack sends it (``PREFECT_API_AUTH_STRING``, inherited by flow-run processes).
    """
    home = state_dir / "prefect"
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.pop("QMS_MIGRATE_DATABASE_URL", None)  # the schema owner's URL: for migrating, never for the children
    if auth_string:
        env["PREFECT_SERVER_API_AUTH_STRING"] = auth_string
        env["PREFECT_API_AUTH_STRING"] = auth_string
    env.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": api_url,
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{(home / 'prefect.db').as_posix()}",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_UI_ENABLED": env.get("PREFECT_UI_ENABLED", "true"),
            "QMS_CONFIG": str(config_path),
            # a resumed approval waits for the runner's next poll: 2 s instead of Prefect's 10 s
            "PREFECT_RUNNER_POLL_FREQUENCY": env.get("PREFECT_RUNNER_POLL_FREQUENCY", "2"),
        }
    )
    return env


def die_with_parent() -> None:
    """On Linux, be killed (SIGKILL) when the parent process dies, even when it dies by SIGKILL.

    Used before exec in the children of `qms up`, and by flow-run processes of the runner. A process
    whose parent is already gone (reparented) exits at once.
    """
    parent = os.getppid()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        return
    if os.getppid() != parent:
        os._exit(1)


def die_with_runner(runner_pid: int) -> None:
    """In a flow-run process of the stack's runner: die with the runner; exit if it is already gone."""
    if os.getppid() == runner_pid:
        die_with_parent()
    elif os.getppid() == 1:
        os._exit(1)  # orphaned before it could ask: the stack that started it is gone


def _child_setup() -> None:
    """In the child, before exec: SIGINT and SIGTERM back to their defaults (an ignored SIGINT inherited
    from a background shell would survive exec and make the child deaf to Ctrl-C), and die with `qms up`."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    die_with_parent()


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def wait_healthy(
    api_url: str,
    timeout: float,
    alive: Callable[[], bool] = lambda: True,
    tick: Callable[[float], None] | None = None,
    interrupted: Callable[[], bool] = lambda: False,
) -> None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if interrupted():
            raise StackInterrupted
        if not alive():
            raise StackError(f"{api_url} stopped during start-up (see the logs in .qms/logs/)")
        try:
            if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:  # /health needs no credential
                return
        except httpx.HTTPError:
            pass
        if tick:
            tick(time.monotonic() - start)
        time.sleep(0.5)
    raise StackError(f"the Prefect server did not answer at {api_url} within {timeout:.0f} s")


@dataclass
class Child:
    """One supervised process of the stack."""

    title: str
    log: str
    args: list[str]
    env: dict[str, str]
    proc: subprocess.Popen | None = None
    restarts: int = 0
    started_at: float = 0.0
    backoff: float = BACKOFF_FIRST
    restart_at: float | None = None  # monotonic time of the next start while it is down
    last_exit: int | None = None
    stopped: bool = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def state(self) -> dict:
        return {
            "pid": self.pid if self.running() else None,
            "status": "running" if self.running() else ("stopped" if self.stopped else "restarting"),
            "restarts": self.restarts,
            "last_exit": self.last_exit,
        }


def _kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    """Signal a child's process group (each child leads its own session): it and what it started."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class Stack:
    ctx: QmsContext
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    external_api: str | None = None
    web_port: int = 8000
    say: Callable[[str], None] = print
    children: list[Child] = field(default_factory=list)
    auth_string: str | None = None
    up: bool = False
    stop_requested: threading.Event = field(default_factory=threading.Event)

    def interrupted(self) -> bool:
        return self.stop_requested.is_set()

    def _check(self) -> None:
        """Between steps of start-up: a SIGINT or SIGTERM received meanwhile stops it here."""
        if self.stop_requested.is_set():
            raise StackInterrupted

    @property
    def api_url(self) -> str:
        return self.external_api or f"http://{self.host}:{self.port}/api"

    @property
    def ui_url(self) -> str | None:
        return None if self.external_api else f"http://{self.host}:{self.port}"

    @property
    def web_url(self) -> str:
        return f"http://{self.host}:{self.web_port}"

    @property
    def state_file(self) -> Path:
        return self.ctx.loaded.state_dir / "stack.json"

    @property
    def lock_file(self) -> Path:
        return self.ctx.loaded.state_dir / "stack.pid"

    def _log(self, name: str):  # noqa: ANN202
        logs = self.ctx.loaded.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        return (logs / f"{name}.log").open("ab")

    def _take_lock(self) -> None:
        if self.lock_file.exists():
            try:
                pid = int(self.lock_file.read_text().strip())
                os.kill(pid, 0)
            except (ValueError, ProcessLookupError, PermissionError):
                pass  # stale lock
            else:
                raise StackError(f"the stack of this compliance repo already runs (pid {pid}); stop it first")
        self.lock_file.parent.mkdir(parents=True, exist_ok=True)
        self.lock_file.write_text(str(os.getpid()))

    def write_state(self) -> None:
        """``.qms/stack.json`` (0600, it holds the API credential): where the stack is and how its children do."""
        state = {
            "api_url": self.api_url,
            "ui_url": self.ui_url,
            "web_url": self.web_url,
            "pid": os.getpid(),
            "status": "up" if self.up else "starting",
            "auth_string": self.auth_string,
            "children": {c.title: c.state() for c in self.children},
        }
        tmp = self.state_file.with_name(f".stack.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(state, f)
        os.replace(tmp, self.state_file)

    def start(self) -> None:
        """Start server, runner and web app; raises StackInterrupted as soon as a stop is requested."""
        self._check()
        self._take_lock()
        if not self.external_api:
            self.auth_string = new_auth_string()
        env = prefect_env(self.ctx.loaded.state_dir, self.api_url, self.ctx.loaded.path, self.auth_string)
        if not self.external_api:
            if not port_free(self.host, self.port):
                raise StackError(f"port {self.port} on {self.host} is in use: pass --port or stop what uses it")
            self.say(f"starting the Prefect server on {self.ui_url} (first start takes ~20 s) …")
            server = self._spawn(
                "Prefect server",
                "prefect-server",
                ["-m", "prefect", "server", "start", "--host", self.host, "--port", str(self.port)],
                env,
            )
            wait_healthy(self.api_url, 180, alive=server.running, interrupted=self.interrupted)
            self.say("Prefect server ready (API requires the stack's credential)")
        else:
            wait_healthy(self.api_url, 30, interrupted=self.interrupted)
        self.write_state()
        self._check()
        runner = self._spawn("runner", "runner", ["-m", "deployments.runner"], env)
        names = self._wait_deployments(runner)
        self.say(f"runner serving {len(names)} deployment(s): {', '.join(names)}")
        self._check()
        if not port_free(self.host, self.web_port):
            raise StackError(f"port {self.web_port} on {self.host} is in use: pass --web-port or stop what uses it")
        web = self._spawn(
            "web app",
            "web",
            ["-m", "qmsflow.web", "--host", self.host, "--port", str(self.web_port)],
            {**env, "QMS_PREFECT_UI_URL": self.ui_url or ""},
        )
        wait_healthy(self.web_url, 60, alive=web.running, interrupted=self.interrupted)
        self.up = True
        self.write_state()
        self.say("web app ready")

    def _spawn(self, title: str, log: str, args: list[str], env: dict[str, str]) -> Child:
        child = Child(title, log, args, env)
        self.children.append(child)
        self._launch(child)
        return child

    def _launch(self, child: Child) -> None:
        """Start ``python ARGS`` as a child of the stack: own session, log file, dies with `qms up`."""
        with self._log(child.log) as log:
            child.proc = subprocess.Popen(
                [sys.executable, *child.args],
                env=child.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.ctx.loaded.state_dir,
                start_new_session=True,
                preexec_fn=_child_setup,  # noqa: PLW1509 - only async-signal-safe work: signals and prctl
            )
        child.started_at, child.restart_at = time.monotonic(), None

    def _wait_deployments(self, runner: Child, timeout: float = 120) -> list[str]:
        """Wait until the runner has registered every deployment it announced."""
        manifest = self.ctx.loaded.state_dir / "runner-deployments.json"
        manifest.unlink(missing_ok=True)
        headers = {}
        if self.auth_string:
            from .adapters.prefect_api import Endpoint

            headers = Endpoint(self.api_url, self.auth_string).headers()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check()
            if not runner.running():
                raise StackError(
                    f"the runner exited with code {runner.proc.returncode} "
                    f"(see {self.ctx.loaded.state_dir / 'logs' / 'runner.log'})"
                )
            if manifest.is_file():
                names = json.loads(manifest.read_text())
                try:
                    if all(
                        httpx.get(f"{self.api_url}/deployments/name/{n}", timeout=5, headers=headers).status_code == 200
                        for n in names
                    ):
                        return names
                except httpx.HTTPError:
                    pass
            time.sleep(0.5)
        raise StackError(f"the runner did not register its deployments within {timeout:.0f} s")

    def supervise(self) -> list[str]:
        """One round of supervision: note children that died, restart those whose backoff has passed.

        Returns what happened, one line each (also printed). The others keep running meanwhile: a dead
        runner does not take the web app (and so Slack) with it.
        """
        events = []
        now = time.monotonic()
        changed = False
        for child in self.children:
            if child.stopped or child.proc is None:
                continue
            if child.restart_at is None and child.proc.poll() is not None:
                child.last_exit = child.proc.returncode
                _kill_group(child.proc.pid)  # what it started (flow runs of the runner) goes with it
                if now - child.started_at >= STABLE_AFTER:
                    child.backoff = BACKOFF_FIRST
                child.restart_at = now + child.backoff
                events.append(
                    f"{child.title} exited with code {child.last_exit}; restarting in {child.backoff:.0f} s "
                    f"(see {self.ctx.loaded.state_dir / 'logs' / (child.log + '.log')})"
                )
                child.backoff = min(child.backoff * 2, BACKOFF_MAX)
                changed = True
            elif child.restart_at is not None and now >= child.restart_at:
                port = {"Prefect server": self.port, "web app": self.web_port}.get(child.title)
                if port is not None and not port_free(self.host, port):
                    child.restart_at = now + 1  # its old socket is still closing
                    continue
                self._launch(child)
                child.restarts += 1
                events.append(f"restarted {child.title} (pid {child.proc.pid}, restart #{child.restarts})")
                changed = True
        if changed:
            self.write_state()
        for line in events:
            self.say(line)
        return events

    def stop(self, within: float = STOP_WITHIN) -> None:
        """Stop every child under one deadline: web app and runner together, then the server, SIGKILL after.

        The server goes last so that the runner can report its flow runs on the way out; whatever is
        left at the deadline (including the flow-run processes of the runner's process group) is killed.
        """
        deadline = time.monotonic() + within
        first = [c for c in self.children if c.title != "Prefect server"]
        last = [c for c in self.children if c.title == "Prefect server"]
        for group, until in ((first, deadline - within / 3 if last else deadline), (last, deadline)):
            for child in group:
                child.stopped = True
                if child.running():
                    child.proc.send_signal(signal.SIGINT)
            for child in group:
                self._wait_or_kill(child, until)
            for child in reversed(group):
                self.say(f"stopped {child.title}")
        for child in self.children:  # flow runs and anything else still in a child's process group
            if child.proc is not None:
                _kill_group(child.proc.pid)
        self.children.clear()
        self.state_file.unlink(missing_ok=True)
        try:
            if self.lock_file.read_text().strip() == str(os.getpid()):
                self.lock_file.unlink()
        except OSError:
            pass

    @staticmethod
    def _wait_or_kill(child: Child, until: float) -> None:
        if child.proc is None:
            return
        try:
            child.proc.wait(timeout=max(0.1, until - time.monotonic()))
        except subprocess.TimeoutExpired:
            _kill_group(child.proc.pid)
            child.proc.kill()
            try:
                child.proc.wait(timeout=1)  # SIGKILLed: reaped at once unless the machine is swamped
            except subprocess.TimeoutExpired:
                pass
