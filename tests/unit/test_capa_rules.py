"""SOP-CAPA-001's closure rules (issue 21, point 4), without a database: each input seen accepted before
is refused with an error naming the field, and a correct closure still passes."""

from __future__ import annotations

from datetime import date

import pytest

from qmsflow.domain.capa import Capa, Facts, MissingField, is_closable

TODAY = date(2027, 3, 1)
FACTS = Facts(people=frozenset({"ana", "ben", "chloe", "dev"}), today=TODAY)
SIMILAR = {"checked": True, "scope": "all datasets of triage-assist", "found": ["CAPA-2026-0002"]}
CLOSURE = {
    "result": "effective",
    "checked_by": "ana",
    "checked_on": "2027-02-28",
    "no_adverse_effect": True,
    "no_adverse_effect_reasoning": "only a new check was added; outputs unchanged",
    "risk_update": "RSK-12 lowered",
}


def at(stage: str, **extra: object) -> Capa:
    return Capa(id="CAPA-1", title="t", source="audit", owner="dev", process="capa", stage=stage, **extra)


def close(capa: Capa, **changes: object) -> dict:
    fields = {k: v for k, v in {**CLOSURE, **changes}.items() if v is not None}
    return capa.check_advance("closed", fields, FACTS)


def test_a_correct_closure_passes_and_its_dates_are_normalised() -> None:
    data = close(at("effectiveness_check", effectiveness_due=date(2027, 2, 28)))
    assert data["no_adverse_effect"] is True and data["checked_on"] == "2027-02-28"


@pytest.mark.parametrize("value", [False, "false", "no", "yes", "true", 1, "No effect on safety"])
def test_no_adverse_effect_must_be_the_value_true(value: object) -> None:
    with pytest.raises(MissingField, match="no_adverse_effect must be true"):
        close(at("effectiveness_check"), no_adverse_effect=value)


def test_no_adverse_effect_needs_its_reasoning() -> None:
    with pytest.raises(MissingField, match="needs no_adverse_effect_reasoning"):
        close(at("effectiveness_check"), no_adverse_effect_reasoning=None)
    with pytest.raises(MissingField, match="needs no_adverse_effect_reasoning"):
        close(at("effectiveness_check"), no_adverse_effect_reasoning="   ")


def test_the_verifier_is_a_person_of_qms_yaml_other_than_the_capa_owner() -> None:
    with pytest.raises(MissingField, match=r"checked_by: 'nobody-x' is not a person of qms.yaml \(people: ana, ben"):
        close(at("effectiveness_check"), checked_by="nobody-x")
    with pytest.raises(MissingField, match="checked_by: the effectiveness check must be made by someone other than"):
        close(at("effectiveness_check"), checked_by="dev")
    back = {"result": "ineffective", "checked_by": "dev", "checked_on": "2027-02-01", "notes": "recurred"}
    with pytest.raises(MissingField, match="checked_by: the effectiveness check must be made by someone other"):
        at("effectiveness_check").check_advance("root_cause", back, FACTS)


def test_the_check_is_dated_not_in_the_future_and_not_early_without_a_reason() -> None:
    with pytest.raises(MissingField, match="needs checked_on"):
        close(at("effectiveness_check"), checked_on=None)
    with pytest.raises(MissingField, match="checked_on: 'last week' is not a date"):
        close(at("effectiveness_check"), checked_on="last week")
    with pytest.raises(MissingField, match="checked_on: 2027-03-02 is in the future"):
        close(at("effectiveness_check"), checked_on="2027-03-02")
    early = at("effectiveness_check", effectiveness_due=date(2027, 3, 1))
    with pytest.raises(MissingField, match="checked_on: 2027-02-28 is before the effectiveness due date 2027-03-01"):
        close(early)
    assert close(early, early_reason="the failing case is reproduced by a test that now passes")["early_reason"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("Checked batches 1-20", "similar_cases must be"),
        ("none", "similar_cases must be"),
        ({"scope": "x"}, "similar_cases.checked must be true or false"),
        ({"checked": "yes", "scope": "x"}, "similar_cases.checked must be true or false"),
        ({"checked": True}, "similar_cases.scope: say where the check looked"),
        ({"checked": True, "scope": "x", "found": "CAPA-2"}, "similar_cases.found"),
        ({"checked": True, "scope": "x", "found": [" "]}, "similar_cases.found: an entry is blank"),
        ({"checked": False}, "similar_cases.reason: a check that was not made needs its reason"),
        ({"checked": False, "reason": "r", "found": ["X"]}, "cases found, but checked is false"),
        ({"checked": True, "scope": "x", "extra": 1}, "similar_cases.extra"),
    ],
)
def test_similar_cases_is_a_structured_answer(value: object, message: str) -> None:
    fields = {"method": "5 whys", "cause": "drift", "similar_cases": value}
    with pytest.raises(MissingField, match=message):
        at("containment").check_advance("root_cause", fields, FACTS)


