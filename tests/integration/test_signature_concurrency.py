"""Exactly one decision per request, whatever the concurrency and the database.

20 sign attempts at once through the approvals API and through the dashboard, on SQLite and on
PostgreSQL (READ COMMITTED), at a request that needs one signature: one signature, one decision, every
other attempt answered "already decided" (409). The same for CAPA stage moves and a CAPA's signed step.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import identityutil
import pytest
import uvicorn
from conftest import TEST_SUBJECT, require_pg
from sqlalchemy import func, select
from stackutil import free_port

from qmsflow.context import QmsContext, open_context
from qmsflow.domain.errors import DomainError
from qmsflow.services import approvals, capa, contents
from qmsflow.services.sync import sync_config
from qmsflow.store import UnitOfWork
from qmsflow.store.tables import ApprovalRequestRow, RecordRow, SignatureRow, TrailEventRow
from qmsflow.web.app import create_app

ATTEMPTS = 20


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, repo: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[QmsContext]:
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    if request.param == "postgresql":
        require_pg()
        monkeypatch.setenv("QMS_DATABASE_URL", request.getfixturevalue("pg_schema_url"))
    else:
        monkeypatch.delenv("QMS_DATABASE_URL", raising=False)
    ctx = open_context(repo / "qms.yaml", migrate=True)
    with UnitOfWork(ctx.db, "qmsflow") as uow:
        sync_config(uow, ctx.config, ctx.root)
        uow.commit()
    yield ctx
    ctx.close()


@pytest.fixture
def server(store: QmsContext) -> Iterator[str]:
    """The web app on a real port: concurrent requests are served by its thread pool, as in production."""
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(store), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=30)


def open_request(ctx: QmsContext, key: str = "c1") -> str:
    with UnitOfWork(ctx.db, "chloe") as uow:
        row, _ = approvals.open_request(
            uow,
            ctx.config,
            key=key,
            subject=TEST_SUBJECT,
            title="T-1",
            content_sha256=contents.store(uow, b"the text", contents.MARKDOWN),
            approvers=["ana", "ben"],
            required=1,
            meaning="approves T-1",
            author="chloe",
        )
        uow.commit()
        return row.id


def at_once(calls: list[Callable[[], object]]) -> list[object]:
    """Run the calls in parallel threads released together by a barrier."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], object]) -> object:
        barrier.wait()
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - the outcome of each attempt is what is asserted
            return exc

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def decisions_of(ctx: QmsContext, request_id: str) -> tuple[int, int, str]:
    with ctx.db.read() as s:
        signatures = s.scalar(
            select(func.count()).select_from(SignatureRow).where(SignatureRow.request_id == request_id)
        )
        decided = s.scalar(
            select(func.count())
            .select_from(TrailEventRow)
            .where(TrailEventRow.record == f"approval:{request_id}", TrailEventRow.action == "approval.decided")
        )
        status = s.get(ApprovalRequestRow, request_id).status
    return signatures, decided, status


def api_post(base: str, request_id: str, token: str, decision: str) -> Callable[[], int]:
    body = {"decision": decision, "comment": None if decision == "approve" else "not like this"}
    return lambda: (
        httpx.post(
            f"{base}/api/approvals/{request_id}/decision",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        ).status_code
    )


def token_for(ctx: QmsContext, person: str) -> str:
    return identityutil.token(ctx.db, person)


def test_twenty_api_attempts_by_one_signer_store_one_signature(store: QmsContext, server: str) -> None:
    request_id = open_request(store)
    token = token_for(store, "ana")
    codes = at_once([api_post(server, request_id, token, "approve") for _ in range(ATTEMPTS)])
    assert sorted(codes) == [200] + [409] * (ATTEMPTS - 1), codes
    assert decisions_of(store, request_id) == (1, 1, "approved")


