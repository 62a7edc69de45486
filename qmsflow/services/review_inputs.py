"""The inputs of a management review, provided by the procedures that hold the records.

A procedure registers what it contributes to an input of ``domain.management_review.INPUTS``; the
management review service gathers every registered provider and never names a procedure (like
``reactions.on_decided`` and ``mirror.register``)::

    @provides("c.capa")
    def capa_figures(session: Session, config: QmsConfig, window: Window) -> list[Figure]:
        opened = [...]  # ids of the CAPAs opened in [window.start, window.end)
        return [Figure("opened", len(opened), opened), ...]

A provider reads (``session`` is a read session; it must not write), returns its figures, each with the
ids of the records behind it (``Figure.records``: record ids such as ``CAPA-2027-0004``, or references such
as ``document:SOP-DOC-001``, ``approval:APR-2027-0002``, ``trail:1234``), and returns an empty list when it
has nothing for the window. An input no provider gives any figure says so explicitly in the pack
(``ReviewInput.when_empty``: "no internal audit results recorded this quarter"). Providers must be
deterministic for a given store and window: the pack they build is hashed and signed.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..domain.management_review import INPUTS, Period, review_input
from ..domain.trail import TrailEvent, format_ts, parse_event

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from ..domain.organisation import QmsConfig


@dataclass(frozen=True)
class Window:
    """What a review looks at: the quarter [start, end) as UTC instants, ``since`` (the end of the previous
    review's quarter when that is earlier than ``start``, for "since the last review"), and ``as_of`` (when
    the inputs are gathered: states such as "overdue" are as of then)."""

    period: Period
    start: datetime
    end: datetime
    since: datetime
    as_of: datetime
    timezone: str
    previous_review: str | None = None


@dataclass(frozen=True)
class Figure:
    label: str
    value: Any  # a number, a short text, or None
    records: list[str] = field(default_factory=list)
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "value": self.value, "records": list(self.records)}
        if self.note:
            out["note"] = self.note
        return out


Provider = Callable[["Session", "QmsConfig", Window], list[Figure]]
_PROVIDERS: dict[str, list[tuple[str, Provider]]] = {}
# during one ``gather``: the trail events already read, by query (providers of one procedure often read the
# same events, e.g. the CAPA moves of the quarter for c.capa and e.risk-actions)
_READ: ContextVar[dict[tuple, list[TrailEvent]] | None] = ContextVar("review_inputs_read", default=None)


def provides(input_key: str, name: str | None = None) -> Callable[[Provider], Provider]:
    """Decorator: ``@provides("c.internal-audit")`` registers a provider of that input (once per name)."""
    review_input(input_key)  # an unknown input key is a programming error, raised at import

    def register(fn: Provider) -> Provider:
        label = name or f"{fn.__module__}.{fn.__qualname__}"
        entries = _PROVIDERS.setdefault(input_key, [])
        entries[:] = [(n, f) for n, f in entries if n != label] + [(label, fn)]
        return fn

    return register


def providers() -> dict[str, list[str]]:
    """Input key -> the names of its registered providers."""
    return {key: [name for name, _ in entries] for key, entries in _PROVIDERS.items()}


def gather(session: Session, config: QmsConfig, window: Window) -> list[dict[str, Any]]:
    """Every input in the order of §9.3.2, with its figures and the providers that gave them; an input with
    no figure carries its explicit "nothing recorded" statement."""
    token = _READ.set({})
    try:
        return _gather(session, config, window)
    finally:
        _READ.reset(token)


def _gather(session: Session, config: QmsConfig, window: Window) -> list[dict[str, Any]]:
    out = []
    for item in INPUTS:
        figures: list[dict[str, Any]] = []
        names: list[str] = []
        for name, provider in _PROVIDERS.get(item.key, []):
            given = provider(session, config, window)
            names.append(name)
            figures.extend(f.as_dict() for f in given)
        if item.chair:
            statement = "asked of the chair in the minutes"
        elif not names:
            statement = f"{item.when_empty} (no procedure of this QMS records it)"
        elif not any(f["records"] or f["value"] not in (0, None, "", []) for f in figures):
            statement = item.when_empty
        else:
            statement = None
        out.append(
            {
                "key": item.key,
                "clause": item.clause,
                "title": item.title,
                "figures": figures,
                "providers": names,
                "statement": statement,
            }
        )
    return out


def trail_events(
    session: Session,
    start: datetime,
    end: datetime,
    actions: list[str] | None = None,
    prefix: str | None = None,
    states: list[tuple[str, str, str]] | None = None,
) -> list[TrailEvent]:
    """Trail events recorded in [start, end) (by the timestamp index), optionally only the given actions or
    actions beginning with ``prefix``, and only those whose state matches any of ``states`` (``("after",
    "status", "closed")``: the event's ``after["status"]`` is ``"closed"``; filtered by the database), in
    order: what providers count changes and moves from. Within one
    ``gather`` the same query is read once (providers do not write: the events do not change meanwhile)."""
    read = _READ.get()
    key = (id(session), start, end, tuple(actions or ()), prefix, tuple(states or ()))
    if read is not None and key in read:
        return list(read[key])
    from sqlalchemy import or_, select

    from ..store.tables import EventState, TrailEventRow

    # the stored columns only, not ORM rows: a quarter of a large store is tens of thousands of events
    query = select(TrailEventRow.seq, TrailEventRow.canonical, TrailEventRow.hash).where(
        TrailEventRow.ts >= format_ts(start), TrailEventRow.ts < format_ts(end)
    )
    if actions:
        query = query.where(TrailEventRow.action.in_(actions))
    if prefix:
        query = query.where(TrailEventRow.action.startswith(prefix))
    if states:
        query = query.where(or_(*(EventState(side, name) == value for side, name, value in states)))
    events = [
        parse_event(seq, canonical, digest)
        for seq, canonical, digest in session.execute(query.order_by(TrailEventRow.seq))
    ]
    if read is not None:
        read[key] = events
        return list(events)
    return events
