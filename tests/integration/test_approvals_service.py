"""Approval services without Prefect: outbox delivery through the real slack_sdk to a fake Slack,
outages and rate limits, reminders and escalation, and the token-authenticated approvals API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fakes.slack import FakeSlack
from fastapi.testclient import TestClient
from identityutil import sign, token
from sqlalchemy import select

from qmsflow.context import QmsContext
from qmsflow.domain.approvals import AlreadyDecided, Decision, NotAuthorized
from qmsflow.services import approvals, contents
from qmsflow.services.delivery import deliver
from qmsflow.services.outbox import backlog
from qmsflow.services.signers import Credential
from qmsflow.services.sync import sync_config
from qmsflow.store import UnitOfWork, trail
from qmsflow.store.tables import ApprovalRequestRow, OutboxRow
from qmsflow.web.app import create_app

USERS = [
    {"id": "U0ANA0001", "email": "ana@example.com", "name": "ana"},
    {"id": "U0BEN0001", "email": "ben@example.com", "name": "ben"},
    {"id": "U0CHLOE01", "email": "chloe@example.com", "name": "chloe"},
]


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSlack]:
    with FakeSlack(users=USERS) as fake:
        monkeypatch.setenv("SLACK_BOT_TOKEN", fake.token)
        monkeypatch.setenv("QMS_SLACK_BASE_URL", fake.base_url)
        yield fake


@pytest.fixture
def synced(ctx: QmsContext) -> QmsContext:
    with UnitOfWork(ctx.db, "qmsflow") as uow:
        sync_config(uow, ctx.config, ctx.root)
        uow.commit()
    return ctx


def open_request(
    ctx: QmsContext, key: str = "k1", approvers: list[str] | None = None, author: str | None = "chloe"
) -> str:
    with UnitOfWork(ctx.db, author or "qmsflow") as uow:
        row, created = approvals.open_request(
            uow,
            ctx.config,
            key=key,
            subject="test-step:T-1@1",
            required=1,
            title="SOP-DES-001 v1.0",
            content_sha256=contents.store(uow, b"# SOP-DES-001\n\nThe text under review.\n", contents.MARKDOWN),
            approvers=approvers or ["ana", "ben"],
            meaning="approve SOP-DES-001 v1.0",
            author=author,
        )
        uow.commit()
        assert created
        return row.id


def outbox(ctx: QmsContext) -> list[OutboxRow]:
    with ctx.db.read() as s:
        return list(s.scalars(select(OutboxRow).order_by(OutboxRow.id)))


def test_request_is_idempotent_and_messages_each_approver(synced: QmsContext, slack: FakeSlack) -> None:
    request_id = open_request(synced)
    with UnitOfWork(synced.db, "chloe") as uow:
        again, created = approvals.open_request(
            uow,
            synced.config,
            key="k1",
            subject="x",
            title="x",
            content_sha256="cd" * 32,
            approvers=["ana"],
            meaning="x",
            author="chloe",
        )
        assert (again.id, created) == (request_id, False)
    report = deliver(synced.db, synced.config)
    assert len(report.sent) == 2
    channels = sorted(c.params["channel"] for c in slack.calls_to("chat.postMessage"))
    assert channels == sorted(FakeSlack.dm_channel_for(u) for u in ("U0ANA0001", "U0BEN0001"))
    assert [c.params["email"] for c in slack.calls_to("users.lookupByEmail")] == ["ana@example.com", "ben@example.com"]
    assert deliver(synced.db, synced.config).sent == []  # nothing twice


def test_slack_outage_delays_but_loses_nothing_and_keeps_order(synced: QmsContext, slack: FakeSlack) -> None:
    request_id = open_request(synced)
    slack.go_down()
    report = deliver(synced.db, synced.config)
    assert report.sent == [] and len(report.failed) == 2
    assert backlog(synced.db)["slack"]["pending"] == 2
    with UnitOfWork(synced.db, "ana") as uow:  # decided while Slack is down: the update queues behind the post
        sign(uow, synced.config, request_id, "ana", Decision.APPROVE, None)
    slack.come_up()
    later = datetime.now(UTC) + timedelta(minutes=5)
    from qmsflow.services.delivery import handlers_for
    from qmsflow.services.outbox import deliver_pending

    report = deliver_pending(synced.db, handlers_for(synced.db, synced.config), now=later)
    assert len(report.sent) == 4
    methods = [c.method for c in slack.calls if c.method in ("chat.postMessage", "chat.update") and c.status == 200]
    assert methods.index("chat.update") > methods.index("chat.postMessage")
    assert backlog(synced.db) == {}


def test_rate_limit_is_retried_after_retry_after(synced: QmsContext, slack: FakeSlack) -> None:
    open_request(synced, approvers=["ana"])
    slack.rate_limit_next("chat.postMessage", retry_after=1, times=3)  # the client retries once itself
    first = deliver(synced.db, synced.config)
    assert first.sent == [] and "429" in first.failed[0][1]
    [row] = outbox(synced)
    assert row.status == "pending" and row.next_attempt_at <= datetime.now(UTC) + timedelta(seconds=2)
    from qmsflow.services.delivery import handlers_for
    from qmsflow.services.outbox import deliver_pending

    assert (
        len(
            deliver_pending(
                synced.db, handlers_for(synced.db, synced.config), now=datetime.now(UTC) + timedelta(seconds=2)
            ).sent
        )
        == 1
    )


def test_reminders_then_escalation_each_once_and_recorded(synced: QmsContext, slack: FakeSlack) -> None:
    request_id = open_request(synced, approvers=["ana", "chloe"], author="dev")
    deliver(synced.db, synced.config)
    created = datetime.now(UTC)
    with UnitOfWork(synced.db, "qmsflow") as uow:
        assert approvals.follow_up(uow, synced.config, created + timedelta(days=2)) == []
        reminded = approvals.follow_up(uow, synced.config, created + timedelta(days=3, minutes=1))
        uow.commit()
        assert sorted(reminded) == [(request_id, "remind", "ana"), (request_id, "remind", "chloe")]
        escalated = approvals.follow_up(uow, synced.config, created + timedelta(days=7, minutes=1))
        uow.commit()
        assert sorted(escalated) == [(request_id, "escalate", "ben"), (request_id, "escalate", "ben")]
        assert approvals.follow_up(uow, synced.config, created + timedelta(days=9)) == []
    with synced.db.read() as s:
        events = trail.events_for(s, f"approval:{request_id}")
    assert [e.action for e in events].count("approval.reminded") == 2
    assert [e.action for e in events].count("approval.escalated") == 2
    deliver(synced.db, synced.config)
    texts = [c.params["text"] for c in slack.calls_to("chat.postMessage")]
    assert sum(t.startswith("Reminder:") for t in texts) == 2 and sum(t.startswith("Escalation:") for t in texts) == 2


def test_without_slack_nothing_is_queued(synced: QmsContext, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    open_request(synced)
    assert outbox(synced) == []


def test_refusals_are_recorded_with_who_and_why(synced: QmsContext) -> None:
    request_id = open_request(synced)
    for person in ("chloe", "dev"):
        with UnitOfWork(synced.db, person) as uow, pytest.raises(NotAuthorized):
            sign(uow, synced.config, request_id, person)
    with UnitOfWork(synced.db, "slack:U0X") as uow, pytest.raises(NotAuthorized):
        approvals.decide(uow, synced.config, request_id, Credential.slack("U0X", None), Decision.APPROVE, None)
    with UnitOfWork(synced.db, "ana") as uow:
        with pytest.raises(NotAuthorized, match="needs a comment"):
            sign(uow, synced.config, request_id, "ana", Decision.REJECT, " ")
    with UnitOfWork(synced.db, "ana") as uow:
        sign(uow, synced.config, request_id, "ana", Decision.APPROVE, None)
    with UnitOfWork(synced.db, "ben") as uow, pytest.raises(AlreadyDecided):
        sign(uow, synced.config, request_id, "ben", Decision.APPROVE, None)
    with synced.db.read() as s:
        refused = [e for e in trail.events_for(s, f"approval:{request_id}") if e.action == "approval.refused"]
    assert [e.actor for e in refused] == ["chloe", "dev", "slack:U0X", "ana", "ben"]
    assert "segregation of duties" in json.loads(refused[0].after_json)["reason"]


def test_approvals_api_with_tokens(synced: QmsContext) -> None:
    request_id = open_request(synced)
    ana, chloe = token(synced.db, "ana"), token(synced.db, "chloe")
    client = TestClient(create_app(synced))
    url = f"/api/approvals/{request_id}/decision"
    assert client.post(url, json={"decision": "approve"}).status_code == 401
    assert client.post(url, json={"decision": "approve"}, headers={"Authorization": "Bearer nope"}).status_code == 401
    forbidden = client.post(url, json={"decision": "approve"}, headers={"Authorization": f"Bearer {chloe}"})
    assert forbidden.status_code == 403 and "segregation of duties" in forbidden.json()["detail"]
    assert client.post(url, json={"decision": "maybe"}, headers={"Authorization": f"Bearer {ana}"}).status_code == 422
    assert (
        client.post(
            "/api/approvals/APR-2026-9999/decision",
            json={"decision": "approve"},
            headers={"Authorization": f"Bearer {ana}"},
        ).status_code
        == 404
    )
    ok = client.post(url, json={"decision": "approve"}, headers={"Authorization": f"Bearer {ana}"})
    assert ok.status_code == 200 and ok.json()["status"] == "approved" and ok.json()["signer"] == "Ana Alves"
    assert client.post(url, json={"decision": "approve"}, headers={"Authorization": f"Bearer {ana}"}).status_code == 409
    with synced.db.read() as s:
        assert s.get(ApprovalRequestRow, request_id).status == "approved"


def test_slack_endpoint_without_signing_secret_is_unavailable(
    synced: QmsContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLACK_SIGNING_SECRET", raising=False)
    client = TestClient(create_app(synced))
    assert client.post("/slack/interactions", content=b"payload={}").status_code == 503


def test_a_dm_slack_refuses_is_parked_and_holds_back_no_one_else(synced: QmsContext, slack: FakeSlack) -> None:
    """dev is not in the Slack workspace (users_not_found): the DM to dev is parked after 5 refusals, the
    one to ana goes out, and the update of dev's DM after the decision waits without counting attempts."""
    from qmsflow.services import outbox as outbox_service

    request_id = open_request(synced, approvers=["ana", "dev"], author="chloe")
    now = datetime.now(UTC)
    reports = [deliver(synced.db, synced.config, now=now + timedelta(hours=hour)) for hour in range(5)]
    assert len(reports[0].sent) == 1 and reports[0].failed[0][1] == "Slack post_dm failed: users_not_found (HTTP 200)"
    [(parked_key, _)] = reports[4].parked
    assert parked_key == f"slack:{request_id}:request:dev"
    with UnitOfWork(synced.db, "ana") as uow:
        sign(uow, synced.config, request_id, "ana", Decision.APPROVE, None)
    report = deliver(synced.db, synced.config, now=now + timedelta(hours=6))
    assert report.sent == [f"slack:{request_id}:request:ana:update"] and report.waiting == 1
    by_key = {r.key: r for r in outbox(synced)}
    waiting = by_key[f"slack:{request_id}:request:dev:update"]
    assert (waiting.status, waiting.attempts) == ("pending", 0)
    assert [m.state for m in outbox_service.messages(synced.db)] == ["parked", "waiting"]
    assert backlog(synced.db)["slack"]["parked"] == 1
    with UnitOfWork(synced.db, "ana") as uow:  # dev will never be in Slack: give it up
        outbox_service.drop(uow, by_key[parked_key].id)
    report = deliver(synced.db, synced.config, now=now + timedelta(hours=7))
    assert report.sent == [waiting.key] and backlog(synced.db) == {}  # nothing left to update
    assert len(slack.calls_to("chat.update")) == 1
