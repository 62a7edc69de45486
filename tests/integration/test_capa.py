"""CAPA: the stage rules, a property test that no path closes a CAPA without its evidence, and the
service with signed stages through approval requests."""

from __future__ import annotations

from datetime import date, timedelta

import identityutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qmsflow.context import QmsContext
from qmsflow.domain.approvals import NotAuthorized
from qmsflow.domain.capa import SIGNED_STAGES, STAGES, Capa, Facts, MissingField, closure_signers, is_closable
from qmsflow.domain.errors import DomainError, InvalidTransition
from qmsflow.services import capa
from qmsflow.store import UnitOfWork, trail
from qmsflow.store.tables import RecordRow

PEOPLE = ["ana", "ben", "chloe", "dev"]
TODAY = date.today()
FACTS = Facts(people=frozenset(PEOPLE), today=TODAY)
SIMILAR = {"checked": True, "scope": "batches 1-20 of every dataset", "found": []}
FULL = {
    "containment": {"correction": "Model rolled back to v1.3"},
    "root_cause": {"method": "5 whys", "cause": "Label drift in batch 12", "similar_cases": SIMILAR},
    "action_plan": {"actions": [{"what": "Add label audit", "owner": "dev", "due": "2026-12-20"}]},
    "implementation": {},
    "effectiveness_check": {"evidence": {"0": ["https://ci.example/run/42"]}},
    "closed": {
        "result": "effective",
        "checked_by": "ana",
        "checked_on": TODAY.isoformat(),
        "early_reason": "the regression test reproduces the failure and passes on every run",
        "no_adverse_effect": True,
        "no_adverse_effect_reasoning": "The label audit only adds a check; outputs and oversight are unchanged",
        "risk_update": "RSK-12 likelihood lowered",
    },
}

field_sets = st.dictionaries(
    st.sampled_from(
        [
            "correction",
            "method",
            "cause",
            "similar_cases",
            "actions",
            "evidence",
            "result",
            "checked_by",
            "checked_on",
            "notes",
            "no_adverse_effect",
            "no_adverse_effect_reasoning",
            "risk_update",
            "no_risk_update_reason",
        ]
    ),
    st.one_of(
        st.none(),
        st.just(""),
        st.just("x"),
        st.just("effective"),
        st.just("ineffective"),
        st.just([{"what": "w", "owner": "dev", "due": "2026-12-01"}]),
        st.just({"0": ["link"]}),
        st.just([]),
        st.just(False),
        st.just(True),
        st.just("dev"),
        st.just("nobody-x"),
        st.just(TODAY.isoformat()),
        st.just((TODAY + timedelta(days=3)).isoformat()),
        st.just({"checked": False, "reason": "r"}),
    ),
    max_size=3,
)
# None = "one of the stages the CAPA allows next" (so that sequences reach closure often), else any stage
events = st.lists(
    st.tuples(
        st.one_of(st.none(), st.none(), st.none(), st.sampled_from(STAGES)),
        st.one_of(st.just({}), field_sets),
        st.sampled_from([*PEOPLE, "ana", "ana"]),
        st.booleans(),
        st.integers(0, 1),
    ),
    min_size=10,
    max_size=80,
)
reached: list[int] = []


@given(events)
@settings(max_examples=400, deadline=None)
def test_no_event_sequence_closes_a_capa_without_its_evidence(sequence: list) -> None:
    """Random stage requests with random data and random signers: a CAPA that reaches `closed`
    always has an effective check, a risk update or reason, the no-adverse-effect statement and a
    closure signature by someone other than its owner, and a dated check by someone else."""
    c = Capa(id="CAPA-2026-0001", title="t", source="audit", owner="dev", process="capa")
    for wanted, fields, signer, use_full, pick in sequence:
        options = c.next_stages()
        target = wanted or (options[pick % len(options)] if options else "closed")
        data = {**FULL.get(target, {}), **fields} if use_full else dict(fields)
        try:
            stage_data = c.check_advance(target, data, FACTS)
        except DomainError:
            continue
        if target in SIGNED_STAGES:
            if signer not in closure_signers(c.owner, "ana", ["ana"]):
                continue  # the approval service refuses this signer
            stage_data = {**stage_data, "signed_by": signer}
        c.apply(target, stage_data)
        if c.stage == "closed":
            assert is_closable(c) == []
            reached.append(1)
            break


def test_the_property_test_does_reach_closure() -> None:
    """Guard against a vacuous property: the generator must close CAPAs in a good share of runs."""
    reached.clear()
    test_no_event_sequence_closes_a_capa_without_its_evidence()
    assert len(reached) >= 20, len(reached)


