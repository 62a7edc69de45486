"""The production topology as real processes, for tests and benchmarks (docs/operations.md).

- a Prefect server on PostgreSQL (its own database, created here and dropped afterwards), migrated as a
  step (``prefect server database upgrade``), then N API processes (``prefect server start
  --no-services``) and one background-services process (``prefect server services start``), which
  talk through Prefect's Redis messaging (``prefect-redis``, a Redis database of their own);
- a round-robin TCP proxy in this process: the one URL in front of the API replicas (it counts the
  connections each replica got);
- ``qms deploy`` against that URL, and ``prefect worker start --pool … --type process`` workers;
- the web app (``python -m qmsflow.web``) against the records store on PostgreSQL.

The API requires HTTP basic auth, as in production (``PREFECT_SERVER_API_AUTH_STRING`` on the API
processes, ``PREFECT_API_AUTH_STRING`` on every client): ``prefect_client()`` is an httpx client with it.
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
from stackutil import QMS, free_port

PG_ADMIN = os.environ.get("QMS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("QMS_TEST_REDIS", "127.0.0.1:6379")
AUTH = ("qmsflow", secrets.token_urlsafe(24))  # this process's topologies' Prefect API credential
AUTH_STRING = ":".join(AUTH)


def prefect_client(timeout: float = 60, auth: tuple[str, str] = AUTH) -> httpx.Client:
    """An httpx client for a Prefect API with basic auth (the topology's credential unless told)."""
    return httpx.Client(timeout=timeout, auth=auth)


class RoundRobinProxy:
    """One address in front of several backends: each new connection goes to the next one."""

    def __init__(self, backends: list[tuple[str, int]]):
        self.backends = backends
        self.counts = [0] * len(backends)
        self.first_lines: list[tuple[int, str]] = []  # (backend, first request line of each connection)
        self._next = 0
        self._lock = threading.Lock()
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(256)
        self.port = self._server.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                index = self._next
                self._next = (self._next + 1) % len(self.backends)
                self.counts[index] += 1
            threading.Thread(target=self._serve, args=(client, index), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _serve(self, client: socket.socket, index: int) -> None:
        try:
            upstream = socket.create_connection(self.backends[index], timeout=10)
            upstream.settimeout(None)
            first = client.recv(65536)
            with self._lock:
                self.first_lines.append((index, first.split(b"\r\n", 1)[0].decode("latin-1")))
            upstream.sendall(first)
        except OSError:
            client.close()
            return
        threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()
        self._pipe(client, upstream)

    def requests_to(self, method: str, path_suffix: str) -> list[int]:
        """How many connections began with ``METHOD …path_suffix`` at each backend."""
        out = [0] * len(self.backends)
        with self._lock:
            for index, line in self.first_lines:
                parts = line.split(" ")
                if len(parts) >= 2 and parts[0] == method and parts[1].endswith(path_suffix):
                    out[index] += 1
        return out

    def close(self) -> None:
        self._closed = True
        self._server.close()


def _pg(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(sql)


def _free_redis_db() -> int:
    """A Redis database index (1-15) that holds no key: this topology's own, flushed afterwards."""
    import redis

    host, _, port = REDIS.partition(":")
    for index in range(15, 0, -1):
        client = redis.Redis(host=host, port=int(port or 6379), db=index)
        try:
            if client.dbsize() == 0 and client.set("qmsflow-test-claim", os.getpid(), nx=True):
                return index
        finally:
            client.close()
    raise RuntimeError("no empty Redis database among 1-15 for the topology test")


class Topology:
    """Start with ``start()``, stop with ``stop()`` (everything it started, in reverse order)."""

    def __init__(
        self,
        repo: Path,
        records_url: str,
        replicas: int = 2,
        logs: Path | None = None,
        extra_env: dict[str, str] | None = None,
        pool_limit: int = 4,
    ):
        self.repo, self.records_url, self.replicas = repo, records_url, replicas
        self.extra_env, self.pool_limit = dict(extra_env or {}), pool_limit
        self.logs = logs or (repo.parent / "topology-logs")
        self.logs.mkdir(parents=True, exist_ok=True)
        self.prefect_db = f"qms_prefect_{uuid.uuid4().hex[:10]}"
        self.redis_db: int | None = None
        self.procs: dict[str, subprocess.Popen] = {}
        self.proxy: RoundRobinProxy | None = None
        self.api_ports: list[int] = []
        self.web_port = free_port()
        self.pool = "qms-test"
        # the signing key of the web app and the workers, named as in production (docs/operations.md)
        self.signing_key = self.logs / "signing-key.pem"
        if not self.signing_key.exists():
            from qmsflow.adapters import keys

            keys.generate(self.signing_key)

    # ---------------------------------------------------------------- environment

    @property
    def api_url(self) -> str:
        assert self.proxy is not None
        return f"http://127.0.0.1:{self.proxy.port}/api"

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "QMS_", "SLACK_", "JIRA_"))}
        env.update({"DO_NOT_TRACK": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "200"})
        return env

    def server_env(self) -> dict[str, str]:
        host, _, port = REDIS.partition(":")
        env = self.base_env()
        env.update(
            {
                "PREFECT_HOME": str(self.logs / "prefect-home"),
                "PREFECT_SERVER_DATABASE_CONNECTION_URL": PG_ADMIN.replace(
                    "postgresql://", "postgresql+asyncpg://"
                ).rsplit("/", 1)[0]
                + f"/{self.prefect_db}",
                "PREFECT_SERVER_API_AUTH_STRING": AUTH_STRING,
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_UI_ENABLED": "false",
                "PREFECT_SERVER_UI_ENABLED": "false",
                "PREFECT_API_DATABASE_MIGRATE_ON_START": "false",  # migrated as a step, before any replica
                "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
                "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
                "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
                "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
                "PREFECT_REDIS_MESSAGING_HOST": host,
                "PREFECT_REDIS_MESSAGING_PORT": port or "6379",
                "PREFECT_REDIS_MESSAGING_DB": str(self.redis_db),
                "PREFECT_SERVER_DOCKET_URL": f"redis://{host}:{port or 6379}/{self.redis_db}",
                "PREFECT_SERVER_DOCKET_NAME": f"qms-{self.prefect_db}",
            }
        )
        return env

    def client_env(self) -> dict[str, str]:
        """qms commands, the web app and workers: the one API URL, the records store, the repo's config."""
        env = self.base_env()
        env.update(
            {
                "PREFECT_API_URL": self.api_url,
                "PREFECT_API_AUTH_STRING": AUTH_STRING,
                "PREFECT_HOME": str(self.logs / "prefect-client"),
                "QMS_CONFIG": str(self.repo / "qms.yaml"),
                "QMS_DATABASE_URL": self.records_url,
                "QMS_SIGNING_KEY_FILE": str(self.signing_key),
                **self.extra_env,
            }
        )
        return env

    @property
    def env(self) -> dict[str, str]:
        return self.client_env()

    auth_string: str = AUTH_STRING

    def headers(self) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(AUTH_STRING.encode()).decode()}

    def wait_state(self, run_id: str, wanted: str, timeout: float = 120) -> None:
        wait_states(self.api_url, [run_id], wanted, timeout, self.log_tail)

    # ---------------------------------------------------------------- processes

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.logs, start_new_session=True
        )
        self.procs[name] = proc
        return proc

    def log_tail(self, chars: int = 3000) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}" for p in sorted(self.logs.glob("*.log"))
        )

    def _wait_healthy(self, url: str, proc: subprocess.Popen, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"{url} exited with {proc.returncode}\n{self.log_tail()}")
            try:
                if httpx.get(f"{url}/health", timeout=3).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"{url} not healthy within {timeout} s\n{self.log_tail()}")

    def start(self) -> Topology:
        _pg(f'CREATE DATABASE "{self.prefect_db}"')
        self.redis_db = _free_redis_db()
        senv = self.server_env()
        py = sys.executable
        migrated = subprocess.run(
            [py, "-m", "prefect", "server", "database", "upgrade", "-y"],
            env=senv,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        for index in range(self.replicas):
            port = free_port()
            self.api_ports.append(port)
            proc = self._spawn(
                f"prefect-api-{index}",
                [py, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-services"],
                senv,
            )
            self._wait_healthy(f"http://127.0.0.1:{port}/api", proc)
        self._spawn("prefect-services", [py, "-m", "prefect", "server", "services", "start"], senv)
        self.proxy = RoundRobinProxy([("127.0.0.1", p) for p in self.api_ports])
        self.qms_ok("db", "upgrade")
        self.qms_ok("sync", "--as", "qmsflow")
        self.qms_ok("deploy", "--pool", self.pool, "--pool-limit", str(self.pool_limit))
        web = self._spawn(
            "web", [py, "-m", "qmsflow.web", "--host", "127.0.0.1", "--port", str(self.web_port)], self.client_env()
        )
        self._wait_healthy(self.web_url, web, timeout=120)
        return self

    def start_worker(self, name: str, limit: int | None = None) -> subprocess.Popen:
        env = self.client_env()
        env["PREFECT_WORKER_QUERY_SECONDS"] = "1"  # a resumed review waits for the next poll: 1 s, not 10 s
        env["PREFECT_WORKER_PREFETCH_SECONDS"] = "2"
        return self._spawn(
            name,
            [
                sys.executable,
                "-m",
                "prefect",
                "worker",
                "start",
                "--pool",
                self.pool,
                "--type",
                "process",
                "--name",
                name,
                "--limit",
                str(limit or self.pool_limit),
            ],
            env,
        )

    def kill9(self, name: str) -> None:
        proc = self.procs.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)  # the worker and any flow-run process it started
        proc.wait(timeout=30)

    def qms(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [QMS, *args], env={**self.client_env(), **(env or {})}, capture_output=True, text=True, timeout=timeout
        )

    def qms_ok(self, *args: str, env: dict[str, str] | None = None) -> str:
        done = self.qms(*args, env=env)
        assert done.returncode == 0, f"qms {' '.join(args)}: {done.stdout}{done.stderr}"
        return done.stdout

    def stop_one(self, name: str) -> None:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=30)

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop_one(name)
        if self.proxy:
            self.proxy.close()
        try:
            _pg(f'DROP DATABASE IF EXISTS "{self.prefect_db}" WITH (FORCE)')
        except Exception:  # noqa: BLE001 - teardown goes on
            pass
        if self.redis_db is not None:
            import redis

            host, _, port = REDIS.partition(":")
            client = redis.Redis(host=host, port=int(port or 6379), db=self.redis_db)
            client.flushdb()
            client.close()