def test_similar_cases_accepted_answers() -> None:
    fields = {"method": "5 whys", "cause": "drift", "similar_cases": SIMILAR}
    assert at("containment").check_advance("root_cause", fields, FACTS)["similar_cases"]["found"] == ["CAPA-2026-0002"]
    none_made = {"checked": False, "reason": "the dataset was deleted under the retention policy"}
    data = at("containment").check_advance("root_cause", {**fields, "similar_cases": none_made}, FACTS)
    assert data["similar_cases"] == {**none_made, "scope": "", "found": []}


def test_action_owners_are_people_of_qms_yaml() -> None:
    actions = [
        {"what": "a", "owner": "dev", "due": "2027-04-01"},
        {"what": "b", "owner": "nobody-x", "due": "2027-04-01"},
    ]
    with pytest.raises(MissingField, match=r"actions\[1\].owner: 'nobody-x' is not a person of qms.yaml"):
        at("root_cause").check_advance("action_plan", {"actions": actions}, FACTS)
    assert (
        at("root_cause").check_advance("action_plan", {"actions": actions[:1]}, FACTS)["actions"][0]["owner"] == "dev"
    )


def test_an_action_key_that_is_not_known_is_refused_not_dropped() -> None:
    actions = [{"what": "a", "owner": "dev", "due": "2027-04-01", "effectivness": "no relabelling errors in 30 days"}]
    with pytest.raises(MissingField, match=r"actions\[0\].effectivness: Extra inputs are not permitted"):
        at("root_cause").check_advance("action_plan", {"actions": actions}, FACTS)
    with_evidence = [{"what": "a", "owner": "dev", "due": "2027-04-01", "evidence": ["https://ci.example/run/1"]}]
    [kept] = at("root_cause").check_advance("action_plan", {"actions": with_evidence}, FACTS)["actions"]
    assert kept["evidence"] == ["https://ci.example/run/1"]


def test_is_closable_rejects_a_closure_without_true_statement_or_independent_dated_check() -> None:
    capa = at("closed")
    capa.data = {
        "effectiveness_checks": [{"result": "effective", "checked_by": "dev"}],
        "closed": {"result": "effective", "no_adverse_effect": "false", "risk_update": "x", "signed_by": "ana"},
    }
    problems = is_closable(capa)
    assert "no 'no adverse effect' statement with its reasoning" in problems
    assert "no dated effectiveness check by someone other than the CAPA owner" in problems


def test_a_verifier_that_is_not_a_name_is_refused_naming_the_field() -> None:
    with pytest.raises(MissingField, match=r"checked_by: \['ana'\] is not a person"):
        close(at("effectiveness_check"), checked_by=["ana"])


def test_further_fields_given_with_a_move_are_kept_as_written() -> None:
    """SOP-CAPA-001 4.2 (capability capa.further_fields_kept): an Art. 20 decision given with a move is kept."""
    capa = at("opened")
    fields = {"correction": "model rolled back", "art20_decision": "withdrawn from deployer X on 2027-02-27"}
    data = capa.check_advance("containment", fields, FACTS)
    capa.apply("containment", data)
    assert capa.data["containment"] == fields
    checked = at("effectiveness_check")
    checked.apply("closed", close(checked, notices_sent="distributors and deployers informed 2027-02-28"))
    assert checked.data["closed"]["notices_sent"] == "distributors and deployers informed 2027-02-28"
