"""Jira mirroring of QMS records, the same for every procedure whose records move through stages.

A procedure registers its record kind with its stage machine and the function that applies a move
(``register("capa", MACHINE, apply)``); which kinds become Jira issues, with which issue type and
status maps, is ``integrations.jira.kinds`` in qms.yaml (CAPA by default). Outbound changes are
queued as intents in the outbox ("create the issue", "should be in stage X"), resolved at delivery;
a status changed in Jira is applied when the procedure's table allows that move without a signature,
and otherwise refused, explained on the issue, reverted and recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..domain.errors import DomainError
from ..domain.organisation import QmsConfig
from ..domain.stages import StageMachine
from ..store.tables import RecordRow
from ..store.uow import UnitOfWork
from . import jira_outbox

Apply = Callable[[UnitOfWork, QmsConfig, RecordRow, str, dict[str, Any]], None]
"""(uow, config, record row, target stage, checked stage data): enter the stage (the procedure's own rules)."""


@dataclass(frozen=True)
class Mirrored:
    machine: StageMachine
    apply: Apply


_KINDS: dict[str, Mirrored] = {}


def register(kind: str, machine: StageMachine, apply: Apply) -> None:
    _KINDS[kind] = Mirrored(machine, apply)


def _settings(config: QmsConfig, kind: str | None):  # noqa: ANN202
    from ..adapters import jira

    settings = jira.settings(config)
    if settings is None or kind not in _KINDS or not settings.mirrors(kind):
        return None
    return settings


def mirrors(config: QmsConfig, kind: str | None) -> bool:
    return _settings(config, kind) is not None


def record_created(uow: UnitOfWork, config: QmsConfig, row: RecordRow) -> None:
    """Queue "create the issue of this record" when its kind is mirrored and Jira is on."""
    if _settings(config, row.kind) is not None:
        jira_outbox.enqueue_create(uow, row)


def stage_changed(uow: UnitOfWork, config: QmsConfig, row: RecordRow) -> None:
    """Queue "this record should be in its stage" (the status is resolved at delivery; a stage change
    that keeps the Jira status sends nothing then)."""
    if _settings(config, row.kind) is not None:
        jira_outbox.enqueue_stage(uow, row.id, row.status)


def comment(uow: UnitOfWork, config: QmsConfig, row: RecordRow, suffix: str, body: str) -> None:
    """Queue a comment on the record's issue (idempotent by ``suffix``)."""
    if _settings(config, row.kind) is not None:
        jira_outbox.enqueue_comment(uow, row.id, suffix, body)


def on_jira_status(uow: UnitOfWork, config: QmsConfig, record_id: str, jira_status: str, source: str) -> str:
    """A status seen in Jira (webhook or reconciliation): apply it when the QMS allows it, else refuse,
    explain, revert and record. Returns what happened: unchanged, deferred, applied or refused.

    Not news: the status of the record's stage, or the status qmsflow last set or saw there (our own change
    echoed back, a repeat). Deferred: while a stage intent of ours is genuinely in flight (queued, not
    refused by Jira), which will overwrite the status. A parked or failing intent defers nothing.
    """
    row = uow.session.get(RecordRow, record_id)
    settings = _settings(config, row.kind if row else None)
    if row is None or settings is None:
        return "unchanged"
    mirrored = _KINDS[row.kind]
    known = jira_outbox.known_status(uow.session, record_id)
    shows_stage = jira_status == settings.status_for(row.status, row.kind)
    if jira_status != known and not (known is None and shows_stage):  # (nothing known: no stage intent skips)
        jira_outbox.remember_status(uow.session, record_id, jira_status)
    if shows_stage or jira_status == known:
        return "unchanged"
    if jira_outbox.stage_in_flight(uow.session, record_id):
        return "deferred"
    target = settings.stage_for(jira_status, row.kind)
    if target is None or target == row.status:
        return "unchanged"
    reason = None
    data: dict[str, Any] = {}
    if (row.data or {}).get("pending"):
        reason = f"{record_id} waits for approval {row.data['pending'].get('request')} in qmsflow"
    else:
        try:
            move = mirrored.machine.move(record_id, row.status, target)
            if move.signed:
                reason = f"{target} needs a signed approval in qmsflow"
            else:
                data = mirrored.machine.check(record_id, row.status, target, {}, (row.data or {}).get("stages", {}))
        except DomainError as exc:
            reason = str(exc)
    if reason is None:
        mirrored.apply(uow, config, row, target, {**data, "via": f"jira:{source}"})
        return "applied"
    event = uow.record(
        f"{row.kind}.jira-transition-refused",
        f"record:{record_id}",
        None,
        {"jira_status": jira_status, "stage": row.status, "reason": reason, "via": source},
        actor="jira",
    )
    revert = settings.on_refused == "revert" and settings.status_for(row.status, row.kind)
    jira_outbox.enqueue_comment(
        uow,
        record_id,
        f"refusal:{event.seq}:comment",
        f"qmsflow refused the move to '{jira_status}': {reason}. The QMS keeps {record_id} in "
        f"'{row.status}'" + (" and reverts the Jira status." if revert else "."),
    )
    if revert:
        jira_outbox.enqueue_stage(uow, record_id, row.status, suffix=f"refusal:{event.seq}:revert")
    return "refused"
