"""CAPA ↔ Jira over real HTTP: the real `jira` client against the fake Jira on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fakes.jira import FakeJira
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from test_capa import FULL

from qmsflow.adapters import jira as jira_adapter
from qmsflow.context import QmsContext, open_context
from qmsflow.domain.approvals import Decision, Method
from qmsflow.services import approvals, capa, jira_sync
from qmsflow.services.delivery import handlers_for
from qmsflow.services.outbox import deliver_pending
from qmsflow.services.sync import sync_config
from qmsflow.store import UnitOfWork, trail
from qmsflow.store.tables import InboundEventRow, OutboxRow, RecordRow
from qmsflow.web.app import create_app

SECRET = "jira-webhook-secret"


@pytest.fixture
def world(repo, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[QmsContext, FakeJira]]:  # noqa: ANN001
    with FakeJira() as fake:
        config = repo / "qms.yaml"
        config.write_text(
            config.read_text().replace(
                "retention:", f"integrations:\n  jira: {{url: '{fake.url}', project: QMS}}\nretention:", 1
            )
        )
        monkeypatch.delenv("QMS_DATABASE_URL", raising=False)
        monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
        monkeypatch.setenv("JIRA_EMAIL", fake.email if hasattr(fake, "email") else "qms@example.com")
        monkeypatch.setenv("JIRA_API_TOKEN", "jira-token")
        monkeypatch.setenv("JIRA_WEBHOOK_SECRET", SECRET)
        ctx = open_context(config, migrate=True)
        with UnitOfWork(ctx.db, "qmsflow") as uow:
            sync_config(uow, ctx.config, ctx.root)
            uow.commit()
        yield ctx, fake
        ctx.close()


def deliver(ctx: QmsContext, later: float = 0):  # noqa: ANN201
    return deliver_pending(ctx.db, handlers_for(ctx.config), now=datetime.now(UTC) + timedelta(seconds=later))


def open_one(ctx: QmsContext, title: str = "Label drift in release 4.2") -> str:
    with UnitOfWork(ctx.db, "dev") as uow:
        row = capa.open_capa(uow, ctx.config, title=title, source="release", owner="dev")
        uow.commit()
        return row.id


def advance(ctx: QmsContext, capa_id: str, target: str, fields: dict | None = None) -> dict:
    with UnitOfWork(ctx.db, "dev") as uow:
        out = capa.advance(uow, ctx.config, capa_id, target, FULL[target] if fields is None else fields)
        uow.commit()
        return out


def sign(ctx: QmsContext, request_id: str) -> None:
    with UnitOfWork(ctx.db, "ana") as uow:
        approvals.decide(uow, ctx.config, request_id, "ana", Decision.APPROVE, None, Method.CLI, claimed="ana")


def issue_of(fake: FakeJira, capa_id: str) -> dict:
    [issue] = [i for i in fake.issues.values() if f"qms-{capa_id}" in i["fields"]["labels"]]
    return issue


def to_stage(ctx: QmsContext, capa_id: str, stage: str) -> None:
    order = ["containment", "root_cause", "action_plan", "implementation", "effectiveness_check", "closed"]
    for target in order[: order.index(stage) + 1]:
        result = advance(ctx, capa_id, target)
        if "awaiting" in result:
            sign(ctx, result["awaiting"])


def stage(ctx: QmsContext, capa_id: str) -> str:
    with ctx.db.read() as s:
        return s.get(RecordRow, capa_id).status


def webhook(
    ctx: QmsContext,
    fake: FakeJira,
    key: str,
    to_status: str,
    identifier: str,
    secret: str = SECRET,
    body: bytes | None = None,
):  # noqa: ANN201
    payload = body if body is not None else json.dumps(fake.webhook_payload(key, to_status=to_status)).encode()
    client = TestClient(create_app(ctx))
    return client.post(
        "/jira/webhook",
        content=payload,
        headers={
            "Content-Type": "application/json",
            "X-Hub-Signature": FakeJira.sign(payload, secret),
            "X-Atlassian-Webhook-Identifier": identifier,
        },
    )


def test_capa_lifecycle_is_mirrored_in_jira_through_signed_closure(world: tuple) -> None:
    ctx, fake = world
    capa_id = open_one(ctx)
    assert len(deliver(ctx).sent) == 1
    issue = issue_of(fake, capa_id)
    assert issue["fields"]["summary"].startswith(capa_id) and "qms" in issue["fields"]["labels"]
    assert [link["globalId"] for link in issue["remote_links"]] == [f"qmsflow:{capa_id}"]
    to_stage(ctx, capa_id, "closed")
    report = deliver(ctx)
    assert report.failed == [], report.failed
    assert stage(ctx, capa_id) == "closed"
    assert issue_of(fake, capa_id)["fields"]["status"] == "Done"


def test_allowed_jira_transition_moves_the_qms_stage(world: tuple) -> None:
    ctx, fake = world
    capa_id = open_one(ctx)
    to_stage(ctx, capa_id, "action_plan")
    deliver(ctx)
    key = issue_of(fake, capa_id)["key"]
    assert issue_of(fake, capa_id)["fields"]["status"] == "To Do"
    fake.set_status(key, "In Progress")  # someone starts the approved plan in Jira
    response = webhook(ctx, fake, key, "In Progress", "wh-1")
    assert response.status_code == 200 and response.json()["outcome"] == "applied"
    assert stage(ctx, capa_id) == "implementation"


def test_refused_jira_done_is_explained_reverted_and_recorded(world: tuple) -> None:
    ctx, fake = world
    capa_id = open_one(ctx)
    to_stage(ctx, capa_id, "implementation")
    deliver(ctx)
    key = issue_of(fake, capa_id)["key"]
    fake.set_status(key, "Done")  # closing in Jira without an effectiveness check
    assert webhook(ctx, fake, key, "Done", "wh-2").json()["outcome"] == "refused"
    assert stage(ctx, capa_id) == "implementation"
    issue = issue_of(fake, capa_id)
    assert issue["fields"]["status"] == "In Progress"  # reverted
    assert "qmsflow refused the move to 'Done'" in issue["comments"][-1]["body"]
    with ctx.db.read() as s:
        refused = [e for e in trail.events_for(s, f"record:{capa_id}") if e.action == "capa.jira-transition-refused"]
    assert len(refused) == 1 and refused[0].actor == "jira"


def test_reconciliation_converges_with_the_webhook(world: tuple) -> None:
    ctx, fake = world
    capa_id = open_one(ctx)
    to_stage(ctx, capa_id, "action_plan")
    deliver(ctx)
    settings = jira_adapter.settings(ctx.config)
    adapter = jira_adapter.JiraAdapter(jira_adapter.make_client(settings), settings)
    before = len(fake.calls)
    quiet = jira_sync.reconcile(ctx, adapter)
    assert quiet.outcomes == {} and len(fake.calls) - before == 1  # a cycle with no change: one call
    fake.set_status(issue_of(fake, capa_id)["key"], "In Progress")
    report = jira_sync.reconcile(ctx, adapter, now=datetime.now(UTC) + timedelta(minutes=2))
    assert report.outcomes == {capa_id: "applied"} and stage(ctx, capa_id) == "implementation"


def test_webhook_refusals(world: tuple) -> None:
    ctx, fake = world
    capa_id = open_one(ctx)
    deliver(ctx)
    key = issue_of(fake, capa_id)["key"]
    assert webhook(ctx, fake, key, "Done", "wh-3", secret="wrong").status_code == 401
    assert webhook(ctx, fake, key, "Done", "wh-4", body=b"{not json").status_code == 400
    assert webhook(ctx, fake, key, "Done", "wh-5", body=b"[1, 2]").status_code == 400
    body = json.dumps(fake.webhook_payload(key, to_status="Done")).encode()
    first = webhook(ctx, fake, key, "Done", "wh-6", body=body)
    again = webhook(ctx, fake, key, "Done", "wh-6", body=body)  # Jira's retry: the same body
    assert first.json()["outcome"] == "refused" and again.json()["outcome"] == "repeat ignored"
    with ctx.db.read() as s:
        refused = [e for e in trail.events_for(s, f"record:{capa_id}") if e.action == "capa.jira-transition-refused"]
    assert len(refused) == 1


def test_lost_create_response_makes_exactly_one_issue(world: tuple) -> None:
    ctx, fake = world
    fake.lose_response_next(path_prefix="/rest/api/2/issue", method="POST")
    capa_id = open_one(ctx)
    first = deliver(ctx)
    assert first.sent == [] and len(first.failed) == 1
    assert len([i for i in fake.issues.values() if f"qms-{capa_id}" in i["fields"]["labels"]]) == 1
    second = deliver(ctx, later=600)
    assert len(second.sent) == 1
    assert len([i for i in fake.issues.values() if f"qms-{capa_id}" in i["fields"]["labels"]]) == 1
    with ctx.db.read() as s:
        assert s.scalars(select(OutboxRow).where(OutboxRow.key == f"jira:{capa_id}:create")).one().result["found"]


def test_jira_down_then_everything_delivered_in_order(world: tuple) -> None:
    ctx, fake = world
    fake.fail_next(status=503, times=50)
    capa_id = open_one(ctx)
    advance(ctx, capa_id, "containment")
    assert deliver(ctx).sent == []  # create fails; the transition waits behind it
    for hour in range(1, 61):
        report = deliver(ctx, later=3600 * hour)
        if not report.failed and not report.waiting:
            break
    assert issue_of(fake, capa_id)["fields"]["status"] == "In Progress"
    posts = [c.path for c in fake.calls if c.method == "POST" and c.status in (200, 201, 204)]
    assert posts.index("/rest/api/2/issue") < max(i for i, p in enumerate(posts) if p.endswith("/transitions"))


def test_rate_limit_waits_retry_after(world: tuple) -> None:
    ctx, fake = world
    fake.fail_next(status=429, times=1, retry_after=7)
    capa_id = open_one(ctx)
    started = datetime.now(UTC)
    report = deliver(ctx)
    assert report.sent == [] and "429" in report.failed[0][1]
    with ctx.db.read() as s:
        row = s.scalars(select(OutboxRow).where(OutboxRow.key == f"jira:{capa_id}:create")).one()
    assert timedelta(seconds=6) <= row.next_attempt_at - started <= timedelta(seconds=9)
    assert len(deliver(ctx, later=10).sent) == 1


def test_sync_calls_scale_with_changes(world: tuple) -> None:
    ctx, fake = world
    ids = [open_one(ctx, f"CAPA number {n}") for n in range(5)]
    deliver(ctx)
    before = len(fake.calls)
    for capa_id in ids[:3]:
        advance(ctx, capa_id, "containment")
    deliver(ctx)
    # k = 3 changes: at most k + 1 calls (one transitions lookup, then one call per change)
    assert len(fake.calls) - before <= 4


# ---------------------------------------------------------------- replay (issue 11 point 5)


def jira_events(ctx: QmsContext, capa_id: str) -> list[str]:
    with ctx.db.read() as s:
        return [e.action for e in trail.events_for(s, f"record:{capa_id}") if e.actor == "jira"]


@pytest.mark.parametrize("header", ["removed", "changed", "same"])
def test_a_captured_delivery_replayed_with_any_identifier_is_ignored(world: tuple, header: str) -> None:
    ctx, fake = world
    capa_id = open_one(ctx)
    to_stage(ctx, capa_id, "implementation")
    deliver(ctx)
    key = issue_of(fake, capa_id)["key"]
    fake.set_status(key, "Done")
    captured = json.dumps(fake.webhook_payload(key, to_status="Done")).encode()  # what an eavesdropper keeps
    assert webhook(ctx, fake, key, "Done", "wh-original", body=captured).json()["outcome"] == "refused"
    recorded = jira_events(ctx, capa_id)
    client = TestClient(create_app(ctx))
    headers = {"Content-Type": "application/json", "X-Hub-Signature": FakeJira.sign(captured, SECRET)}
    if header != "removed":
        headers["X-Atlassian-Webhook-Identifier"] = "wh-original" if header == "same" else "wh-forged-123"
    replay = client.post("/jira/webhook", content=captured, headers=headers)
    assert replay.status_code == 200 and replay.json()["outcome"] == "repeat ignored"
    assert jira_events(ctx, capa_id) == recorded  # nothing recorded twice
    with ctx.db.read() as s:
        assert s.scalar(select(func.count()).select_from(InboundEventRow)) == 1


def test_a_delivery_outside_its_window_is_ignored_and_a_forged_time_fails_the_signature(world: tuple) -> None:
    ctx, fake = world
    capa_id = open_one(ctx)
    to_stage(ctx, capa_id, "action_plan")
    deliver(ctx)
    key = issue_of(fake, capa_id)["key"]
    fake.set_status(key, "In Progress")
    payload = fake.webhook_payload(key, to_status="In Progress")
    old = dict(payload, timestamp=payload["timestamp"] - 61 * 60 * 1000)  # captured 61 minutes ago
    stale = webhook(ctx, fake, key, "In Progress", "wh-old", body=json.dumps(old).encode())
    assert stale.status_code == 200 and stale.json()["outcome"].startswith("stale delivery ignored")
    assert stage(ctx, capa_id) == "action_plan" and jira_events(ctx, capa_id) == []
    future = dict(payload, timestamp=payload["timestamp"] + 10 * 60 * 1000)
    assert webhook(ctx, fake, key, "In Progress", "wh-f", body=json.dumps(future).encode()).status_code == 400
    untimed = {k: v for k, v in payload.items() if k != "timestamp"}
    response = webhook(ctx, fake, key, "In Progress", "wh-u", body=json.dumps(untimed).encode())
    assert response.status_code == 400 and "no timestamp" in response.json()["error"]
    # moving the timestamp of a captured body forward breaks its signature
    client = TestClient(create_app(ctx))
    signed = json.dumps(old).encode()
    forged = json.dumps(dict(old, timestamp=payload["timestamp"])).encode()
    headers = {"Content-Type": "application/json", "X-Hub-Signature": FakeJira.sign(signed, SECRET)}
    assert client.post("/jira/webhook", content=forged, headers=headers).status_code == 401
    assert webhook(ctx, fake, key, "In Progress", "wh-ok", body=json.dumps(payload).encode()).json()["outcome"] == (
        "applied"
    )
    assert stage(ctx, capa_id) == "implementation"


@pytest.fixture
def jira_store(repo, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[QmsContext]:  # noqa: ANN001
    config = repo / "qms.yaml"
    config.write_text(
        config.read_text().replace(
            "retention:", "integrations:\n  jira: {url: 'http://127.0.0.1:9', project: QMS}\nretention:", 1
        )
    )
    monkeypatch.setenv("QMS_DATABASE_URL", db_url)
    monkeypatch.setenv("JIRA_EMAIL", "qms@example.com")
    monkeypatch.setenv("JIRA_API_TOKEN", "t")
    monkeypatch.setenv("JIRA_WEBHOOK_SECRET", SECRET)
    ctx = open_context(config, migrate=True)
    yield ctx
    ctx.close()


def test_the_same_delivery_twice_at_once_applies_once(jira_store: QmsContext) -> None:
    """Two copies racing (READ COMMITTED on PostgreSQL): the unique digest lets exactly one through."""
    from concurrent.futures import ThreadPoolExecutor

    payload = {
        "timestamp": int(datetime.now(UTC).timestamp() * 1000),
        "webhookEvent": "jira:issue_updated",
        "issue": {"key": "QMS-1", "fields": {"labels": ["qms", "qms-CAPA-2026-9999"], "status": {"name": "Done"}}},
    }
    body = json.dumps(payload).encode()
    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(lambda _: jira_sync.handle_webhook(jira_store, body, payload), range(4)))
    assert sorted(outcomes) == ["repeat ignored"] * 3 + ["unknown record CAPA-2026-9999"]
    with jira_store.db.read() as s:
        assert s.scalar(select(func.count()).select_from(InboundEventRow)) == 1


def test_digests_older_than_twice_the_window_are_pruned(jira_store: QmsContext) -> None:
    now = datetime.now(UTC)

    def deliver_at(at: datetime) -> str:
        payload = {"timestamp": int(at.timestamp() * 1000), "issue": {"fields": {"labels": []}}}
        return jira_sync.handle_webhook(jira_store, json.dumps(payload).encode(), payload, now=at)

    assert deliver_at(now - timedelta(hours=3)) == "not a qmsflow status change"
    assert deliver_at(now) == "not a qmsflow status change"
    with jira_store.db.read() as s:
        assert s.scalar(select(func.count()).select_from(InboundEventRow)) == 1  # the 3-hour-old one is gone
