"""The outbox on SQLite and PostgreSQL: parking, what blocks a stream and what does not, superseding,
a changed configuration, retry/drop by a person (recorded), and concurrent deliverers.

The handlers here are small in-process functions: what they stand for (Slack, Jira over real HTTP) is
tested against the fakes in test_jira.py and test_approvals_service.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from qmsflow.adapters.base import DeliveryError, RetryLater, Unavailable
from qmsflow.domain.errors import DomainError
from qmsflow.services import outbox
from qmsflow.services.records import NotFound
from qmsflow.store import Database, UnitOfWork, trail
from qmsflow.store.tables import OutboxRow


@pytest.fixture
def t0() -> datetime:
    """A moment after the test's messages are queued (they are due from their creation), also on a slow machine."""
    return datetime.now(UTC) + timedelta(minutes=1)


def queue(db: Database, key: str, stream: str = "s", action: str = "post", supersedes: tuple[str, ...] = ()) -> None:
    with UnitOfWork(db, "qmsflow") as uow:
        outbox.enqueue(uow, key, "t", action, stream, {"n": key}, supersedes=supersedes)
        uow.commit()


def rows(db: Database) -> dict[str, OutboxRow]:
    with db.read() as session:
        return {r.key: r for r in session.scalars(select(OutboxRow).order_by(OutboxRow.id))}


