"""Benchmark of the dashboard over a ten-year, 50-system store, on SQLite and PostgreSQL, under concurrency.

    python bench/dashboard.py [--repo DIR] [--requests 40] [--database sqlite|postgresql [--pg-repo DIR --pg-url URL]]
                              [--concurrency N [--concurrency-rounds 3]] [--workers 2]

Without --repo it builds the store with `qms demo --scale large` (a few minutes). Serves the web app
as its production process (`python -m qmsflow.web --workers W`, uvicorn worker processes with pooled
store connections) on 127.0.0.1, signs in, and requests every page --requests times over real HTTP,
one after the other: p50/p95 per page next to a baseline (a trivial signed-in page of the same app in
the same run). Goal: p95 <= 100 ms for every page on SQLite.

--database postgresql also builds the same demo (same seed) in a fresh PostgreSQL schema
(QMS_TEST_PG_URL, default postgresql://postgres@127.0.0.1:5432/test; dropped afterwards) and measures
every page on both stores in the same run, both servers up and the requests alternating between them
(a shared machine's noise then falls on both alike): goal, every page's p50 on PostgreSQL <= 1.5 x on
SQLite.

--concurrency N then serves the chosen store to N concurrent signed-in clients requesting the pages
in turn, and compares the requests per second with one client doing the same, right before, in
--concurrency-rounds alternating pairs (goal: median ratio >= 1.5 x, 0 errors), with p50/p95 latency
under load.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
QMS = str(Path(sys.executable).parent / "qms")
PG = os.environ.get("QMS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_demo(repo: Path, database_url: str | None, scale: str = "large") -> None:
    print(f"building the {scale} demo in {repo} ({'PostgreSQL' if database_url else 'SQLite'}) …", file=sys.stderr)
    env = {k: v for k, v in os.environ.items() if k != "QMS_DATABASE_URL"}
    if database_url:
        env["QMS_DATABASE_URL"] = database_url
    subprocess.run([QMS, "demo", str(repo), "--scale", scale], check=True, stdout=subprocess.DEVNULL, env=env)


class Server:
    """`python -m qmsflow.web --workers W` on a free port, for one store."""

    def __init__(self, repo: Path, database_url: str | None, workers: int):
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("QMS_", "SLACK_", "JIRA_"))}
        env["QMS_CONFIG"] = str(repo / "qms.yaml")
        if database_url:
            env["QMS_DATABASE_URL"] = database_url
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "qmsflow.web", "--port", str(self.port), "--workers", str(workers)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while True:
            assert self.proc.poll() is None, "the web app exited"
            try:
                if httpx.get(f"{self.base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the web app did not start within 120 s"
            time.sleep(0.2)

    def client(self) -> httpx.Client:
        """A signed-in client (ana, the demo's admin)."""
        client = httpx.Client(base_url=self.base, timeout=60)
        csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
        login = client.post(
            "/login", data={"username": "ana", "password": "demo-ana-password", "next": "/", "csrf": csrf}
        )
        assert login.status_code in (200, 303), login.text[:500]
        return client

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def pages_of(repo: Path, database_url: str | None) -> tuple[dict[str, str], int]:
    from qmsflow.context import open_context
    from qmsflow.store import trail
    from qmsflow.store.tables import DocumentRow

    saved = os.environ.pop("QMS_DATABASE_URL", None)
    if database_url:
        os.environ["QMS_DATABASE_URL"] = database_url
    try:
        ctx = open_context(repo / "qms.yaml")
        with ctx.db.read() as session:
            events = trail.count(session)
            some_doc = session.query(DocumentRow.id).order_by(DocumentRow.id.desc()).first()[0]
        ctx.close()
    finally:
        os.environ.pop("QMS_DATABASE_URL", None)
        if saved is not None:
            os.environ["QMS_DATABASE_URL"] = saved
    pages = {
        "baseline /ping": "/ping",
        "overview /": "/",
        "approvals inbox": "/approvals",
        "documents register": "/documents",
        "documents page 5": "/documents?page=5",
        f"document {some_doc}": f"/documents/{some_doc}",
        "CAPAs board": "/capas",
        "CAPAs overdue page 20": "/capas?page=20",
        "trail newest": "/trail",
        "trail deep (keyset)": f"/trail?before={events // 2}",
        "trail by actor": "/trail?actor=ana",
        "trail by record": "/trail?record=record:CAPA-2020-00001",
        "chart CAPA ageing": "/charts/capa-ageing.svg",
        "chart overdue": "/charts/overdue.svg",
        "chart approval lead time": "/charts/approval-lead-time.svg",
    }
    return pages, events


def sequential(
    servers: dict[str, Server], pages: dict[str, list[str]], labels: list[str], requests: int
) -> dict[str, dict[str, tuple[float, float, float]]]:
    """(p50, p95, first) in ms per store and page, one request after the other. With several stores the
    requests alternate between them (one to each store in turn, page by page), so every store's figures
    come from the same moments of a shared, noisy machine and their ratio is not the noise of two
    periods."""
    clients = {name: server.client() for name, server in servers.items()}
    results: dict[str, dict[str, tuple[float, float, float]]] = {name: {} for name in servers}
    for index, label in enumerate(labels):
        times: dict[str, list[float]] = {name: [] for name in servers}
        cold = {}
        for round_ in range(requests + 1):
            for name, client in clients.items():
                path = pages[name][index]
                start = time.perf_counter()
                response = client.get(path)
                elapsed = (time.perf_counter() - start) * 1000
                assert response.status_code == 200, f"{name} {path}: {response.status_code}"
                if round_ == 0:
                    cold[name] = elapsed
                else:
                    times[name].append(elapsed)
        for name, own in times.items():
            own.sort()
            p95 = own[min(len(own) - 1, int(round(len(own) * 0.95)) - 1)]
            results[name][label] = (statistics.median(own), p95, cold[name])
    for client in clients.values():
        client.close()
    return results


def throughput(server: Server, paths: list[str], clients: int, per_client: int) -> tuple[float, list[float], int]:
    """(requests per second, latencies in ms, errors) of ``clients`` concurrent clients, each requesting
    ``per_client`` pages in turn (each client starts at another page)."""
    signed_in = server.client()  # a sign-in keeps at most 3 sessions per user: the clients share this one's cookie
    sessions = [httpx.Client(base_url=server.base, timeout=60, cookies=signed_in.cookies) for _ in range(clients)]
    signed_in.close()
    latencies: list[float] = []
    errors = [0]
    seen: list[str] = []
    lock = threading.Lock()
    start_gate = threading.Barrier(clients + 1)

    def work(index: int) -> None:
        own: list[float] = []
        bad = 0
        start_gate.wait()
        for n in range(per_client):
            path = paths[(index + n) % len(paths)]
            begin = time.perf_counter()
            try:
                response = sessions[index].get(path)
                ok, problem = response.status_code == 200, f"{path}: HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                ok, problem = False, f"{path}: {exc.__class__.__name__}"
            if not ok and len(seen) < 5:
                seen.append(problem)
            own.append((time.perf_counter() - begin) * 1000)
            bad += not ok
        with lock:
            latencies.extend(own)
            errors[0] += bad

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    start_gate.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    for session in sessions:
        session.close()
    for problem in seen:
        print(f"  error: {problem}", file=sys.stderr)
    return clients * per_client / elapsed, sorted(latencies), errors[0]


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(round(len(values) * q)) - 1)]


