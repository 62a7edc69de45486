from __future__ import annotations

from datetime import date

import pytest

from qmsflow.domain.errors import RetentionError
from qmsflow.domain.records import human_id, parse_human_id
from qmsflow.domain.retention import Period, Policy, SystemLifecycle, check_deletable, retention_period

LAW = Policy(legal_years=10, years=10)
PLACED = SystemLifecycle("triage", placed_on_market=date(2026, 9, 1))
IN_SERVICE_LATER = SystemLifecycle("score", placed_on_market=date(2026, 9, 1), put_into_service=date(2027, 3, 1))
NOT_PLACED = SystemLifecycle("credit")
WITHDRAWN = SystemLifecycle("old", placed_on_market=date(2020, 1, 1), withdrawn_on=date(2024, 6, 30))


def test_retention_runs_ten_years_from_placing_on_the_market_and_says_so() -> None:
    """Art. 18(1): a period ending 10 years after placing on the market, whether or not withdrawn."""
    period = retention_period(date(2026, 10, 1), [PLACED], LAW)
    assert period.end == date(2036, 10, 1)  # the record's own ten years are later than the system's
    period = retention_period(date(2026, 8, 1), [PLACED], LAW)
    assert period.end == date(2036, 9, 1)
    assert period.rule == "10 years (EU AI Act Art. 18(1)) from 2026-09-01, when triage was placed on the market"
    assert retention_period(date(2021, 5, 1), [WITHDRAWN], LAW).end == date(2031, 5, 1)  # not from withdrawal
    with pytest.raises(RetentionError, match=r"until 2036-09-01: 10 years \(EU AI Act Art. 18\(1\)\) from 2026-09-01"):
        check_deletable("record X", period, date(2036, 8, 31))
    check_deletable("record X", period, date(2036, 9, 1))


def test_the_later_of_placing_and_putting_into_service_starts_the_period() -> None:
    period = retention_period(date(2026, 1, 1), [IN_SERVICE_LATER], LAW)
    assert period.end == date(2037, 3, 1) and "when score was put into service" in period.rule


def test_records_of_a_system_not_yet_placed_are_kept() -> None:
    period = retention_period(date(2010, 1, 1), [PLACED, NOT_PLACED], LAW)
    assert period.end is None and "credit is not yet placed on the market or put into service" in period.rule
    with pytest.raises(RetentionError, match="must be kept: AI system credit is not yet placed"):
        check_deletable("record X", period, date(2090, 1, 1))
    unknown = retention_period(date(2010, 1, 1), [SystemLifecycle("gone", known=False)], LAW)
    assert unknown.end is None and "no date of AI system gone is known" in unknown.rule


def test_a_stricter_organisation_policy_only_lengthens() -> None:
    longer = Policy(legal_years=10, years=15)
    period = retention_period(date(2026, 8, 1), [PLACED], longer)
    assert period.end == date(2041, 9, 1) and "organisation policy, stricter than the 10 of EU AI Act" in period.rule
    with pytest.raises(ValueError, match="shorter than the 10 years"):
        Policy(legal_years=10, years=5)
    after_withdrawal = Policy(legal_years=10, years=10, years_after_withdrawal=10)
    assert retention_period(date(2021, 5, 1), [WITHDRAWN], after_withdrawal).end == date(2034, 6, 30)
    assert retention_period(date(2021, 5, 1), [PLACED], after_withdrawal).end is None  # not withdrawn: kept


def test_a_legal_hold_blocks_deletion_whatever_the_date() -> None:
    held = retention_period(date(2000, 1, 1), [WITHDRAWN], LAW, record_hold="litigation 2031-7")
    assert held.end == date(2030, 1, 1)
    with pytest.raises(RetentionError, match=r"under legal hold \(record: litigation 2031-7\)"):
        check_deletable("record X", held, date(2099, 1, 1))
    system_hold = SystemLifecycle("old", placed_on_market=date(2000, 1, 1), hold="authority request")
    with pytest.raises(RetentionError, match="system old: authority request"):
        check_deletable("record X", retention_period(date(2000, 1, 1), [system_hold], LAW), date(2099, 1, 1))


def test_record_without_systems_is_kept_years_after_creation() -> None:
    assert retention_period(date(2026, 2, 28), [], LAW) == Period(
        date(2036, 2, 28), "kept 10 years after the record was made on 2026-02-28 (organisation policy)"
    )


def test_human_ids() -> None:
    assert human_id("capa", 2026, 7) == "CAPA-2026-0007"
    assert parse_human_id("CAPA-2026-0007") == ("CAPA", 2026, 7)
    with pytest.raises(ValueError, match="unknown record kind"):
        human_id("nope", 2026, 1)
    with pytest.raises(ValueError, match="not a record id"):
        parse_human_id("capa-7")