class Target:
    """A handler that records what it sends and fails as told, per key."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.fail: dict[str, Callable[[], Exception]] = {}

    def __call__(self, action: str, payload: dict[str, Any], resolve: Any) -> dict[str, Any]:
        key = payload["n"]
        if key in self.fail:
            raise self.fail[key]()
        if payload.get("after"):
            resolve(payload["after"])
        self.sent.append(key)
        return {"ok": key}


def deliver(db: Database, target: Target, at: datetime, **kwargs: Any) -> outbox.DeliveryReport:
    return outbox.deliver_pending(db, {"t": target}, now=at, **kwargs)


def test_a_refused_message_is_parked_after_n_and_then_holds_back_nothing(db: Database, t0: datetime) -> None:
    queue(db, "a")
    queue(db, "b")  # same stream, behind a
    target = Target()
    target.fail["a"] = lambda: DeliveryError("the target refuses a")
    at = t0
    for attempt in range(1, 3):
        report = deliver(db, target, at, park_after=3)
        assert report.sent == [] and report.parked == [] and rows(db)["a"].failures == attempt
        at += timedelta(hours=2)
    report = deliver(db, target, at, park_after=3)
    assert report.parked == [("a", "the target refuses a")]
    assert report.sent == ["b"]  # the parked message no longer holds back its stream
    a = rows(db)["a"]
    assert (a.status, a.failures, a.attempts, a.last_error) == ("parked", 3, 3, "the target refuses a")
    assert deliver(db, target, at + timedelta(days=30)).sent == []  # parked stays parked
    assert outbox.backlog(db)["t"]["parked"] == 1


@pytest.mark.parametrize("failure", [lambda: Unavailable("connection refused"), lambda: RetryLater("429", 5)])
def test_an_outage_never_parks(db: Database, t0: datetime, failure: Callable[[], Exception]) -> None:
    queue(db, "a")
    target = Target()
    target.fail["a"] = failure
    at = t0
    for _ in range(40):
        assert deliver(db, target, at, park_after=2).parked == []
        at += timedelta(hours=2)
    a = rows(db)["a"]
    assert (a.status, a.failures, a.attempts) == ("pending", 0, 40)
    assert a.next_attempt_at - at <= timedelta(hours=1)  # the backoff is capped
    del target.fail["a"]
    assert deliver(db, target, at).sent == ["a"]


def test_a_failing_message_holds_back_its_stream_until_parked(db: Database, t0: datetime) -> None:
    queue(db, "a")
    queue(db, "b")
    queue(db, "x", stream="other")
    target = Target()
    target.fail["a"] = lambda: DeliveryError("no")
    report = deliver(db, target, t0)
    assert report.sent == ["x"] and report.waiting == 1  # order within a stream is kept while a is retried


def test_waiting_for_another_message_counts_no_attempt(db: Database, t0: datetime) -> None:
    queue(db, "post", stream="dm")
    with UnitOfWork(db, "qmsflow") as uow:
        outbox.enqueue(uow, "update", "t", "update", "dm2", {"n": "update", "after": "post"})
        uow.commit()
    target = Target()
    target.fail["post"] = lambda: DeliveryError("user not found")
    for hour in range(3):
        deliver(db, target, t0 + timedelta(hours=3 * hour), park_after=2)
    state = rows(db)
    assert state["post"].status == "parked"
    assert (state["update"].status, state["update"].attempts, state["update"].failures) == ("pending", 0, 0)
    assert state["update"].last_error == f"{outbox.WAITING}message #{state['post'].id} is parked"
    assert [m.state for m in outbox.messages(db)] == ["parked", "waiting"]
    del target.fail["post"]
    with UnitOfWork(db, "ana") as uow:
        outbox.retry(uow, state["post"].id)
    report = deliver(db, target, datetime.now(UTC) + timedelta(seconds=1))
    assert report.sent == ["post", "update"]


def test_a_newer_intent_supersedes_queued_and_parked_ones_of_its_stream(db: Database, t0: datetime) -> None:
    target = Target()
    queue(db, "stage-1", action="stage", supersedes=("stage",))
    target.fail["stage-1"] = lambda: DeliveryError("no such status")
    deliver(db, target, t0, park_after=1)
    assert rows(db)["stage-1"].status == "parked"
    queue(db, "comment", action="comment")
    queue(db, "stage-2", action="stage", supersedes=("stage",))
    queue(db, "stage-3", action="stage", supersedes=("stage",))
    queue(db, "elsewhere", stream="other", action="stage", supersedes=("stage",))
    state = rows(db)
    assert {k: r.status for k, r in state.items()} == {
        "stage-1": "superseded",
        "comment": "pending",
        "stage-2": "superseded",
        "stage-3": "pending",
        "elsewhere": "pending",
    }
    assert state["stage-2"].result == {"superseded_by": "stage-3"}
    assert deliver(db, target, t0 + timedelta(hours=1)).sent == ["comment", "stage-3", "elsewhere"]


def test_a_message_being_sent_is_not_superseded(db: Database, t0: datetime) -> None:
    queue(db, "stage-1", action="stage", supersedes=("stage",))
    sending = threading.Event()
    release = threading.Event()

    def slow(action: str, payload: dict, resolve: Any) -> dict:
        if payload["n"] == "stage-1":
            sending.set()
            assert release.wait(30)
        return {"sent": payload["n"]}

    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(outbox.deliver_pending, db, {"t": slow}, now=t0)
        assert sending.wait(30)
        queue(db, "stage-2", action="stage", supersedes=("stage",))  # while stage-1 is on the wire
        release.set()
        assert running.result().sent == ["stage-1"]
    assert {k: r.status for k, r in rows(db).items()} == {"stage-1": "sent", "stage-2": "pending"}


def test_a_changed_configuration_makes_failing_and_parked_messages_due_at_once(db: Database, t0: datetime) -> None:
    queue(db, "a")
    queue(db, "b", stream="s2")
    target = Target()
    target.fail["a"] = lambda: DeliveryError("status 'In Review' unknown")
    target.fail["b"] = lambda: DeliveryError("status 'In Review' unknown")
    deliver(db, target, t0, park_after=1, configs={"t": "old"})
    assert rows(db)["a"].config_sha == "old"
    deliver(db, target, t0 + timedelta(seconds=20), configs={"t": "old"})
    target.fail.clear()
    # the same configuration again: nothing is due (a is parked, b waits for its backoff)
    assert deliver(db, target, t0 + timedelta(seconds=20), configs={"t": "old"}).sent == []
    report = deliver(db, target, t0 + timedelta(seconds=20), configs={"t": "fixed"})
    assert report.revived == 2 and sorted(report.sent) == ["a", "b"]


def test_retry_and_drop_are_recorded_in_the_actors_name(db: Database, t0: datetime) -> None:
    queue(db, "a")
    queue(db, "b", stream="s2")
    target = Target()
    target.fail["a"] = target.fail["b"] = lambda: DeliveryError("refused")
    deliver(db, target, t0, park_after=1)
    state = rows(db)
    with UnitOfWork(db, "ana") as uow:
        retried = outbox.retry(uow, state["a"].id)
    with UnitOfWork(db, "ben") as uow:
        dropped = outbox.drop(uow, state["b"].id)
    assert (retried.status, retried.failures, dropped.status) == ("pending", 0, "dropped")
    with db.read() as session:
        [r] = trail.events_for(session, f"outbox:{state['a'].id}")
        [d] = trail.events_for(session, f"outbox:{state['b'].id}")
    before, after = json.loads(r.before_json), json.loads(r.after_json)
    assert (r.actor, r.action, before["status"], after["status"]) == ("ana", "outbox.retried", "parked", "pending")
    after = json.loads(d.after_json)
    assert (d.actor, d.action, after["status"], after["last_error"]) == ("ben", "outbox.dropped", "dropped", "refused")
    target.fail.clear()
    assert deliver(db, target, datetime.now(UTC) + timedelta(seconds=1)).sent == ["a"]  # b stays dropped
    assert [m.key for m in outbox.messages(db)] == []


def test_retry_and_drop_refuse_what_they_cannot_do(db: Database, t0: datetime) -> None:
    queue(db, "a")
    deliver(db, Target(), t0)
    sent = rows(db)["a"].id
    for act in (outbox.retry, outbox.drop):
        with UnitOfWork(db, "ana") as uow, pytest.raises(DomainError, match=f"#{sent} is sent"):
            act(uow, sent)
        with UnitOfWork(db, "ana") as uow, pytest.raises(NotFound, match="no outbox message #999"):
            act(uow, 999)
    with db.read() as session:
        assert trail.events_for(session, f"outbox:{sent}") == []


def test_parallel_deliverers_send_each_message_once(db: Database) -> None:
    for n in range(60):
        queue(db, f"m{n}", stream=f"s{n % 7}")
    sent: list[str] = []
    lock = threading.Lock()

    def handler(action: str, payload: dict, resolve: Any) -> dict:
        with lock:
            sent.append(payload["n"])
        return {}

    start = threading.Barrier(4)

    def run(_: int) -> int:
        start.wait()
        return len(outbox.deliver_pending(db, {"t": handler}, now=datetime.now(UTC) + timedelta(seconds=1)).sent)

    with ThreadPoolExecutor(4) as pool:
        total = sum(pool.map(run, range(4)))
    leftovers = outbox.deliver_pending(db, {"t": handler}, now=datetime.now(UTC) + timedelta(minutes=10))
    assert sorted(sent) == sorted(f"m{n}" for n in range(60)) and total + len(leftovers.sent) == 60
    for n in range(7):  # order within each stream kept
        mine = [k for k in sent if int(k[1:]) % 7 == n]
        assert mine == sorted(mine, key=lambda k: int(k[1:]))


def test_a_deliverer_that_died_after_sending_leaves_a_retry_that_looks_first(db: Database, t0: datetime) -> None:
    queue(db, "create")
    seen: list[int] = []

    def dies(action: str, payload: dict, resolve: Any) -> dict:
        seen.append(payload["_attempt"])
        raise SystemExit  # the process is gone before it could record the result

    with pytest.raises(SystemExit):
        outbox.deliver_pending(db, {"t": dies}, now=t0)
    assert rows(db)["create"].status == "sending"

    def works(action: str, payload: dict, resolve: Any) -> dict:
        seen.append(payload["_attempt"])
        return {}

    assert outbox.deliver_pending(db, {"t": works}, now=t0 + timedelta(seconds=outbox.CLAIM_SECONDS - 1)).sent == []
    assert outbox.deliver_pending(db, {"t": works}, now=t0 + timedelta(seconds=outbox.CLAIM_SECONDS + 1)).sent == [
        "create"
    ]
    assert seen == [0, 1]  # the second claim knows an attempt was made


def test_a_message_superseded_between_read_and_claim_is_not_sent(db: Database, t0: datetime) -> None:
    """The deliverer reads a batch, then claims row by row: a row superseded in between (by a change
    committed meanwhile) fails its conditional claim and is never sent."""
    queue(db, "first", stream="other")
    queue(db, "stage-1", action="stage", supersedes=("stage",))
    sent: list[str] = []

    def handler(action: str, payload: dict, resolve: Any) -> dict:
        if payload["n"] == "first":  # stage-1 is already in the batch that was read
            queue(db, "stage-2", action="stage", supersedes=("stage",))
        sent.append(payload["n"])
        return {}

    report = outbox.deliver_pending(db, {"t": handler}, now=t0)
    assert sent == ["first"] and report.waiting == 1  # stage-1 not claimed; stage-2 came after the read
    assert {k: r.status for k, r in rows(db).items()} == {
        "first": "sent",
        "stage-1": "superseded",
        "stage-2": "pending",
    }
    assert outbox.deliver_pending(db, {"t": handler}, now=t0).sent == ["stage-2"]