def test_the_happy_path_and_the_loop_back_on_an_ineffective_check() -> None:
    c = Capa(id="CAPA-1", title="t", source="audit", owner="dev", process="capa")
    for stage in STAGES[1:-1]:
        c.apply(stage, c.check_advance(stage, FULL[stage], FACTS))
    assert c.next_stages() == ["closed", "root_cause"]
    again = {"result": "ineffective", "checked_by": "ana", "checked_on": TODAY.isoformat(), "notes": "drift again"}
    back = c.check_advance("root_cause", again, FACTS)
    c.apply("root_cause", back)
    assert c.stage == "root_cause" and c.data["effectiveness_checks"][-1]["result"] == "ineffective"


def test_errors_name_the_missing_field() -> None:
    c = Capa(id="CAPA-1", title="t", source="audit", owner="dev", process="capa")
    with pytest.raises(MissingField, match="moving to containment needs correction"):
        c.check_advance("containment", {}, FACTS)
    with pytest.raises(InvalidTransition, match=r"cannot move to closed \(allowed: containment\)"):
        c.check_advance("closed", FULL["closed"], FACTS)
    c.apply("containment", FULL["containment"])
    with pytest.raises(MissingField, match="needs method, cause, similar_cases"):
        c.check_advance("root_cause", {"method": " "}, FACTS)


def test_closure_never_by_the_capa_owner() -> None:
    assert closure_signers("ana", "ana", ["ana"]) == []
    assert closure_signers("dev", "ana", ["ana", "ben"]) == ["ana", "ben"]


# ------------------------------------------------------------------ service


@pytest.fixture
def synced(synced_ctx: QmsContext, monkeypatch: pytest.MonkeyPatch) -> QmsContext:
    """The scaffolded repo, synced, on SQLite and on PostgreSQL (``synced_ctx``), without integrations."""
    for var in ("SLACK_BOT_TOKEN", "JIRA_API_TOKEN", "JIRA_EMAIL"):
        monkeypatch.delenv(var, raising=False)
    return synced_ctx


def advance(ctx: QmsContext, capa_id: str, target: str, fields: dict, who: str = "dev") -> dict:
    with UnitOfWork(ctx.db, who) as uow:
        result = capa.advance(uow, ctx.config, capa_id, target, fields)
        uow.commit()
    return result


def sign(ctx: QmsContext, request_id: str, person: str) -> None:
    with UnitOfWork(ctx.db, person) as uow:
        identityutil.sign(uow, ctx.config, request_id, person)


def test_capa_through_every_stage_with_signed_plan_and_closure(synced: QmsContext) -> None:
    with UnitOfWork(synced.db, "dev") as uow:
        row = capa.open_capa(
            uow,
            synced.config,
            title="Mislabelled data in release 4.2",
            source="release",
            owner="dev",
            severity="high",
            systems=["triage-assist"],
        )
        uow.commit()
        capa_id = row.id
    assert capa_id.startswith("CAPA-") and capa_id.endswith("-0001")
    advance(synced, capa_id, "containment", FULL["containment"])
    advance(synced, capa_id, "root_cause", FULL["root_cause"])
    waiting = advance(synced, capa_id, "action_plan", FULL["action_plan"])
    request_id = waiting["awaiting"]
    with pytest.raises(InvalidTransition, match="waits for approval"):
        advance(synced, capa_id, "implementation", {})
    with pytest.raises(NotAuthorized, match="author of this change"):
        sign(synced, request_id, "dev")  # the CAPA owner
    sign(synced, request_id, "ana")  # the process owner and quality lead
    advance(synced, capa_id, "implementation", {})
    with pytest.raises(MissingField, match=r"evidence missing for action\(s\) 0"):
        advance(synced, capa_id, "effectiveness_check", {"evidence": {"1": ["x"]}})
    advance(synced, capa_id, "effectiveness_check", FULL["effectiveness_check"])
    with pytest.raises(MissingField, match="risk_update or no_risk_update_reason"):
        advance(synced, capa_id, "closed", {**FULL["closed"], "risk_update": None})
    closing = advance(synced, capa_id, "closed", FULL["closed"])
    sign(synced, closing["awaiting"], "ana")
    with synced.db.read() as s:
        row = s.get(RecordRow, capa_id)
        assert row.status == "closed" and row.due_date is None
        stages = row.data["stages"]
        assert stages["closed"]["signed_by"] == "ana" and stages["action_plan"]["signed_by"] == "ana"
        assert (
            is_closable(
                Capa(id=capa_id, title="t", source="release", owner="dev", process="capa", stage="closed", data=stages)
            )
            == []
        )
        actions = [e.action for e in trail.events_for(s, f"record:{capa_id}")]
    assert actions.count("capa.advanced") == 6 and "capa.approval-requested" in actions


