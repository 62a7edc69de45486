"""Run a deadline ladder (domain/deadlines.Ladder) for one waiting item: record each rung, tell its person.

Shared by approval follow-ups and CAPA stage deadlines, and meant for audit findings, management-review
actions and incident clocks: the procedure says what waits (a ref, the people, since when, the stage) and
how to word the notice; this module decides which rungs are due, skips those already sent (their stable
keys are kept in the item's ``data`` under ``sent_in``, so the change is trailed with the item), records
one trail event per rung and queues the Slack notice (idempotent by the same key).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from ..domain.deadlines import Ladder, Level, Notice, notices
from ..domain.organisation import QmsConfig
from ..store.uow import UnitOfWork
from .notices import notify


def climb(
    uow: UnitOfWork,
    config: QmsConfig,
    *,
    ref: str,
    waiting_for: Iterable[str],
    since: datetime,
    now: datetime,
    ladder: Ladder,
    managers: Mapping[str, str | None],
    sent: list[str],
    event: Callable[[Level], str],
    text: Callable[[Notice], str],
    link: str | None,
    stage: str = "",
    legacy_keys: Callable[[Notice], Iterable[str]] = lambda notice: (),
    details: Mapping[str, Any] | None = None,
    stream: str | None = None,
) -> list[Notice]:
    """Fire the rungs of ``ladder`` due ``now`` for ``ref`` (waiting for ``waiting_for`` since ``since``).

    ``sent`` is the item's list of keys already fired (appended to here: the caller stores it in the
    item's data in the same unit of work). ``legacy_keys`` names keys an earlier release wrote for the
    same rung, so an upgraded store does not send it twice. Each rung: one trail event ``event(level)``
    on ``ref`` (key, level, to, waiting for, since, stage) and one Slack notice keyed ``slack:KEY``, in the
    outbox stream ``STREAM:PERSON`` (``stream`` defaults to ``ref``: messages to a person about one item
    go in order).
    """
    already = set(sent)

    def fired(key: str) -> bool:
        return key in already

    due = [
        n
        for n in notices(ref, list(waiting_for), since, now, ladder, managers, fired, stage=stage)
        if not any(k in already for k in legacy_keys(n))
    ]
    for notice in due:
        sent.append(notice.key)
        already.add(notice.key)
        uow.record(
            event(notice.level),
            ref,
            None,
            {
                "key": notice.key,
                "level": notice.level.value,
                "to": notice.to,
                "waiting_for": notice.waiting_for,
                "since": since.isoformat(),
                "stage": stage,
                **(details or {}),
            },
            actor="qmsflow",
        )
        notify(
            uow,
            config,
            notice.to,
            f"slack:{notice.key}",
            f"{stream or ref}:{notice.to}",
            "notice",
            text=text(notice),
            link=link,
        )
    return due
