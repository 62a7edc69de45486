from __future__ import annotations

from datetime import date

import pytest

from qmsflow.domain.errors import RetentionError
from qmsflow.domain.records import human_id, parse_human_id
from qmsflow.domain.retention import SystemLifecycle, check_deletable, retention_end

ON_MARKET = SystemLifecycle("triage", date(2026, 9, 1), None)
WITHDRAWN = SystemLifecycle("old", date(2020, 1, 1), date(2024, 6, 30))


def test_record_of_a_system_on_the_market_is_kept_indefinitely() -> None:
    assert retention_end(date(2010, 1, 1), [ON_MARKET], 10) is None
    with pytest.raises(RetentionError, match="triage not withdrawn"):
        check_deletable("record X", date(2010, 1, 1), [ON_MARKET], 10, date(2040, 1, 1))


def test_retention_runs_from_withdrawal() -> None:
    assert retention_end(date(2021, 5, 1), [WITHDRAWN], 10) == date(2034, 6, 30)
    with pytest.raises(RetentionError, match="until 2034-06-30"):
        check_deletable("record X", date(2021, 5, 1), [WITHDRAWN], 10, date(2034, 6, 29))
    check_deletable("record X", date(2021, 5, 1), [WITHDRAWN], 10, date(2034, 6, 30))


def test_record_without_systems_is_kept_years_after_creation() -> None:
    assert retention_end(date(2026, 2, 28), [], 10) == date(2036, 2, 28)


def test_human_ids() -> None:
    assert human_id("capa", 2026, 7) == "CAPA-2026-0007"
    assert parse_human_id("CAPA-2026-0007") == ("CAPA", 2026, 7)
    with pytest.raises(ValueError, match="unknown record kind"):
        human_id("nope", 2026, 1)
    with pytest.raises(ValueError, match="not a record id"):
        parse_human_id("capa-7")
