"""The embedded stack of ``qms up``: a local Prefect server and a runner serving every deployment.

Processes are started as children and stopped in reverse order (runner before server) so that
no flow run loses its API. With ``PREFECT_API_URL`` set (production: a shared Prefect server on
PostgreSQL), no server is started and the runner connects to that one.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .context import QmsContext

DEFAULT_PORT = 4200


class StackError(Exception):
    pass


def prefect_env(state_dir: Path, api_url: str, config_path: Path) -> dict[str, str]:
    """Environment for Prefect children: private PREFECT_HOME, no telemetry, our config."""
    home = state_dir / "prefect"
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.pop("QMS_MIGRATE_DATABASE_URL", None)  # the schema owner's URL: for migrating, never for the children
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


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, be killed when `qms up` dies, even by SIGKILL.

    Ctrl-C and SIGTERM stop the children in order; this covers the case where `qms up` itself is
    killed, which would otherwise leave a Prefect server holding the port and its SQLite file.
    """
    try:
        import ctypes
        import signal as _signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, _signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def wait_healthy(
    api_url: str, timeout: float, alive: Callable[[], bool] = lambda: True, tick: Callable[[float], None] | None = None
) -> None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if not alive():
            raise StackError(f"{api_url} stopped during start-up (see the logs in .qms/logs/)")
        try:
            if httpx.get(f"{api_url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if tick:
            tick(time.monotonic() - start)
        time.sleep(0.5)
    raise StackError(f"the Prefect server did not answer at {api_url} within {timeout:.0f} s")


@dataclass
class Stack:
    ctx: QmsContext
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    external_api: str | None = None
    web_port: int = 8000
    say: Callable[[str], None] = print
    children: list[tuple[str, subprocess.Popen]] = field(default_factory=list)

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

    def start(self) -> None:
        self._take_lock()
        env = prefect_env(self.ctx.loaded.state_dir, self.api_url, self.ctx.loaded.path)
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
            wait_healthy(self.api_url, 180, alive=lambda: server.poll() is None)
            self.say("Prefect server ready")
        else:
            wait_healthy(self.api_url, 30)
        runner = self._spawn("runner", "runner", ["-m", "deployments.runner"], env)
        names = self._wait_deployments(runner)
        self.say(f"runner serving {len(names)} deployment(s): {', '.join(names)}")
        if not port_free(self.host, self.web_port):
            raise StackError(f"port {self.web_port} on {self.host} is in use: pass --web-port or stop what uses it")
        web = self._spawn(
            "web app",
            "web",
            ["-m", "qmsflow.web", "--host", self.host, "--port", str(self.web_port)],
            {**env, "QMS_PREFECT_UI_URL": self.ui_url or ""},
        )
        wait_healthy(self.web_url, 60, alive=lambda: web.poll() is None)
        self.state_file.write_text(
            json.dumps({"api_url": self.api_url, "ui_url": self.ui_url, "web_url": self.web_url, "pid": os.getpid()})
        )
        self.say("web app ready")

    def _spawn(self, title: str, log: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        """Start ``python ARGS`` as a child of the stack: own session, log file, dies with `qms up`."""
        child = subprocess.Popen(
            [sys.executable, *args],
            env=env,
            stdout=self._log(log),
            stderr=subprocess.STDOUT,
            cwd=self.ctx.loaded.state_dir,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self.children.append((title, child))
        return child

    def _wait_deployments(self, runner: subprocess.Popen, timeout: float = 120) -> list[str]:
        """Wait until the runner has registered every deployment it announced."""
        manifest = self.ctx.loaded.state_dir / "runner-deployments.json"
        manifest.unlink(missing_ok=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if runner.poll() is not None:
                raise StackError(
                    f"the runner exited with code {runner.returncode} "
                    f"(see {self.ctx.loaded.state_dir / 'logs' / 'runner.log'})"
                )
            if manifest.is_file():
                names = json.loads(manifest.read_text())
                try:
                    if all(
                        httpx.get(f"{self.api_url}/deployments/name/{n}", timeout=5).status_code == 200 for n in names
                    ):
                        return names
                except httpx.HTTPError:
                    pass
            time.sleep(0.5)
        raise StackError(f"the runner did not register its deployments within {timeout:.0f} s")

    def check(self) -> str | None:
        """Name of a child that died, if any."""
        for name, proc in self.children:
            if proc.poll() is not None:
                return f"{name} exited with code {proc.returncode} (see {self.ctx.loaded.state_dir / 'logs'})"
        return None

    def stop(self) -> None:
        """Stop children in reverse start order: runner first, then the server."""
        for name, proc in reversed(self.children):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.terminate()
                    try:
                        proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
            self.say(f"stopped {name}")
        self.children.clear()
        self.state_file.unlink(missing_ok=True)
        try:
            if self.lock_file.read_text().strip() == str(os.getpid()):
                self.lock_file.unlink()
        except OSError:
            pass