# ---------------------------------------------------------------- the 50-review burst (test and bench)


def add_burst_documents(repo: Path, count: int) -> list[str]:
    """``count`` more controlled documents (owner ana, approver ben), committed, each ready for one review."""
    docs = [f"WI-BURST-{n:03d}" for n in range(1, count + 1)]
    config = repo / "qms.yaml"
    lines = [
        f"  - {{id: {doc}, title: Burst work instruction {doc[-3:]}, path: procedures/{doc}.md, owner: ana, "
        "approvers: [ben]}"
        for doc in docs
    ]
    anchor = "review_interval_months: 12}\n"
    text = config.read_text()
    assert anchor in text, "the scaffold's document list changed: adapt add_burst_documents"
    config.write_text(text.replace(anchor, anchor + "\n".join(lines) + "\n", 1))
    for doc in docs:
        (repo / "procedures" / f"{doc}.md").write_text(f"# {doc}\n\nWork instruction for the burst.\n")
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(repo), "commit", "-qm", "Burst documents"], check=True)
    return docs


def states(
    api_url: str, run_ids: list[str], client: httpx.Client | None = None, auth: tuple[str, str] = AUTH
) -> dict[str, str | None]:
    """The state type of each run, in one request."""
    own = client or prefect_client(auth=auth)
    try:
        response = own.post(
            f"{api_url}/flow_runs/filter", json={"flow_runs": {"id": {"any_": run_ids}}, "limit": len(run_ids)}
        )
        response.raise_for_status()
        return {r["id"]: (r.get("state") or {}).get("type") for r in response.json()}
    finally:
        if client is None:
            own.close()


