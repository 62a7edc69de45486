"""CAPA ↔ Jira over real HTTP: the real `jira` client against the fake Jira on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import identityutil
import pytest
from fakes.jira import FakeJira
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from test_capa import FULL

from qmsflow.adapters import jira as jira_adapter
from qmsflow.adapters.base import Unavailable
from qmsflow.context import QmsContext, open_context
from qmsflow.services import capa, delivery, jira_sync, mirror
from qmsflow.services.sync import sync_config
from qmsflow.store import UnitOfWork, trail
from qmsflow.store.tables import InboundEventRow, OutboxRow, RecordRow
from qmsflow.web.app import create_app

SECRET = "jira-webhook-secret"


class World:
    """A scaffolded repo wired to a fake Jira, on SQLite or PostgreSQL; ``configure`` rewrites qms.yaml
    (extra lines under ``integrations.jira``, and top-level sections) and reopens the context."""

    def __init__(self, repo: Path, fake: FakeJira) -> None:
        self.repo, self.fake = repo, fake
        self.template = (repo / "qms.yaml").read_text()
        self.ctx: QmsContext | None = None

    def configure(self, jira: str = "", top: str = "") -> QmsContext:
        block = f"integrations:\n  jira:\n    url: '{self.fake.url}'\n    project: QMS\n{jira}{top}"
        (self.repo / "qms.yaml").write_text(self.template.replace("retention:", block + "retention:", 1))
        if self.ctx is not None:
            self.ctx.close()
        self.ctx = open_context(self.repo / "qms.yaml", migrate=True)
        with UnitOfWork(self.ctx.db, "qmsflow") as uow:
            sync_config(uow, self.ctx.config, self.ctx.root)
            uow.commit()
        return self.ctx


def _world(repo: Path, db_url: str, monkeypatch: pytest.MonkeyPatch, fake: FakeJira) -> Iterator[World]:
    monkeypatch.setenv("QMS_DATABASE_URL", db_url)
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    monkeypatch.delenv("QMS_WEB_URL", raising=False)
    monkeypatch.setenv("JIRA_EMAIL", fake.email)
    monkeypatch.setenv("JIRA_API_TOKEN", "jira-token")
    monkeypatch.setenv("JIRA_WEBHOOK_SECRET", SECRET)
    w = World(repo, fake)
    w.configure()
    yield w
    w.ctx.close()


@pytest.fixture
def site(repo: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """Jira Cloud with the usual workflow (To Do, In Progress, In Review, Done)."""
    with FakeJira() as fake:
        yield from _world(repo, db_url, monkeypatch, fake)


@pytest.fixture
def world(site: World) -> tuple[QmsContext, FakeJira]:
    return site.ctx, site.fake


@pytest.fixture
def no_review(repo: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """A Jira site whose workflow has no In Review (the default for effectiveness_check)."""
    with FakeJira(statuses=("To Do", "In Progress", "Done")) as fake:
        yield from _world(repo, db_url, monkeypatch, fake)


def deliver(ctx: QmsContext, later: float = 0):  # noqa: ANN201
    return delivery.deliver(ctx.db, ctx.config, now=datetime.now(UTC) + timedelta(seconds=later))


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
        identityutil.sign(uow, ctx.config, request_id, "ana")


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


# ---------------------------------------------------------------------- an outbox that recovers


def messages(ctx: QmsContext, capa_id: str) -> list[OutboxRow]:
    with ctx.db.read() as s:
        return list(s.scalars(select(OutboxRow).where(OutboxRow.stream == f"jira:{capa_id}").order_by(OutboxRow.id)))


def refusals(ctx: QmsContext, capa_id: str) -> list:
    with ctx.db.read() as s:
        return [e for e in trail.events_for(s, f"record:{capa_id}") if e.action == "capa.jira-transition-refused"]


@pytest.fixture
def qms(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    from qmsflow.cli.main import run

    monkeypatch.setenv("COLUMNS", "250")

    def call(site: World, *args: str) -> tuple[int, str, str]:
        args = list(args)
        if "--as" in args:  # act as that person the way a person does: with their own token
            at = args.index("--as")
            person = args[at + 1]
            del args[at : at + 2]
            ctx = open_context(site.repo / "qms.yaml")
            monkeypatch.setenv("QMS_TOKEN", identityutil.token(ctx.db, person))
            ctx.close()
        code = run([*args, "--config", str(site.repo / "qms.yaml")])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return call


def test_a_status_mistake_names_the_setting_and_fixing_qms_yaml_fixes_the_queued_message(site: World) -> None:
    ctx = site.configure(jira="    statuses: {effectiveness_check: QA Review}\n")  # no such status in Jira
    capa_id = open_one(ctx)
    to_stage(ctx, capa_id, "implementation")
    deliver(ctx)
    advance(ctx, capa_id, "effectiveness_check")
    report = deliver(ctx)
    [(_, error)] = report.failed
    assert error.startswith("integrations.jira.statuses.effectiveness_check is 'QA Review', but QMS-1 is in ")
    assert "offered: Done, In Review, To Do" in error and "Fix qms.yaml" in error
    assert issue_of(site.fake, capa_id)["fields"]["status"] == "In Progress"
    ctx = site.configure()  # the override removed: the default, In Review
    report = deliver(ctx)  # due at once: the configuration its failure was resolved against changed
    assert report.revived == 1 and report.failed == [] and len(report.sent) == 1
    assert issue_of(site.fake, capa_id)["fields"]["status"] == "In Review"


def test_a_later_change_of_the_record_supersedes_the_message_jira_refuses(no_review: World) -> None:
    ctx, fake = no_review.ctx, no_review.fake
    capa_id = open_one(ctx)
    to_stage(ctx, capa_id, "effectiveness_check")
    assert "'In Review'" in deliver(ctx).failed[0][1]  # the site has no In Review
    result = advance(ctx, capa_id, "closed")
    sign(ctx, result["awaiting"])
    report = deliver(ctx)
    assert report.failed == [] and len(report.sent) == 1  # the latest desired state, not the failing one
    assert issue_of(fake, capa_id)["fields"]["status"] == "Done"
    states = [(m.action, m.payload.get("stage"), m.status) for m in messages(ctx, capa_id) if m.action == "stage"]
    assert states[-2:] == [("stage", "effectiveness_check", "superseded"), ("stage", "closed", "sent")]


def test_queued_stage_changes_coalesce_into_one_transition(site: World) -> None:
    ctx, fake = site.ctx, site.fake
    fake.fail_next(status=503, times=1)
    capa_id = open_one(ctx)
    advance(ctx, capa_id, "containment")
    advance(ctx, capa_id, "root_cause")
    assert deliver(ctx).sent == []  # the create fails (Jira down); the stage intents wait behind it
    before = len(fake.calls_to("POST", "/rest/api/2/issue/QMS-1/transitions"))
    report = deliver(ctx, later=600)
    assert report.failed == [] and len(report.sent) == 2  # the create, then the one stage that matters
    assert len(fake.calls_to("POST", "/rest/api/2/issue/QMS-1/transitions")) - before == 1
    assert [(m.payload.get("stage"), m.status) for m in messages(ctx, capa_id) if m.action == "stage"] == [
        ("containment", "superseded"),
        ("root_cause", "sent"),
    ]


def test_a_stage_change_that_keeps_the_status_sends_nothing(site: World) -> None:
    ctx, fake = site.ctx, site.fake
    capa_id = open_one(ctx)
    advance(ctx, capa_id, "containment")
    deliver(ctx)
    before = len(fake.calls)
    advance(ctx, capa_id, "root_cause")  # In Progress too
    assert len(deliver(ctx).sent) == 1 and len(fake.calls) == before


def test_a_parked_message_holds_back_nothing_and_people_list_retry_and_drop_it(site: World, qms) -> None:  # noqa: ANN001
    ctx = site.configure(jira="    statuses: {effectiveness_check: QA Review}\n", top="  outbox: {park_after: 2}\n")
    fake = site.fake
    capa_id = open_one(ctx)
    to_stage(ctx, capa_id, "effectiveness_check")
    deliver(ctx)
    report = deliver(ctx, later=3600)
    [(key, error)] = report.parked
    assert "integrations.jira.statuses.effectiveness_check is 'QA Review'" in error
    with UnitOfWork(ctx.db, "qmsflow") as uow:  # a later message of the same record is not held back
        mirror.comment(uow, ctx.config, uow.session.get(RecordRow, capa_id), "note", "hello")
        uow.commit()
    assert len(deliver(ctx, later=3600).sent) == 1
    assert issue_of(fake, capa_id)["comments"][-1]["body"] == "hello"

    code, out, _ = qms(site, "outbox", "list", "--parked")
    parked = next(m for m in messages(ctx, capa_id) if m.status == "parked")
    assert code == 0 and f"{parked.id} " in out and "parked" in out
    assert f"{capa_id} should be in stage effectiveness_check" in out and "QA Review" in out
    code, out, err = qms(site, "outbox", "retry", str(parked.id), "--as", "ana")  # config not fixed yet
    assert code == 0 and "failed again" in err and "QA Review" in err

    site.configure(jira="    statuses: {effectiveness_check: In Review}\n", top="  outbox: {park_after: 2}\n")
    code, out, _ = qms(site, "outbox", "retry", str(parked.id), "--as", "ana")
    assert code == 0 and f"#{parked.id} sent" in out
    assert issue_of(fake, capa_id)["fields"]["status"] == "In Review"
    with ctx.db.read() as s:
        retried = trail.events_for(s, f"outbox:{parked.id}")
    assert [(e.actor, e.action) for e in retried] == [("ana", "outbox.retried"), ("ana", "outbox.retried")]

    del fake.issues[issue_of(fake, capa_id)["key"]]  # someone deleted the issue in Jira
    sign(site.ctx, advance(site.ctx, capa_id, "closed")["awaiting"])
    deliver(site.ctx)
    deliver(site.ctx, later=3600)
    gone = next(m for m in messages(site.ctx, capa_id) if m.status == "parked")
    assert "HTTP 404" in gone.last_error
    code, out, _ = qms(site, "outbox", "drop", str(gone.id), "--as", "ben")
    assert code == 0 and f"#{gone.id} dropped: {capa_id} should be in stage closed" in out
    code, _, err = qms(site, "outbox", "drop", str(gone.id), "--as", "ben")
    assert (
        code == 1
        and err.strip() == f"error: outbox message #{gone.id} is dropped: only a queued or parked message is dropped"
    )
    code, _, err = qms(site, "outbox", "retry", "424242")
    assert code == 1 and "no outbox message #424242" in err and "Traceback" not in err
    code, out, _ = qms(site, "outbox", "list")
    assert code == 0 and "nothing waits to be sent" in out


def test_an_issue_type_mistake_names_the_setting(site: World) -> None:
    ctx = site.configure(jira="    issue_types: {capa: Tsk}\n")
    capa_id = open_one(ctx)
    [(_, error)] = deliver(ctx).failed
    assert error.startswith("integrations.jira.issue_types.capa is 'Tsk', and Jira refused POST issue (HTTP 400)")
    ctx = site.configure()
    assert len(deliver(ctx).sent) == 1
    assert issue_of(site.fake, capa_id)["fields"]["issuetype"] == "Task"


def test_a_move_refused_while_our_message_is_parked_is_answered_reverted_and_recorded(no_review: World) -> None:
    ctx = no_review.configure(top="  outbox: {park_after: 1}\n")
    fake = no_review.fake
    capa_id = open_one(ctx)
    to_stage(ctx, capa_id, "effectiveness_check")
    assert len(deliver(ctx).parked) == 1  # In Review: not on this site
    key = issue_of(fake, capa_id)["key"]
    fake.set_status(key, "Done")  # closing in Jira, without the signed closure
    assert webhook(ctx, fake, key, "Done", "wh-parked").json()["outcome"] == "refused"  # not "deferred"
    [event] = refusals(ctx, capa_id)
    assert event.actor == "jira"
    assert "qmsflow refused the move to 'Done'" in issue_of(fake, capa_id)["comments"][-1]["body"]  # delivered at once
    assert issue_of(fake, capa_id)["fields"]["status"] == "Done"  # the revert is refused by Jira too (In Review)
    # the same status seen again (reconciliation, another event of that move) is no news: one refusal
    assert webhook(ctx, fake, key, "Done", "wh-parked-again").json()["outcome"] == "unchanged"
    assert len(refusals(ctx, capa_id)) == 1
    ctx = no_review.configure(
        jira="    statuses: {effectiveness_check: In Progress}\n", top="  outbox: {park_after: 1}\n"
    )
    report = deliver(ctx)
    assert report.revived == 1 and report.failed == []  # the revert (it superseded the parked stage intent)
    assert issue_of(fake, capa_id)["fields"]["status"] == "In Progress"  # reverted to the QMS stage


def test_a_move_during_our_own_change_is_deferred_and_overwritten(site: World) -> None:
    ctx, fake = site.ctx, site.fake
    capa_id = open_one(ctx)
    advance(ctx, capa_id, "containment")
    deliver(ctx)
    key = issue_of(fake, capa_id)["key"]
    advance(ctx, capa_id, "root_cause")  # queued: In Progress, as Jira shows now
    fake.set_status(key, "Done")
    assert webhook(ctx, fake, key, "Done", "wh-during").json()["outcome"] == "deferred"
    assert issue_of(fake, capa_id)["fields"]["status"] == "In Progress"  # the webhook's delivery pass overwrote it
    assert refusals(ctx, capa_id) == []


@pytest.mark.parametrize("lost", ["issue", "remotelink"])
def test_a_recovered_create_gets_its_remote_link_once(site: World, lost: str) -> None:
    ctx = site.configure(top="web:\n  base_url: https://qms.acme.example/\n")
    fake = site.fake
    fake.lose_response_next(path_prefix="/rest/api/2/issue" + ("" if lost == "issue" else "/QMS-1/remotelink"))
    capa_id = open_one(ctx)
    assert deliver(ctx).sent == []
    assert len(deliver(ctx, later=600).sent) == 1
    [issue] = [i for i in fake.issues.values() if f"qms-{capa_id}" in i["fields"]["labels"]]
    assert [(link["globalId"], link["object"]["url"]) for link in issue["remote_links"]] == [
        (f"qmsflow:{capa_id}", f"https://qms.acme.example/capas#{capa_id}")
    ]


def test_links_use_web_base_url_and_ignore_qms_web_url(site: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QMS_WEB_URL", "http://127.0.0.1:9")
    ctx = site.configure(top="web:\n  base_url: https://qms.acme.example\n")
    capa_id = open_one(ctx)
    deliver(ctx)
    issue = issue_of(site.fake, capa_id)
    assert issue["remote_links"][0]["object"]["url"] == f"https://qms.acme.example/capas#{capa_id}"
    assert issue["fields"]["description"].endswith(f"https://qms.acme.example/capas#{capa_id}")
    assert "127.0.0.1:9" not in json.dumps(issue)


def test_jira_sync_delivers_the_refusal_it_queued_in_the_same_run(site: World, qms) -> None:  # noqa: ANN001
    ctx, fake = site.ctx, site.fake
    capa_id = open_one(ctx)
    to_stage(ctx, capa_id, "implementation")
    deliver(ctx)
    fake.set_status(issue_of(fake, capa_id)["key"], "Done")  # closed in Jira without an effectiveness check
    code, out, _ = qms(site, "jira", "sync")
    assert code == 0 and f"'{capa_id}': 'refused'" in out
    issue = issue_of(fake, capa_id)
    assert "qmsflow refused the move to 'Done'" in issue["comments"][-1]["body"]
    assert issue["fields"]["status"] == "In Progress"
    assert [m.status for m in messages(ctx, capa_id)][-2:] == ["sent", "sent"]


def test_move_when_the_issue_is_already_there_or_the_workflow_has_no_way(site: World) -> None:
    ctx, fake = site.ctx, site.fake
    ids = [open_one(ctx, f"CAPA {n}") for n in range(2)]
    deliver(ctx)
    first, second = (issue_of(fake, i)["key"] for i in ids)
    settings = jira_adapter.settings(ctx.config)
    adapter = jira_adapter.JiraAdapter(jira_adapter.make_client(settings), settings)
    assert adapter.move(first, "In Progress") == "moved"  # looks the transitions up once, then posts
    assert adapter.calls == 2
    fake.set_status(second, "In Progress")  # someone was quicker
    assert adapter.move(second, "In Progress") == "already"  # cached id refused (400), looked up, it is there
    assert adapter.calls == 5
    with pytest.raises(jira_adapter.NoTransition) as info:
        adapter.move(second, "QA Review")
    assert (
        str(info.value)
        == "QMS-2 is in 'In Progress' and Jira offers no transition to 'QA Review' (offered: Done, In Review, To Do)"
    )
    with pytest.raises(jira_adapter.JiraRejected) as info:
        adapter.comment("QMS-99", "nobody")
    assert info.value.status == 404 and "Issue does not exist" in str(info.value)
    fake.fail_next(status=502)
    with pytest.raises(Unavailable):
        adapter.comment(first, "Jira is down")
    fake.drop_next()
    with pytest.raises(Unavailable, match="ConnectionError"):
        adapter.comment(first, "the connection drops")


def test_a_transition_queued_by_an_older_version_is_resolved_again(site: World) -> None:
    """Rows queued before intents carried the status name; they are read as "should be in stage X"."""
    ctx, fake = site.ctx, site.fake
    capa_id = open_one(ctx)
    deliver(ctx)
    with UnitOfWork(ctx.db, "qmsflow") as uow:
        from qmsflow.services.outbox import enqueue

        payload = {
            "record": capa_id,
            "create_key": f"jira:{capa_id}:create",
            "status": "QA Review",
            "stage": "containment",
        }
        enqueue(uow, f"jira:{capa_id}:status:containment:1", "jira", "transition", f"jira:{capa_id}", payload)
        uow.commit()
    assert len(deliver(ctx).sent) == 1
    assert issue_of(fake, capa_id)["fields"]["status"] == "In Progress"


def test_a_create_queued_by_an_older_version_reads_the_record(site: World) -> None:
    ctx = site.configure(top="web:\n  base_url: https://qms.acme.example\n")
    with UnitOfWork(ctx.db, "dev") as uow:
        row = capa.open_capa(uow, ctx.config, title="Drift", source="audit", owner="dev", description="seen in audit")
        capa_id = row.id
        uow.commit()
    with ctx.db.session() as s, s.begin():  # what an older version queued: the content and the old link baked in
        message = s.scalars(select(OutboxRow).where(OutboxRow.key == f"jira:{capa_id}:create")).one()
        message.payload = {
            "record": capa_id,
            "create_key": f"jira:{capa_id}:create",
            "summary": f"{capa_id} Drift",
            "description": "old text http://127.0.0.1:8000/capas",
            "issue_type": "Task",
            "labels": ["qms", f"qms-{capa_id}"],
        }
    assert len(deliver(ctx).sent) == 1
    issue = issue_of(site.fake, capa_id)
    assert issue["fields"]["summary"] == f"{capa_id} Drift"
    assert issue["fields"]["description"].startswith("seen in audit\n\nQMS record")
    assert issue["fields"]["description"].endswith(f"https://qms.acme.example/capas#{capa_id}")