def test_two_signers_with_opposite_decisions_make_one_decision(store: QmsContext, server: str) -> None:
    request_id = open_request(store)
    ana, ben = token_for(store, "ana"), token_for(store, "ben")
    calls = [api_post(server, request_id, ana, "approve") for _ in range(ATTEMPTS // 2)]
    calls += [api_post(server, request_id, ben, "reject") for _ in range(ATTEMPTS // 2)]
    codes = at_once(calls)
    assert codes.count(200) == 1 and codes.count(409) == ATTEMPTS - 1, codes
    signatures, decided, status = decisions_of(store, request_id)
    assert (signatures, decided) == (1, 1) and status in ("approved", "rejected")


def test_twenty_dashboard_posts_store_one_signature(store: QmsContext, server: str) -> None:
    request_id = open_request(store)
    for username in ("ana", "ben"):
        identityutil.account(store.db, username)
    sessions = {}
    for username in ("ana", "ben"):
        client = httpx.Client(base_url=server, timeout=60)
        form = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
        data = {"username": username, "password": f"{username}-password-123", "next": "/", "csrf": form}
        client.post("/login", data=data)
        page = client.get(f"/approvals/{request_id}").text
        sessions[username] = (client, re.search(r'name="csrf" value="([^"]+)"', page).group(1))

    def sign(username: str, decision: str) -> Callable[[], int]:
        client, csrf = sessions[username]
        data = {"decision": decision, "password": f"{username}-password-123", "csrf": csrf, "comment": "no"}
        return lambda: client.post(f"/approvals/{request_id}", data=data, follow_redirects=False).status_code

    codes = at_once([sign("ana", "approve") for _ in range(10)] + [sign("ben", "reject") for _ in range(10)])
    # one signature; every other attempt is refused: already decided (409), or turned away before its
    # password is checked because the password checks are throttled (429/503: argon2 is bounded)
    assert codes.count(303) == 1 and all(c in (409, 429, 503) for c in codes if c != 303), codes
    signatures, decided, _ = decisions_of(store, request_id)
    assert (signatures, decided) == (1, 1)
    for client, _ in sessions.values():
        client.close()


def test_a_capa_stage_move_happens_once(store: QmsContext) -> None:
    with UnitOfWork(store.db, "ana") as uow:
        capa_id = capa.open_capa(uow, store.config, title="Drift", source="pms", owner="dev").id
        uow.commit()

    def move() -> str:
        with UnitOfWork(store.db, "dev") as uow:
            result = capa.advance(uow, store.config, capa_id, "containment", {"correction": "rolled back"})
            uow.commit()
            return result["stage"]

    outcomes = at_once([move for _ in range(ATTEMPTS)])
    assert [o for o in outcomes if o == "containment"] == ["containment"]
    assert all(
        isinstance(o, DomainError) and "cannot move to containment" in str(o) for o in outcomes if o != "containment"
    )
    with store.db.read() as s:
        moves = s.scalar(
            select(func.count())
            .select_from(TrailEventRow)
            .where(TrailEventRow.record == f"record:{capa_id}", TrailEventRow.action == "capa.advanced")
        )
        assert moves == 1 and s.get(RecordRow, capa_id).status == "containment"


def test_a_capa_signed_step_is_decided_and_applied_once(store: QmsContext, server: str) -> None:
    with UnitOfWork(store.db, "ana") as uow:
        capa_id = capa.open_capa(uow, store.config, title="Drift", source="pms", owner="dev").id
        for target, fields in (
            ("containment", {"correction": "rolled back"}),
            (
                "root_cause",
                {
                    "method": "5 whys",
                    "cause": "no alert",
                    "similar_cases": {"checked": True, "scope": "all alerts", "found": []},
                },
            ),
        ):
            capa.advance(uow, store.config, capa_id, target, fields)
        plan = {"actions": [{"what": "add alert", "owner": "dev", "due": "2027-01-31"}]}
        request_id = capa.advance(uow, store.config, capa_id, "action_plan", plan)["awaiting"]
        uow.commit()
    token = token_for(store, "ana")
    codes = at_once([api_post(server, request_id, token, "approve") for _ in range(ATTEMPTS)])
    assert sorted(codes) == [200] + [409] * (ATTEMPTS - 1), codes
    assert decisions_of(store, request_id) == (1, 1, "approved")
    with store.db.read() as s:
        entered = s.scalar(
            select(func.count())
            .select_from(TrailEventRow)
            .where(TrailEventRow.record == f"record:{capa_id}", TrailEventRow.action == "capa.advanced")
        )
        row = s.get(RecordRow, capa_id)
    assert row.status == "action_plan" and entered == 3  # containment, root cause, the signed plan: once


def test_the_api_answers_once_the_decision_is_committed_before_delivery(
    store: QmsContext, server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 10: resuming the run and delivering to Slack/Jira follow the answer; a delivery that hangs
    (an outage) does not hold the signer's answer, and the decision is already in the store."""
    request_id = open_request(store)
    token = token_for(store, "ana")
    delivering, release = threading.Event(), threading.Event()

    def hanging_delivery(ctx: QmsContext, result: approvals.DecisionResult) -> None:
        delivering.set()
        release.wait(60)

    monkeypatch.setattr(approvals, "after_decision", hanging_delivery)
    try:
        response = httpx.post(
            f"{server}/api/approvals/{request_id}/decision",
            json={"decision": "approve", "comment": None},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "approved"
        assert not release.is_set()  # answered while the delivery still hangs
        assert delivering.wait(30)  # and the delivery did start, after the answer
        assert decisions_of(store, request_id) == (1, 1, "approved")
    finally:
        release.set()
