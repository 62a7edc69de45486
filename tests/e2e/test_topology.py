"""The production topology, end to end, once (docs/operations.md, docs/adr/0016-production-topology.md).

A Prefect server on PostgreSQL (two API replicas without services behind one round-robin URL, one
background-services process, Redis messaging), ``qms deploy`` to a process work pool, ``prefect
worker`` processes, the web app, and the records store on PostgreSQL. Reviews are submitted and
approved over the web app's API with personal tokens, as CI or a person would.

One module fixture for every test here (the topology takes ~1 min to start on 2 cores): the tests
run in order and build on each other's records.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from conftest import PG_URL, require_pg
from identityutil import token
from sqlalchemy import func, select
from topoutil import AUTH, Topology, add_burst_documents, burst, burst_counts, completions, prefect_client, wait_states

from qmsflow.scaffold import scaffold
from qmsflow.store.db import Database
from qmsflow.store.tables import ApprovalRequestRow, DocumentVersionRow, SignatureRow, TrailEventRow

pytestmark = [pytest.mark.postgres, pytest.mark.prefect, pytest.mark.slow]

BURST = 50


class World:
    def __init__(self, topo: Topology, db: Database):
        self.topo, self.db = topo, db
        self.tokens = {"ana": token(db, "ana", role="admin"), "ben": token(db, "ben")}

    def api(self, method: str, path: str, who: str, **kw) -> httpx.Response:  # noqa: ANN003
        return httpx.request(
            method,
            f"{self.topo.web_url}{path}",
            headers={"Authorization": f"Bearer {self.tokens[who]}"},
            timeout=120,
            **kw,
        )

    def submit(self, doc: str) -> str:
        response = self.api("POST", f"/api/documents/{doc}/submissions", "ana", json={"comment": "topology"})
        assert response.status_code == 201, response.text
        run_id = response.json()["flow_run_id"]
        assert run_id, response.text  # the review run was created on the shared Prefect API
        return run_id

    def request_of(self, run_id: str, timeout: float = 300) -> ApprovalRequestRow:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.db.read() as s:
                row = s.scalars(select(ApprovalRequestRow).where(ApprovalRequestRow.flow_run_id == run_id)).first()
            if row is not None:
                return row
            time.sleep(0.5)
        raise AssertionError(f"no approval request for run {run_id}\n{self.topo.log_tail()}")

    def approve(self, request_id: str) -> httpx.Response:
        return self.api("POST", f"/api/approvals/{request_id}/decision", "ben", json={"decision": "approve"})

    def wait_states(self, run_ids: list[str], wanted: str, timeout: float) -> None:
        wait_states(self.topo.api_url, run_ids, wanted, timeout, self.topo.log_tail)

    def completions(self, run_id: str) -> int:
        with prefect_client() as client:
            return completions(self.topo.api_url, run_id, client)

    def count(self, model, *where) -> int:  # noqa: ANN001
        with self.db.read() as s:
            return s.scalar(select(func.count()).select_from(model).where(*where))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    require_pg()
    import psycopg

    repo = tmp_path_factory.mktemp("topology") / "repo"
    scaffold(repo, org_name="Topology Test GmbH", git=True)
    docs = add_burst_documents(repo, BURST)
    schema = f"qms_topo_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in PG_URL else "?"
    records_url = f"{PG_URL}{sep}options={quote(f'-csearch_path={schema}')}"
    topo = Topology(repo, records_url, replicas=2)
    db = None
    try:
        topo.start()
        topo.start_worker("worker-1")
        db = Database(records_url)
        world = World(topo, db)
        world.schema = schema  # type: ignore[attr-defined]
        world.docs = docs  # type: ignore[attr-defined]
        yield world
    finally:
        topo.stop()
        if db is not None:
            db.dispose()
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.mark.timeout(900)  # includes starting the topology
def test_deploy_registers_every_deployment_in_the_process_pool_idempotently(world: World) -> None:
    topo = world.topo
    again = topo.qms_ok("deploy", "--pool", topo.pool, "--pool-limit", "4")
    assert "work pool qms-test (exists)" in again and "12 deployment(s) registered" in again
    # the API requires its credential, as in production: an outsider gets 401
    assert httpx.get(f"{topo.api_url}/work_pools/{topo.pool}", timeout=30).status_code == 401
    pool = httpx.get(f"{topo.api_url}/work_pools/{topo.pool}", timeout=30, auth=AUTH).json()
    assert pool["type"] == "process" and pool["concurrency_limit"] == 4
    deployments = httpx.post(f"{topo.api_url}/deployments/filter", json={}, timeout=30, auth=AUTH).json()
    by_name = {d["name"] + "@" + d["entrypoint"]: d for d in deployments}
    assert len(deployments) == 12, sorted(by_name)
    assert {d["work_pool_name"] for d in deployments} == {topo.pool}
    assert all(not d["entrypoint"].count(":") for d in deployments)  # module paths: nothing to pull
    scan = by_name["daily@flows.document_review_scan.document_review_due_scan"]
    assert [s["schedule"]["cron"] for s in scan["schedules"]] == ["0 6 * * *"]
    assert scan["global_concurrency_limit"]["limit"] == 1
    review = by_name["on-demand@flows.document_review.document_review"]
    assert review["schedules"] == [] and review["global_concurrency_limit"] is None
    jira = by_name["every-minute@flows.capa.jira_sync"]
    assert jira["schedules"] == []  # Jira is off here: no schedule
    refused = topo.qms("deploy", "--limit", "nope/x=1")
    assert refused.returncode == 1 and "no deployment named nope/x" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    unreachable = topo.qms("deploy", env={"PREFECT_API_URL": "http://127.0.0.1:9/api"})
    assert unreachable.returncode == 1 and "http://127.0.0.1:9/api" in unreachable.stderr, unreachable.stderr
    assert "Traceback" not in unreachable.stderr


@pytest.mark.timeout(900)
def test_kill_9_of_the_worker_while_a_review_is_suspended(world: World) -> None:
    topo = world.topo
    path = topo.repo / "procedures" / "SOP-DOC-001-document-control.md"
    path.write_text(path.read_text() + "\nReviewed on the production topology.\n")
    subprocess.run(["git", "-C", str(topo.repo), "commit", "-qam", "edit"], check=True)
    run_id = world.submit("SOP-DOC-001")
    request = world.request_of(run_id)
    world.wait_states([run_id], "PAUSED", timeout=300)
    topo.kill9("worker-1")  # no process holds the suspended run; the worker is simply gone
    topo.start_worker("worker-2")
    response = world.approve(request.id)
    assert response.status_code == 200, response.text
    world.wait_states([run_id], "COMPLETED", timeout=240)
    assert world.completions(run_id) == 1
    with world.db.read() as s:
        version = s.scalars(
            select(DocumentVersionRow).where(
                DocumentVersionRow.document_id == "SOP-DOC-001", DocumentVersionRow.version == "1.0"
            )
        ).one()
    assert version.status == "effective"
    assert world.count(ApprovalRequestRow, ApprovalRequestRow.flow_run_id == run_id) == 1
    assert world.count(SignatureRow, SignatureRow.request_id == request.id) == 1
    ref = "document-version:SOP-DOC-001@1.0"
    assert (
        world.count(TrailEventRow, TrailEventRow.action == "document-version.effective", TrailEventRow.record == ref)
        == 1
    )
    assert (
        world.count(TrailEventRow, TrailEventRow.action == "document-version.rendered", TrailEventRow.record == ref)
        <= 1
    )


@pytest.mark.timeout(1800)
def test_fifty_reviews_submitted_and_approved_at_once_through_both_api_replicas(world: World) -> None:
    topo, docs = world.topo, world.docs  # type: ignore[attr-defined]
    resumes_before = topo.proxy.requests_to("POST", "/resume")
    elapsed, run_ids, request_ids, errors = burst(
        topo.web_url, topo.api_url, world.db, world.tokens["ana"], world.tokens["ben"], docs, logs=topo.log_tail
    )
    print(f"\n{BURST}-review burst on the topology: {elapsed:.1f} s from the first submission to the last completion")
    assert errors == [] and len(set(run_ids)) == BURST
    assert burst_counts(topo.api_url, world.db, docs, run_ids, request_ids) == {
        "effective versions": BURST,
        "versions": BURST,  # no duplicate version
        "signatures": BURST,
        "approval requests": BURST,
        "effective events": BURST,
        "runs completed once": BURST,
        "runs completed more than once": 0,
    }
    # every resume went through the one URL, and round robin sent resumes to both replicas
    resumes = [after - before for after, before in zip(topo.proxy.requests_to("POST", "/resume"), resumes_before)]
    assert sum(resumes) >= BURST and min(resumes) >= 1, resumes


def test_capa_opened_by_cli_is_escalated_by_the_worker(world: World) -> None:
    """The CAPA procedure on the topology: opened with the CLI on the PostgreSQL store, overdue, and the
    capa-escalation deployment run by the pool's worker tells its owner once."""
    from datetime import date, timedelta

    from qmsflow.services.records import update_record
    from qmsflow.store.tables import RecordRow
    from qmsflow.store.uow import UnitOfWork

    topo = world.topo
    opened = topo.qms(
        "capa", "open", "--title", "Topology CAPA", "--source", "incident", "--owner", "chloe",
        env={"QMS_TOKEN": world.tokens["ana"]},
    )  # fmt: skip
    assert opened.returncode == 0, opened.stderr
    with world.db.read() as s:
        capa_id = s.scalars(select(RecordRow.id).where(RecordRow.kind == "capa")).one()
    with UnitOfWork(world.db, "test-setup") as uow:  # ten days overdue, recorded like any change
        update_record(uow, uow.session.get(RecordRow, capa_id), "advanced", due_date=date.today() - timedelta(days=10))
        uow.commit()
    with prefect_client() as client:
        deployment = client.get(f"{topo.api_url}/deployments/name/capa-escalation/daily").json()
        run = client.post(f"{topo.api_url}/deployments/{deployment['id']}/create_flow_run", json={}).json()
    world.wait_states([run["id"]], "COMPLETED", timeout=300)
    escalated = world.count(
        TrailEventRow, TrailEventRow.record == f"record:{capa_id}", TrailEventRow.action == "capa.escalated"
    )
    assert escalated >= 1, f"no escalation recorded\n{topo.log_tail()}"


