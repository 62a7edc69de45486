"""CAPA ↔ Jira over real HTTP: the real `jira` client against the fake Jira on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fakes.jira import FakeJira
from fastapi.testclient import TestClient
from sqlalchemy import select
from test_capa import FULL

from qmsflow.adapters import jira as jira_adapter
from qmsflow.context import QmsContext, open_context
from qmsflow.domain.approvals import Decision, Method
from qmsflow.services import approvals, capa, jira_sync
from qmsflow.services.delivery import handlers_for
from qmsflow.services.outbox import deliver_pending
from qmsflow.services.sync import sync_config
from qmsflow.store import UnitOfWork, trail
from qmsflow.store.tables import OutboxRow, RecordRow
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
    first = webhook(ctx, fake, key, "Done", "wh-6")
    again = webhook(ctx, fake, key, "Done", "wh-6")
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
