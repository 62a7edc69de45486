"""SOP-CAPA-001's closure rules on a real store (SQLite and PostgreSQL), through `qms capa advance` as a
signed-in person: every bad input seen accepted before issue 21 is refused with an error naming the field,
exit code 1, the CAPA unchanged and the refusal recorded in the trail; a correct closure still closes."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest
from identityutil import sign, token

from qmsflow.cli.main import run
from qmsflow.context import QmsContext
from qmsflow.services import capa
from qmsflow.store import UnitOfWork, trail
from qmsflow.store.tables import RecordRow

TODAY = date.today()
SIMILAR = {"checked": True, "scope": "every dataset of triage-assist", "found": []}
ACTIONS = [{"what": "Add a label audit", "owner": "dev", "due": "2027-01-31"}]


@pytest.fixture
def cli(synced_ctx: QmsContext, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):  # noqa: ANN201
    """`qms ARGS -c qms.yaml` as dev (the CAPA owner), returning (exit code, stdout, stderr)."""
    for var in ("SLACK_BOT_TOKEN", "JIRA_API_TOKEN", "JIRA_EMAIL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("QMS_TOKEN", token(synced_ctx.db, "dev"))
    cfg = str(synced_ctx.loaded.path)

    def call(*args: str) -> tuple[int, str, str]:
        code = run([*args, "-c", cfg])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return call


def field_args(fields: dict) -> list[str]:
    out = []
    for name, value in fields.items():
        out += ["-f", f"{name}={value if isinstance(value, str) else json.dumps(value)}"]
    return out


def to_effectiveness_check(ctx: QmsContext) -> str:
    """A CAPA owned by dev, its plan approved by ana, in effectiveness_check."""
    with UnitOfWork(ctx.db, "dev") as uow:
        row = capa.open_capa(uow, ctx.config, title="Mislabelled data", source="release", owner="dev")
        uow.commit()
        capa_id = row.id
    for target, fields in (
        ("containment", {"correction": "rolled back"}),
        ("root_cause", {"method": "5 whys", "cause": "label drift", "similar_cases": SIMILAR}),
        ("action_plan", {"actions": ACTIONS}),
    ):
        with UnitOfWork(ctx.db, "dev") as uow:
            result = capa.advance(uow, ctx.config, capa_id, target, fields)
    with UnitOfWork(ctx.db, "ana") as uow:
        sign(uow, ctx.config, result["awaiting"], "ana")
    for target, fields in (("implementation", {}), ("effectiveness_check", {"evidence": {"0": ["https://ci/42"]}})):
        with UnitOfWork(ctx.db, "dev") as uow:
            capa.advance(uow, ctx.config, capa_id, target, fields)
    return capa_id


def good_closure() -> dict:
    return {
        "result": "effective",
        "checked_by": "chloe",
        "checked_on": TODAY.isoformat(),
        "early_reason": "the regression test reproduces the failure and now passes on every run",
        "no_adverse_effect": True,
        "no_adverse_effect_reasoning": "the audit only adds a check before training; outputs are unchanged",
        "risk_update": "RSK-12 likelihood lowered",
    }


def refusals(ctx: QmsContext, capa_id: str) -> list[dict]:
    with ctx.db.read() as s:
        return [
            json.loads(e.after_json)
            for e in trail.events_for(s, f"record:{capa_id}")
            if e.action == "capa.advance-refused"
        ]


def status(ctx: QmsContext, capa_id: str) -> tuple[str, dict]:
    with ctx.db.read() as s:
        row = s.get(RecordRow, capa_id)
        return row.status, dict(row.data)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"no_adverse_effect": False}, "no_adverse_effect must be true"),  # seen: -f no_adverse_effect=false closed
        ({"no_adverse_effect": "No effect"}, "no_adverse_effect must be true"),
        ({"no_adverse_effect_reasoning": None}, "needs no_adverse_effect_reasoning"),
        (
            {"checked_by": "dev"},
            "checked_by: the effectiveness check must be made by someone other than the CAPA owner",
        ),
        ({"checked_by": "nobody-x"}, "checked_by: 'nobody-x' is not a person of qms.yaml"),
        ({"checked_on": None}, "needs checked_on"),
        ({"checked_on": (TODAY + timedelta(days=1)).isoformat()}, "checked_on: .* is in the future"),
        ({"early_reason": None}, "checked_on: .* is before the effectiveness due date"),
    ],
)
def test_bad_closures_are_refused_naming_the_field_and_recorded(
    synced_ctx: QmsContext, cli, change: dict, message: str
) -> None:  # noqa: ANN001
    import re

    capa_id = to_effectiveness_check(synced_ctx)
    fields = {k: v for k, v in {**good_closure(), **change}.items() if v is not None}
    code, _, err = cli("capa", "advance", capa_id, "--to", "closed", *field_args(fields))
    assert code == 1 and re.search(message, err), err
    assert "Traceback" not in err
    stage, data = status(synced_ctx, capa_id)
    assert stage == "effectiveness_check" and "pending" not in data  # no approval request opened
    [refusal] = refusals(synced_ctx, capa_id)
    assert refusal["target"] == "closed" and re.search(message, refusal["refused"])


def test_the_literal_cli_input_no_adverse_effect_false_is_refused(synced_ctx: QmsContext, cli) -> None:  # noqa: ANN001
    capa_id = to_effectiveness_check(synced_ctx)
    args = ["-f", "result=effective", "-f", "checked_by=chloe", "-f", f"checked_on={TODAY}", "-f", "early_reason=r"]
    args += ["-f", "no_adverse_effect=false", "-f", "no_adverse_effect_reasoning=x", "-f", "risk_update=none"]
    code, _, err = cli("capa", "advance", capa_id, "--to", "closed", *args)
    assert code == 1 and "no_adverse_effect must be true" in err and "got False" in err
    assert status(synced_ctx, capa_id)[0] == "effectiveness_check"


def test_an_action_owner_not_in_qms_yaml_is_refused(synced_ctx: QmsContext, cli) -> None:  # noqa: ANN001
    with UnitOfWork(synced_ctx.db, "dev") as uow:
        capa_id = capa.open_capa(uow, synced_ctx.config, title="t", source="audit", owner="dev").id
    assert cli("capa", "advance", capa_id, "--to", "containment", "-f", "correction=stopped")[0] == 0
    root = {"method": "5 whys", "cause": "drift", "similar_cases": SIMILAR}
    assert cli("capa", "advance", capa_id, "--to", "root_cause", *field_args(root))[0] == 0
    bad = [{**ACTIONS[0]}, {"what": "retrain", "owner": "nobody-x", "due": "2027-02-01"}]
    code, _, err = cli("capa", "advance", capa_id, "--to", "action_plan", *field_args({"actions": bad}))
    assert code == 1 and "actions[1].owner: 'nobody-x' is not a person of qms.yaml" in err
    assert status(synced_ctx, capa_id)[0] == "root_cause" and refusals(synced_ctx, capa_id)
    code, out, _ = cli("capa", "advance", capa_id, "--to", "action_plan", *field_args({"actions": ACTIONS}))
    assert code == 0 and "needs a signature" in out


def test_similar_cases_as_free_text_is_refused(synced_ctx: QmsContext, cli) -> None:  # noqa: ANN001
    with UnitOfWork(synced_ctx.db, "dev") as uow:
        capa_id = capa.open_capa(uow, synced_ctx.config, title="t", source="audit", owner="dev").id
    assert cli("capa", "advance", capa_id, "--to", "containment", "-f", "correction=stopped")[0] == 0
    args = ["-f", "method=5 whys", "-f", "cause=drift", "-f", "similar_cases=none"]
    code, _, err = cli("capa", "advance", capa_id, "--to", "root_cause", *args)
    assert code == 1 and "similar_cases must be" in err
    assert status(synced_ctx, capa_id)[0] == "containment"


def test_a_correct_closure_still_closes_and_keeps_the_dated_independent_check(synced_ctx: QmsContext, cli) -> None:  # noqa: ANN001
    capa_id = to_effectiveness_check(synced_ctx)
    code, out, err = cli("capa", "advance", capa_id, "--to", "closed", *field_args(good_closure()))
    assert code == 0, err
    request_id = out.split("approval ")[1].split()[0]
    with UnitOfWork(synced_ctx.db, "ana") as uow:
        sign(uow, synced_ctx.config, request_id, "ana")
    stage, data = status(synced_ctx, capa_id)
    assert stage == "closed" and refusals(synced_ctx, capa_id) == []
    closed = data["stages"]["closed"]
    assert closed["no_adverse_effect"] is True and closed["recorded_by"] == "dev" and closed["signed_by"] == "ana"
    [check] = data["stages"]["effectiveness_checks"]
    assert check["checked_by"] == "chloe" and check["checked_on"] == TODAY.isoformat() and check["early_reason"]
