"""Retention of records (EU AI Act Art. 18: ten years after placing on the market)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from .documents import add_months
from .errors import RetentionError


@dataclass(frozen=True)
class SystemLifecycle:
    id: str
    placed_on_market: date | None
    withdrawn_on: date | None


def retention_end(created: date, systems: list[SystemLifecycle], years: int) -> date | None:
    """The first day a record may be deleted, or ``None`` while it must be kept indefinitely.

    A record is kept ``years`` after its creation and, for every AI system it concerns, until
    ``years`` after that system was withdrawn; while any such system is on the market or not yet
    placed on it, the end is not known and the record is kept.
    """
    end = add_months(created, 12 * years)
    for system in systems:
        if system.withdrawn_on is None:
            return None
        end = max(end, add_months(system.withdrawn_on, 12 * years))
    return end


def check_deletable(what: str, created: date, systems: list[SystemLifecycle], years: int, today: date) -> None:
    """Raise ``RetentionError`` with the reason when ``what`` is still under retention."""
    end = retention_end(created, systems, years)
    if end is None:
        on_market = [s.id for s in systems if s.withdrawn_on is None]
        raise RetentionError(
            f"{what} must be kept: AI system(s) {', '.join(on_market)} not withdrawn from the market; "
            f"records are kept {years} years after withdrawal (EU AI Act Art. 18)"
        )
    if today < end:
        raise RetentionError(f"{what} must be kept until {end.isoformat()} ({years}-year retention, EU AI Act Art. 18)")