def wait_states(  # noqa: ANN001
    api_url: str, run_ids: list[str], wanted: str, timeout: float, logs=lambda: "", auth: tuple[str, str] = AUTH
) -> None:
    deadline = time.monotonic() + timeout
    pending = list(run_ids)
    with prefect_client(auth=auth) as client:
        while pending:
            try:
                found = states(api_url, pending, client)
            except (httpx.TimeoutException, httpx.HTTPStatusError) as exc:  # a server busy with the burst
                if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code < 500:
                    raise
                found = {}
            bad = {r: s for r, s in found.items() if s in ("FAILED", "CRASHED", "CANCELLED")}
            assert not bad, f"runs ended badly: {bad}\n{logs()}"
            pending = [r for r in pending if found.get(r) != wanted]
            if pending and time.monotonic() > deadline:
                raise AssertionError(f"{len(pending)} run(s) not {wanted} within {timeout} s\n{logs()}")
            if pending:
                time.sleep(1)


def completions(api_url: str, run_id: str, client: httpx.Client) -> int:
    found = client.get(f"{api_url}/flow_run_states/", params={"flow_run_id": run_id}).json()
    return sum(1 for s in found if s["type"] == "COMPLETED")


def burst(  # noqa: ANN001, ANN201
    web_url: str,
    api_url: str,
    db,
    ana: str,
    ben: str,
    docs: list[str],
    timeout: float = 1500,
    logs=lambda: "",
    auth: tuple[str, str] = AUTH,
):
    """Submit a review of every doc at once (10 clients), approve them all at once, wait for every run
    to complete; returns (seconds from the first submission to the last completion, run ids, request
    ids, error answers)."""
    from concurrent.futures import ThreadPoolExecutor

    from sqlalchemy import select

    from qmsflow.store.tables import ApprovalRequestRow

    errors: list[str] = []
    client = httpx.Client(timeout=300)

    def submit(doc: str) -> str | None:
        response = client.post(
            f"{web_url}/api/documents/{doc}/submissions",
            headers={"Authorization": f"Bearer {ana}"},
            json={"comment": "burst"},
        )
        if response.status_code != 201 or not response.json().get("flow_run_id"):
            errors.append(f"submit {doc}: {response.status_code} {response.text[:200]}")
            return None
        return response.json()["flow_run_id"]

    def approve(request_id: str) -> None:
        response = client.post(
            f"{web_url}/api/approvals/{request_id}/decision",
            headers={"Authorization": f"Bearer {ben}"},
            json={"decision": "approve"},
        )
        if response.status_code != 200:
            errors.append(f"approve {request_id}: {response.status_code} {response.text[:200]}")

    started = time.monotonic()
    try:
        with ThreadPoolExecutor(max_workers=10) as pool:
            run_ids = [r for r in pool.map(submit, docs) if r]
        deadline = time.monotonic() + timeout
        requests: dict[str, str] = {}
        while len(requests) < len(run_ids):
            with db.read() as s:
                rows = s.execute(
                    select(ApprovalRequestRow.flow_run_id, ApprovalRequestRow.id).where(
                        ApprovalRequestRow.flow_run_id.in_(run_ids)
                    )
                ).all()
            requests = {run: rid for run, rid in rows}
            assert time.monotonic() < deadline, f"{len(run_ids) - len(requests)} request(s) never opened\n{logs()}"
            time.sleep(1)
        wait_states(api_url, run_ids, "PAUSED", max(1, deadline - time.monotonic()), logs, auth)
        with ThreadPoolExecutor(max_workers=10) as pool:
            list(pool.map(approve, [requests[r] for r in run_ids]))
        wait_states(api_url, run_ids, "COMPLETED", max(1, deadline - time.monotonic()), logs, auth)
    finally:
        client.close()
    return time.monotonic() - started, run_ids, [requests[r] for r in run_ids], errors