def report(label: str, results: dict[str, tuple[float, float, float]]) -> None:
    base_p50 = results["baseline /ping"][0]
    print(f"\n{label}")
    print(f"{'page':32} {'p50 ms':>8} {'p95 ms':>8} {'first ms':>9} {'p50/baseline':>13}")
    for page, (p50, p95, cold) in results.items():
        print(f"{page:32} {p50:8.1f} {p95:8.1f} {cold:9.1f} {p50 / base_p50:13.1f}")
    worst = max((p95, page) for page, (_, p95, _) in results.items())
    print(f"worst p95: {worst[0]:.1f} ms ({worst[1]}); goal p95 <= 100 ms: {'met' if worst[0] <= 100 else 'NOT met'}")
    ratio, page = max((p50 / base_p50, page) for page, (p50, _, _) in results.items())
    print(f"worst p50/baseline: {ratio:.1f} ({page}); goal <= 10: {'met' if ratio <= 10 else 'NOT met'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, help="a compliance repo filled by `qms demo --scale large` (SQLite)")
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--pg-repo", type=Path, help="with --database postgresql: a repo whose large demo is in --pg-url (no build)"
    )
    parser.add_argument("--pg-url", help="the PostgreSQL store of --pg-repo (QMS_DATABASE_URL of its `qms demo`)")
    parser.add_argument("--concurrency", type=int, default=0, help="concurrent clients (0: no concurrency run)")
    parser.add_argument("--per-client", type=int, default=30, help="requests of each client in the concurrency run")
    parser.add_argument("--concurrency-rounds", type=int, default=3, help="alternating 1-client/N-client pairs")
    parser.add_argument("--workers", type=int, default=2, help="web app worker processes")
    parser.add_argument(
        "--scale", choices=["small", "large"], default="large", help="demo to build (small: a smoke run)"
    )
    args = parser.parse_args()
    os.environ.pop("QMS_DATABASE_URL", None)
    work = Path(tempfile.mkdtemp(prefix="qms-bench-dashboard-"))
    repo = args.repo
    if repo is None:
        repo = work / "large"
        build_demo(repo, None, args.scale)
    stores: dict[str, tuple[Path, str | None]] = {"sqlite": (repo, None)}
    schema = None
    if args.database == "postgresql" and args.pg_repo:
        if not args.pg_url:
            parser.error("--pg-repo needs --pg-url")
        stores["postgresql"] = (args.pg_repo, args.pg_url)
    elif args.database == "postgresql":
        import psycopg

        schema = f"qms_bench_dash_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        pg_url = f"{PG}{'&' if '?' in PG else '?'}options={quote(f'-csearch_path={schema}')}"
        stores["postgresql"] = (work / "large-pg", pg_url)
    try:
        if schema:
            build_demo(*stores["postgresql"], args.scale)
        servers: dict[str, Server] = {}
        pages: dict[str, list[str]] = {}
        events: dict[str, int] = {}
        try:
            for name, (store_repo, url) in stores.items():
                named, events[name] = pages_of(store_repo, url)
                labels = list(named)  # the same pages of the same demo (same seed) on every store
                pages[name] = list(named.values())
                servers[name] = Server(store_repo, url, args.workers)
            measured = sequential(servers, pages, labels, args.requests)
        finally:
            for server in servers.values():
                server.stop()
        for name, results in measured.items():
            report(
                f"{name}: {events[name]:,} trail events; {args.requests} requests per page, sequential"
                f"{' (alternating with the other store)' if len(servers) > 1 else ''}, {args.workers} web worker(s)",
                results,
            )
        if "postgresql" in measured:
            print("\nPostgreSQL / SQLite, sequential p50 per page (goal <= 1.5 each)")
            worst = 0.0
            for (page, (p50, _, _)), sqlite_page in zip(measured["postgresql"].items(), measured["sqlite"].values()):
                ratio = p50 / sqlite_page[0]
                worst = max(worst, ratio)
                print(f"{page:32} {p50:8.1f} ms vs {sqlite_page[0]:8.1f} ms   {ratio:5.2f}")
            print(f"worst ratio {worst:.2f}: goal <= 1.5 {'met' if worst <= 1.5 else 'NOT met'}")
        if args.concurrency:
            store_repo, url = stores[args.database]
            pages, _ = pages_of(store_repo, url)
            paths = [p for label, p in pages.items() if label != "baseline /ping"]
            server = Server(store_repo, url, args.workers)
            ratios = []
            try:  # one client, then N, alternately: each pair measures the same period of the machine
                for round_ in range(args.concurrency_rounds):
                    one_rps, one_lat, one_errors = throughput(server, paths, 1, args.per_client * 2)
                    many_rps, many_lat, many_errors = throughput(server, paths, args.concurrency, args.per_client)
                    ratios.append((many_rps / one_rps, many_errors))
                    print(
                        f"\nconcurrency on {args.database}, {args.workers} web worker(s), every page in turn, "
                        f"round {round_ + 1}/{args.concurrency_rounds}:"
                    )
                    print(
                        f"  1 client : {one_rps:6.1f} req/s, p50 {pct(one_lat, 0.5):7.1f} ms, "
                        f"p95 {pct(one_lat, 0.95):7.1f} ms, {one_errors} error(s)"
                    )
                    print(
                        f"  {args.concurrency} clients: {many_rps:6.1f} req/s, p50 {pct(many_lat, 0.5):7.1f} ms, "
                        f"p95 {pct(many_lat, 0.95):7.1f} ms, {many_errors} error(s); ratio {many_rps / one_rps:.2f}"
                    )
            finally:
                server.stop()
            ratio = statistics.median(r for r, _ in ratios)
            errors = sum(e for _, e in ratios)
            met = ratio >= 1.5 and errors == 0
            print(
                f"throughput ratio, median of {len(ratios)} rounds: {ratio:.2f} "
                f"({', '.join(f'{r:.2f}' for r, _ in ratios)}); {errors} error(s); "
                f"goal >= 1.5 with 0 errors: {'met' if met else 'NOT met'}"
            )
    finally:
        if schema:
            import psycopg

            with psycopg.connect(PG, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
