"""The one deadline ladder (issue 12) in the approval follow-ups and the CAPA stage deadlines, on SQLite and
PostgreSQL: days from qms.yaml, each rung once per waiting person, recorded in the trail under its stable key,
and a store written by the earlier per-procedure code is not told twice."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
import yaml

from qmsflow.context import QmsContext
from qmsflow.domain.organisation import ApprovalSettings, CapaSettings
from qmsflow.services import approvals, capa, contents
from qmsflow.services.common import row_values
from qmsflow.settings import ConfigError, load_config
from qmsflow.store import UnitOfWork, trail
from qmsflow.store.tables import ApprovalRequestRow, RecordRow


@pytest.fixture(autouse=True)
def _no_integrations(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("SLACK_BOT_TOKEN", "JIRA_API_TOKEN", "JIRA_EMAIL"):
        monkeypatch.delenv(var, raising=False)


def _request(ctx: QmsContext, approvers: list[str], author: str = "dev") -> tuple[str, datetime]:
    with UnitOfWork(ctx.db, author) as uow:
        row, _ = approvals.open_request(
            uow,
            ctx.config,
            key="deadline-test",
            subject="test-step:T-1@1",
            required="all",
            title="SOP-DES-001 v1.0",
            content_sha256=contents.store(uow, b"# SOP-DES-001\n", contents.MARKDOWN),
            approvers=approvers,
            meaning="approve SOP-DES-001 v1.0",
            author=author,
        )
        uow.commit()
        return row.id, row.created_at


def _events(ctx: QmsContext, ref: str, *actions: str) -> list:
    with ctx.db.read() as s:
        return [e for e in trail.events_for(s, ref) if e.action in actions]


def test_approval_ladder_days_from_config_three_rungs_each_once(synced_ctx: QmsContext) -> None:
    config = synced_ctx.config.model_copy(
        update={
            "approvals": ApprovalSettings(remind_after_days=2, escalate_after_days=5, escalate_further_after_days=9)
        }
    )
    request_id, created = _request(synced_ctx, ["chloe"])  # chloe -> ben -> (ben has no manager)
    fired = []
    with UnitOfWork(synced_ctx.db, "qmsflow") as uow:
        for day in (1, 2, 3, 5, 6, 9, 30):
            fired.append((day, approvals.follow_up(uow, config, created + timedelta(days=day, minutes=1))))
            uow.commit()
    assert fired == [
        (1, []),
        (2, [(request_id, "remind", "chloe")]),
        (3, []),
        (5, [(request_id, "escalate", "ben")]),
        (6, []),
        (9, []),  # the manager's manager of chloe: ben has none, so the rung is skipped, not sent elsewhere
        (30, []),
    ]
    events = _events(synced_ctx, f"approval:{request_id}", "approval.reminded", "approval.escalated")
    assert [(e.action, e.after["level"], e.after["to"]) for e in events] == [
        ("approval.reminded", "remind", "chloe"),
        ("approval.escalated", "escalate", "ben"),
    ]
    with synced_ctx.db.read() as s:
        kept = s.get(ApprovalRequestRow, request_id).data["follow_ups"]
    assert kept == [e.after["key"] for e in events]  # the stable keys, kept with the request (and trailed)


def test_approval_escalates_further_to_the_managers_manager(synced_ctx: QmsContext) -> None:
    config = synced_ctx.config.model_copy(
        update={
            "approvals": ApprovalSettings(remind_after_days=1, escalate_after_days=2, escalate_further_after_days=3)
        }
    )
    request_id, created = _request(synced_ctx, ["dev", "chloe"], author="ana")  # dev -> chloe -> ben
    with UnitOfWork(synced_ctx.db, "qmsflow") as uow:
        done = approvals.follow_up(uow, config, created + timedelta(days=4))
        uow.commit()
        again = approvals.follow_up(uow, config, created + timedelta(days=40))
    assert sorted(done) == [
        (request_id, "escalate", "ben"),  # chloe's manager
        (request_id, "escalate", "chloe"),  # dev's manager
        (request_id, "escalate-further", "ben"),  # dev's manager's manager (chloe's has none: skipped)
        (request_id, "remind", "chloe"),
        (request_id, "remind", "dev"),
    ]
    assert again == []


def test_an_upgraded_store_is_not_reminded_twice(synced_ctx: QmsContext) -> None:
    request_id, created = _request(synced_ctx, ["chloe"])
    with UnitOfWork(synced_ctx.db, "qmsflow") as uow:  # what the per-procedure code recorded before
        row = uow.session.get(ApprovalRequestRow, request_id)
        before = row_values(row)
        row.data = {**row.data, "follow_ups": [f"remind:{request_id}:chloe"]}
        uow.record("approval.follow-up-recorded", f"approval:{request_id}", before, row_values(row), actor="qmsflow")
        uow.commit()
    with UnitOfWork(synced_ctx.db, "qmsflow") as uow:
        done = approvals.follow_up(uow, synced_ctx.config, created + timedelta(days=7, minutes=1))
        uow.commit()
    assert done == [(request_id, "escalate", "ben")]


def _capa(ctx: QmsContext, owner: str = "dev") -> tuple[str, date]:
    with UnitOfWork(ctx.db, owner) as uow:
        row = capa.open_capa(uow, ctx.config, title="Late", source="audit", owner=owner, severity="critical")
        uow.commit()
        return row.id, row.due_date


def test_capa_ladder_days_from_config_and_a_new_stage_starts_a_new_ladder(synced_ctx: QmsContext) -> None:
    config = synced_ctx.config.model_copy(
        update={"capa": CapaSettings(remind_after_days=2, escalate_after_days=4, escalate_further_after_days=6)}
    )
    capa_id, due = _capa(synced_ctx)  # dev -> chloe -> ben

    def day(n: int) -> date:
        return due + timedelta(days=n)

    with UnitOfWork(synced_ctx.db, "qmsflow") as uow:
        got = {n: capa.escalate_overdue(uow, config, day(n)) for n in (1, 2, 3, 4, 6, 7)}
        uow.commit()
    assert got == {
        1: [],  # overdue, but the first rung is 2 days after the due date here (the default is 1)
        2: [(capa_id, "remind", "dev")],
        3: [],
        4: [(capa_id, "escalate", "chloe")],
        6: [(capa_id, "escalate-further", "ben")],
        7: [],
    }
    events = _events(synced_ctx, f"record:{capa_id}", "capa.escalated")
    assert [(e.after["level"], e.after["to"], e.after["stage"]) for e in events] == [
        ("remind", "dev", "opened"),
        ("escalate", "chloe", "opened"),
        ("escalate-further", "ben", "opened"),
    ]
    # the CAPA moves on with a new due date: a new wait, a new ladder
    with UnitOfWork(synced_ctx.db, "dev") as uow:
        capa.advance(uow, config, capa_id, "containment", {"correction": "stopped the line"})
        uow.commit()
    with synced_ctx.db.read() as s:
        new_due = s.get(RecordRow, capa_id).due_date
    with UnitOfWork(synced_ctx.db, "qmsflow") as uow:
        later = capa.escalate_overdue(uow, config, new_due + timedelta(days=2))
        uow.commit()
    assert later == [(capa_id, "remind", "dev")]


def test_capa_closed_is_never_escalated_and_defaults_keep_seven_days(synced_ctx: QmsContext) -> None:
    capa_id, due = _capa(synced_ctx)
    with UnitOfWork(synced_ctx.db, "qmsflow") as uow:
        assert capa.escalate_overdue(uow, synced_ctx.config, due) == []  # due today is not overdue
        assert capa.escalate_overdue(uow, synced_ctx.config, due + timedelta(days=6)) == [(capa_id, "remind", "dev")]
        assert capa.escalate_overdue(uow, synced_ctx.config, due + timedelta(days=7)) == [
            (capa_id, "escalate", "chloe")
        ]
        uow.commit()


def test_capa_upgraded_store_keeps_its_earlier_escalations(synced_ctx: QmsContext) -> None:
    capa_id, due = _capa(synced_ctx)
    with UnitOfWork(synced_ctx.db, "qmsflow") as uow:
        row = uow.session.get(RecordRow, capa_id)
        from qmsflow.services.records import update_record

        update_record(uow, row, "escalations-recorded", data={**row.data, "escalations": [f"opened:{due}:owner"]})
        uow.commit()
    with UnitOfWork(synced_ctx.db, "qmsflow") as uow:
        assert capa.escalate_overdue(uow, synced_ctx.config, due + timedelta(days=8)) == [
            (capa_id, "escalate", "chloe")
        ]
        uow.commit()


def test_ladder_days_in_qms_yaml(repo) -> None:  # noqa: ANN001
    path = repo / "qms.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["capa"] = {"remind_after_days": 2, "escalate_after_days": 10, "escalate_further_after_days": 20}
    raw["approvals"] = {"remind_after_days": 2, "escalate_after_days": 4, "escalate_further_after_days": 8}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    config = load_config(path).config
    assert [r.after_days for r in config.capa.ladder().rungs] == [2, 10, 20]
    assert [r.after_days for r in config.approvals.ladder().rungs] == [2, 4, 8]
    raw["capa"] = {"remind_after_days": 5, "escalate_after_days": 3}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert "escalate_after_days must be greater" in str(refused.value)