def burst_counts(  # noqa: ANN001
    api_url: str, db, docs: list[str], run_ids: list[str], request_ids: list[str], auth: tuple[str, str] = AUTH
) -> dict[str, int]:
    """What a burst left: effective versions, versions, signatures, requests, 'effective' events, completions."""
    from sqlalchemy import func, select

    from qmsflow.store.tables import ApprovalRequestRow, DocumentVersionRow, SignatureRow, TrailEventRow

    def count(model, *where) -> int:  # noqa: ANN001
        with db.read() as s:
            return s.scalar(select(func.count()).select_from(model).where(*where))

    with prefect_client(auth=auth) as client:
        completed = [completions(api_url, r, client) for r in run_ids]
    return {
        "effective versions": count(
            DocumentVersionRow, DocumentVersionRow.document_id.in_(docs), DocumentVersionRow.status == "effective"
        ),
        "versions": count(DocumentVersionRow, DocumentVersionRow.document_id.in_(docs)),
        "signatures": count(SignatureRow, SignatureRow.request_id.in_(request_ids)),
        "approval requests": count(ApprovalRequestRow, ApprovalRequestRow.flow_run_id.in_(run_ids)),
        "effective events": count(
            TrailEventRow,
            TrailEventRow.action == "document-version.effective",
            TrailEventRow.record.in_([f"document-version:{d}@1.0" for d in docs]),
        ),
        "runs completed once": sum(1 for c in completed if c == 1),
        "runs completed more than once": sum(1 for c in completed if c > 1),
    }
