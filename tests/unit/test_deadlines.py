"""The deadline ladder shared by approvals, CAPA stages and every later procedure (issue 12)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from qmsflow.domain.deadlines import Ladder, Level, notices

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
MANAGERS = {"dev": "chloe", "chloe": "ben", "ben": None}


def at(days: float) -> datetime:
    return T0 + timedelta(days=days)


def test_each_rung_reaches_its_person_once() -> None:
    ladder = Ladder.of(remind=3, escalate=7, escalate_further=14)
    sent: set[str] = set()

    def fire(now: datetime) -> list[tuple[str, str]]:
        due = notices("approval:APR-1", ["dev"], T0, now, ladder, MANAGERS, sent.__contains__)
        sent.update(n.key for n in due)
        return [(n.level.value, n.to) for n in due]

    assert fire(at(2.9)) == []
    assert fire(at(3)) == [("remind", "dev")]
    assert fire(at(6)) == []
    assert fire(at(8)) == [("escalate", "chloe")]
    assert fire(at(30)) == [("escalate-further", "ben")]
    assert fire(at(60)) == []


def test_a_missing_manager_is_skipped_not_replaced() -> None:
    ladder = Ladder.of(remind=0, escalate=7, escalate_further=14)
    due = notices("record:CAPA-1", ["ben"], T0, at(20), ladder, MANAGERS, lambda key: False)
    assert [(n.level, n.to) for n in due] == [(Level.REMIND, "ben")]


def test_a_new_wait_starts_a_new_ladder() -> None:
    ladder = Ladder.of(remind=0)
    first = notices("record:CAPA-1", ["dev"], T0, at(1), ladder, MANAGERS, lambda key: False, stage="containment")
    later = notices("record:CAPA-1", ["dev"], at(5), at(6), ladder, MANAGERS, lambda key: False, stage="root_cause")
    assert first[0].key != later[0].key


def test_rungs_out_of_order_are_refused() -> None:
    with pytest.raises(ValueError, match="order of their days"):
        Ladder.of(remind=7, escalate=3)
