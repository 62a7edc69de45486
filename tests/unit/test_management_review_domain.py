"""Management review domain: quarters, the first working day, the inputs and outputs, the submission rule."""

from __future__ import annotations

from datetime import date

import pytest

from qmsflow.domain import management_review as mr
from qmsflow.domain.errors import DomainError, InvalidTransition
from qmsflow.domain.organisation import QmsConfig
from qmsflow.domain.procedures import MACHINES


def test_period_parse_and_bounds() -> None:
    p = mr.Period.parse("2027Q1")
    assert (p.year, p.quarter, str(p)) == (2027, 1, "2027Q1")
    assert p.start == date(2027, 1, 1) and p.end == date(2027, 4, 1)
    assert mr.Period.parse("2027-q4").next() == mr.Period(2028, 1)
    assert mr.Period(2027, 1).previous() == mr.Period(2026, 4)
    assert mr.Period.of(date(2027, 8, 15)) == mr.Period(2027, 3)


@pytest.mark.parametrize("bad", ["2027Q5", "2027", "Q1 2027", "", "2027Q0"])
def test_period_refuses_what_is_not_a_quarter(bad: str) -> None:
    with pytest.raises(DomainError, match="not a quarter"):
        mr.Period.parse(bad)


def test_window_is_in_the_organisation_time_zone() -> None:
    start, end = mr.Period(2027, 2).window("Europe/Berlin")
    assert start.isoformat() == "2027-03-31T22:00:00+00:00"  # CEST: UTC+2
    assert end.isoformat() == "2027-06-30T22:00:00+00:00"
    start, _ = mr.Period(2027, 1).window("UTC")
    assert start.isoformat() == "2027-01-01T00:00:00+00:00"
    with pytest.raises(DomainError, match="not a time zone"):
        mr.Period(2027, 1).window("Mars/Olympus")


def test_first_working_day_skips_weekends_new_year_and_listed_days() -> None:
    assert mr.first_working_day(mr.Period(2027, 1)) == date(2027, 1, 4)  # Fri 1 Jan holiday, weekend
    assert mr.first_working_day(mr.Period(2027, 2)) == date(2027, 4, 1)  # Thursday
    assert mr.first_working_day(mr.Period(2027, 3)) == date(2027, 7, 1)
    assert mr.first_working_day(mr.Period(2028, 4)) == date(2028, 10, 2)  # 1 Oct 2028 is a Sunday
    assert mr.first_working_day(mr.Period(2027, 2), [date(2027, 4, 1), date(2027, 4, 2)]) == date(2027, 4, 5)
    assert mr.review_due_on(date(2027, 1, 4)) == mr.Period(2026, 4)
    assert mr.review_due_on(date(2027, 1, 5)) is None
    assert mr.review_due_on(date(2027, 1, 1)) is None
    assert mr.reviewed_period(date(2027, 5, 20)) == mr.Period(2027, 1)


def test_cron_covers_every_first_working_day() -> None:
    from croniter import croniter

    days = set(range(1, 8))
    for year in range(2026, 2040):
        for q in range(1, 5):
            day = mr.first_working_day(mr.Period(year, q))
            assert day.day in days and day.month in (1, 4, 7, 10)
    assert croniter.is_valid(mr.QUARTERLY_CRON)


def test_inputs_cover_9_3_2_and_the_ai_inputs() -> None:
    clauses = {i.clause for i in mr.INPUTS}
    assert clauses == {"a", "b", "c", "d", "e", "f", "ai"}
    assert mr.review_input("c.internal-audit").when_empty == "no internal audit results recorded this quarter"
    assert mr.review_input("c.release-validation").when_empty == "no release validations recorded this quarter"
    with pytest.raises(DomainError, match="not a management review input"):
        mr.review_input("z.nothing")
    assert set(mr.OUTPUT_KINDS) == {"improvement", "qms-changes", "resources"}


def test_submission_names_every_gap() -> None:
    inputs = ["a.previous-actions", "c.capa", "d.resources"]
    minutes = {
        "addressed": {"a.previous-actions": "all closed", "c.capa": "  "},
        "outputs": {"improvement": {"decisions": [{"text": "x", "actions": []}]}, "resources": {"none_because": ""}},
    }
    with pytest.raises(mr.IncompleteMinutes) as caught:
        mr.check_complete("MRV-2027-0001", inputs, minutes)
    text = str(caught.value)
    assert "MRV-2027-0001 cannot be submitted" in text
    assert "input c.capa is not addressed" in text and "input d.resources is not addressed" in text
    assert "a.previous-actions" not in text
    assert "output qms-changes has no decision" in text and "output resources has no decision" in text
    assert "output improvement" not in text
    complete = {
        "addressed": dict.fromkeys(inputs, "considered"),
        "outputs": {
            "improvement": {"decisions": [{"text": "x"}]},
            "qms-changes": {"none_because": "the QMS worked as intended this quarter"},
            "resources": {"none_because": "staffing adequate"},
        },
    }
    mr.check_complete("MRV-2027-0001", inputs, complete)


def test_stage_machine_runs_the_rule_on_submission() -> None:
    record = {"inputs": ["c.capa"], "minutes": {}}
    with pytest.raises(mr.IncompleteMinutes, match="input c.capa"):
        mr.MACHINE.check("MRV-1", "minutes", "signed", {}, record)
    assert mr.MACHINE.signed_targets == {"signed"}
    with pytest.raises(InvalidTransition):
        mr.ACTION_MACHINE.move("MRA-1", "done", "open")
    assert {"management-review", "mr-action"} <= set(MACHINES)


def test_action_needs_a_person_and_a_future_due_date() -> None:
    ok = mr.check_action("MRV-1", {"what": "Hire", "owner": "ana", "due": "2027-06-30"}, ["ana"], date(2027, 4, 1))
    assert ok == {"what": "Hire", "owner": "ana", "due": "2027-06-30"}
    with pytest.raises(DomainError, match="not a person"):
        mr.check_action("MRV-1", {"what": "Hire", "owner": "zoe", "due": "2027-06-30"}, ["ana"], date(2027, 4, 1))
    with pytest.raises(DomainError, match="in the past"):
        mr.check_action("MRV-1", {"what": "Hire", "owner": "ana", "due": "2027-03-30"}, ["ana"], date(2027, 4, 1))
    with pytest.raises(DomainError, match="due"):
        mr.check_action("MRV-1", {"what": "Hire", "owner": "ana"}, ["ana"], date(2027, 4, 1))


def _config(**extra: object) -> dict:
    return {
        "organisation": {"name": "X", **extra.pop("organisation", {})},
        "people": [{"id": "ana", "name": "Ana", "email": "a@x.io", "roles": ["management"]}],
        **extra,
    }


def test_config_timezone_and_top_management() -> None:
    config = QmsConfig.model_validate(_config(organisation={"timezone": "Europe/Berlin"}))
    assert config.organisation.timezone == "Europe/Berlin"
    assert config.top_management() == ["ana"]
    assert QmsConfig.model_validate(_config()).organisation.timezone == "UTC"
    with pytest.raises(ValueError, match="not a time zone"):
        QmsConfig.model_validate(_config(organisation={"timezone": "Europe/Atlantis"}))
    with pytest.raises(ValueError, match="not a schedule"):
        QmsConfig.model_validate(_config(management_review={"schedule": "every full moon"}))
    from qmsflow.domain.organisation import cross_check

    bad = QmsConfig.model_validate(_config(management_review={"top_management": ["zoe"]}))
    assert cross_check(bad) == [(("management_review", "top_management", 0), "'zoe' is not a person (people: ana)")]