def test_each_stage_is_due_by_severity_and_the_check_thirty_days_later(synced: QmsContext) -> None:
    """SOP-CAPA-001 4.1 and 4.7 (capability capa.stage_due): the days of STAGE_DAYS and EFFECTIVENESS_DAYS."""
    today = UnitOfWork.now().date()
    opened = {}
    for severity, days in (("critical", 3), ("high", 10), ("medium", 20), ("low", 30)):
        with UnitOfWork(synced.db, "dev") as uow:
            row = capa.open_capa(
                uow, synced.config, title=f"{severity} one", source="pms", owner="dev", severity=severity
            )
            uow.commit()
            assert row.due_date == today + timedelta(days=days), severity
            opened[severity] = row.id
    capa_id = opened["critical"]

    def due() -> tuple:
        with synced.db.read() as s:
            row = s.get(RecordRow, capa_id)
            return row.due_date, row.data.get("effectiveness_due")

    advance(synced, capa_id, "containment", FULL["containment"])
    assert due() == (today + timedelta(days=3), None)  # each new stage: its own days from today
    advance(synced, capa_id, "root_cause", FULL["root_cause"])
    sign(synced, advance(synced, capa_id, "action_plan", FULL["action_plan"])["awaiting"], "ana")
    advance(synced, capa_id, "implementation", {})
    assert due() == (today + timedelta(days=30), None)
    advance(synced, capa_id, "effectiveness_check", FULL["effectiveness_check"])
    assert due() == (today + timedelta(days=30), (today + timedelta(days=30)).isoformat())
    sign(synced, advance(synced, capa_id, "closed", FULL["closed"])["awaiting"], "ana")
    assert due()[0] is None


def test_open_refuses_bad_input(synced: QmsContext) -> None:
    with UnitOfWork(synced.db, "dev") as uow:
        with pytest.raises(DomainError, match="source 'rumour' is not allowed"):
            capa.open_capa(uow, synced.config, title="t", source="rumour", owner="dev")
        with pytest.raises(DomainError, match="owner 'zoe' is not a person"):
            capa.open_capa(uow, synced.config, title="t", source="audit", owner="zoe")
        with pytest.raises(DomainError, match="unknown AI system"):
            capa.open_capa(uow, synced.config, title="t", source="audit", owner="dev", systems=["nope"])


def test_escalation_goes_to_owner_then_manager_once(synced: QmsContext) -> None:
    with UnitOfWork(synced.db, "dev") as uow:
        row = capa.open_capa(uow, synced.config, title="Late", source="audit", owner="dev", severity="critical")
        uow.commit()
        capa_id, due = row.id, row.due_date
    with UnitOfWork(synced.db, "qmsflow") as uow:
        first = capa.escalate_overdue(uow, synced.config, date.fromordinal(due.toordinal() + 1))
        uow.commit()
        assert first == [(capa_id, "remind", "dev")]
        later = capa.escalate_overdue(uow, synced.config, date.fromordinal(due.toordinal() + 8))
        uow.commit()
        assert later == [(capa_id, "escalate", "chloe")]
        assert capa.escalate_overdue(uow, synced.config, date.fromordinal(due.toordinal() + 9)) == []
    with synced.db.read() as s:
        assert [e.action for e in trail.events_for(s, f"record:{capa_id}")].count("capa.escalated") == 2


def test_cli_errors_name_the_missing_field(
    synced: QmsContext, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from identityutil import token

    from qmsflow.cli.main import run

    monkeypatch.setenv("QMS_TOKEN", token(synced.db, "ana"))  # the CLI acts as the signed-in person
    cfg = str(synced.loaded.path)
    assert run(["capa", "open", "-c", cfg, "--title", "Drift", "--source", "pms", "--owner", "dev"]) == 0
    capa_id = capsys.readouterr().out.split()[0]
    assert run(["capa", "advance", capa_id, "--to", "containment", "-c", cfg]) == 1
    assert "moving to containment needs correction" in capsys.readouterr().err
    assert run(["capa", "advance", capa_id, "--to", "containment", "-f", "correction=rolled back", "-c", cfg]) == 0
    assert "now in containment" in capsys.readouterr().out
    assert run(["capa", "list", "-c", cfg]) == 0 and capa_id in capsys.readouterr().out
    assert run(["capa", "show", capa_id, "-c", cfg]) == 0 and "rolled back" in capsys.readouterr().out