def test_restore_drill_dump_drop_restore_verify(world: World, tmp_path: Path) -> None:
    """docs/operations.md 'Restore drill': anchor, pg_dump both databases, drop, restore, qms verify OK."""
    import psycopg

    topo, schema = world.topo, world.schema  # type: ignore[attr-defined]
    topo.qms_ok("anchor")
    assert topo.qms("verify").returncode == 0  # the backup is taken of a store that verifies
    records_dump, prefect_dump = tmp_path / "records.dump", tmp_path / "prefect.dump"
    base = PG_URL.rsplit("/", 1)[0]
    subprocess.run(["pg_dump", "-Fc", "-n", schema, "-f", str(records_dump), PG_URL], check=True, timeout=300)
    subprocess.run(["pg_dump", "-Fc", "-f", str(prefect_dump), f"{base}/{topo.prefect_db}"], check=True, timeout=300)
    world.db.dispose()
    for name in ("web", "worker-2"):  # a restore stops what writes to the store first
        topo.stop_one(name)
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    broken = topo.qms("verify")
    assert broken.returncode != 0  # the store is gone
    subprocess.run(["pg_restore", "-d", PG_URL, str(records_dump)], check=True, timeout=300)
    done = topo.qms("verify")
    assert done.returncode == 0, done.stdout + done.stderr
    # the Prefect database restores into a new database the same way (the server is pointed at it)
    restored = f"qms_prefect_r_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{restored}"')
    try:
        subprocess.run(["pg_restore", "-d", f"{base}/{restored}", str(prefect_dump)], check=True, timeout=300)
        with psycopg.connect(f"{base}/{restored}") as conn:
            assert conn.execute("SELECT count(*) FROM deployment").fetchone()[0] == 12
            assert conn.execute("SELECT count(*) FROM flow_run").fetchone()[0] >= BURST + 1
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{restored}" WITH (FORCE)')
