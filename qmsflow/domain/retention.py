"""Retention of records: EU AI Act Art. 18(1), a stricter organisation policy, and legal holds.

Art. 18(1) keeps the documentation "for a period ending 10 years after the high-risk AI system has been
placed on the market or put into service". The ten years come from the dates file
(``domain/regulatory``, entry ``documentation-retention``), not from code. For each AI system a record
concerns, its period runs from the later of the two dates known (placed on the market, put into service):
when both are given, the later one keeps the record longer, which is the safe reading. A system with
neither date has not started its period: its records are kept. The organisation may be stricter, never
more lenient: ``retention.years`` (at least the legal ten) replaces the ten years, every record is kept at
least that long after its own creation, and ``retention.years_after_withdrawal`` keeps records that many
years after the system's withdrawal too. A record or system under legal hold is never deletable,
whatever the dates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from .capabilities import declare
from .documents import add_months
from .errors import RetentionError

CITATION = "EU AI Act Art. 18(1)"


@dataclass(frozen=True)
class SystemLifecycle:
    id: str
    placed_on_market: date | None = None
    put_into_service: date | None = None
    withdrawn_on: date | None = None
    hold: str | None = None  # the reason of a legal hold on the system, while it lasts
    known: bool = True  # False: the record names a system of which no date was ever known

    def start(self) -> tuple[date, str] | None:
        """When the Art. 18 period starts: the later of the dates known, and which date it is."""
        known = [
            (d, what)
            for d, what in (
                (self.placed_on_market, "placed on the market"),
                (self.put_into_service, "put into service"),
            )
            if d is not None
        ]
        return max(known) if known else None


@dataclass(frozen=True)
class Policy:
    legal_years: int  # Art. 18(1), from the dates file
    years: int  # the organisation's period, at least the legal one
    years_after_withdrawal: int | None = None  # organisation policy: also kept this long after withdrawal
    source: str = "ai_act_dates.yaml"

    def __post_init__(self) -> None:
        if self.years < self.legal_years:
            raise ValueError(f"retention.years {self.years} is shorter than the {self.legal_years} years of {CITATION}")


@dataclass(frozen=True)
class Period:
    """When a record may be deleted, and why."""

    end: date | None  # the first day it may be deleted; None while the end is not known (kept)
    rule: str  # the rule that gave the end, with its citation
    holds: tuple[str, ...] = field(default=())  # legal holds in force (the record's own, its systems')

    @property
    def deletable_from(self) -> str:
        return self.end.isoformat() if self.end else "not known yet"


def _years(n: int) -> str:
    return f"{n} year{'s' if n != 1 else ''}"


# QMS-001 5, SOP-CAPA-001 and the other procedures' records: retention_period below, enforced on deletion
PERIOD = declare(
    "retention.period",
    "qmsflow refuses to delete a record before the end of its retention period: the years of Art. 18(1) "
    "(ten), or the longer `retention.years` of qms.yaml, counted from the later of the dates on which an AI "
    "system the record concerns was placed on the market or put into service, and at least as many years "
    "after the record was made; a record of a system with no such date yet is kept. The refusal states the "
    "rule and is recorded in the audit trail.",
    proved_by=(
        "tests/unit/test_retention_and_records.py::test_the_later_of_placing_and_putting_into_service_starts_the_period",
        "tests/integration/test_retention.py::test_retention_counts_ten_years_from_placing_on_the_market_with_the_rule_cited",
        "tests/integration/test_retention.py::test_records_of_a_system_not_yet_placed_are_kept",
    ),
    module=__name__,
)


def retention_period(
    created: date, systems: list[SystemLifecycle], policy: Policy, record_hold: str | None = None
) -> Period:
    """The retention of a record created on ``created`` concerning ``systems`` (all of them for a
    QMS-wide record), under ``policy``. The latest end wins; an unknown end keeps the record."""
    policy_text = (
        f"{_years(policy.years)} (organisation policy, stricter than the {policy.legal_years} of {CITATION})"
        if policy.years > policy.legal_years
        else f"{_years(policy.years)} ({CITATION})"
    )
    holds = tuple(
        [f"record: {record_hold}"] * bool(record_hold) + [f"system {s.id}: {s.hold}" for s in systems if s.hold]
    )
    end = add_months(created, 12 * policy.years)
    rule = f"kept {_years(policy.years)} after the record was made on {created} (organisation policy)"
    for system in systems:
        if not system.known:
            return Period(
                None,
                f"no date of AI system {system.id} is known to qmsflow; {CITATION} "
                "counts from placing on the market or putting into service",
                holds,
            )
        start = system.start()
        if start is None:
            return Period(
                None,
                f"AI system {system.id} is not yet placed on the market or put into service, so its "
                f"period of {policy_text} has not started",
                holds,
            )
        on, what = start
        candidate = add_months(on, 12 * policy.years)
        if candidate > end:
            end, rule = candidate, f"{policy_text} from {on}, when {system.id} was {what}"
        if policy.years_after_withdrawal is not None:
            if system.withdrawn_on is None:
                return Period(
                    None,
                    f"AI system {system.id} is not withdrawn, and the organisation policy keeps records "
                    f"{_years(policy.years_after_withdrawal)} after withdrawal",
                    holds,
                )
            candidate = add_months(system.withdrawn_on, 12 * policy.years_after_withdrawal)
            if candidate > end:
                end = candidate
                rule = (
                    f"{_years(policy.years_after_withdrawal)} from {system.withdrawn_on}, when {system.id} was "
                    "withdrawn (organisation policy, stricter than " + CITATION + ")"
                )
    return Period(end, rule, holds)


def check_deletable(what: str, period: Period, today: date) -> None:
    """Raise ``RetentionError`` with the reason when ``what`` may not be deleted on ``today``."""
    if period.holds:
        raise RetentionError(
            f"{what} is under legal hold ({'; '.join(period.holds)}): it cannot be deleted until the hold is "
            "released ('qms retention release')"
        )
    if period.end is None:
        raise RetentionError(f"{what} must be kept: {period.rule}")
    if today < period.end:
        raise RetentionError(f"{what} must be kept until {period.end.isoformat()}: {period.rule}")
