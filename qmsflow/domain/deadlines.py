"""One deadline ladder for every procedure: remind, escalate to the manager, escalate further.

Something waits for a person (a signature, a CAPA stage, an audit finding, a management-review action,
an incident's reporting clock) since a moment, or is due on a date. A ladder says, in days from that
moment, who is told: the person themselves, their manager, their manager's manager. Each rung fires
once per waiting item and is recorded; the days come from qms.yaml.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class Level(StrEnum):
    REMIND = "remind"  # the person who must act
    ESCALATE = "escalate"  # their manager
    ESCALATE_FURTHER = "escalate-further"  # their manager's manager


@dataclass(frozen=True)
class Rung:
    level: Level
    after_days: float


@dataclass(frozen=True)
class Ladder:
    rungs: tuple[Rung, ...]

    def __post_init__(self) -> None:
        days = [r.after_days for r in self.rungs]
        if days != sorted(days):
            raise ValueError("the rungs of a deadline ladder must come in the order of their days")

    @classmethod
    def of(cls, remind: float | None, escalate: float | None = None, escalate_further: float | None = None) -> Ladder:
        pairs = ((Level.REMIND, remind), (Level.ESCALATE, escalate), (Level.ESCALATE_FURTHER, escalate_further))
        return cls(tuple(Rung(level, days) for level, days in pairs if days is not None))

    def due(self, since: datetime, now: datetime) -> list[Rung]:
        """The rungs reached ``now`` by something waiting since ``since``."""
        return [r for r in self.rungs if now - since >= timedelta(days=r.after_days)]


@dataclass(frozen=True)
class Notice:
    """One rung to fire for one waiting person: ``key`` makes it once-only."""

    key: str
    level: Level
    waiting_for: str
    to: str


def notices(
    ref: str,
    waiting_for: list[str],
    since: datetime,
    now: datetime,
    ladder: Ladder,
    managers: Mapping[str, str | None],
    already: Callable[[str], bool],
    stage: str = "",
) -> list[Notice]:
    """The notices due now for ``ref`` (waiting for each of ``waiting_for`` since ``since``), skipping those
    ``already`` sent; a rung whose addressee does not exist (no manager) is skipped, not sent elsewhere."""
    out = []
    for person in waiting_for:
        for rung in ladder.due(since, now):
            to: str | None = person
            if rung.level is not Level.REMIND:
                to = managers.get(person)
            if rung.level is Level.ESCALATE_FURTHER:
                to = managers.get(to) if to else None
            if not to:
                continue
            key = f"{ref}:{stage}:{since.isoformat()}:{rung.level.value}:{person}"
            if not already(key):
                out.append(Notice(key, rung.level, person, to))
    return out
