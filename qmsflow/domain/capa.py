"""Corrective and preventive action (CAPA): stages and the rules to move between them.

References: ISO 9001 §10.2, ISO 13485 §8.5.2, EU AI Act Art. 20. Stages:
opened → containment → root_cause → action_plan (signed) → implementation → effectiveness_check
→ closed (signed by the process owner or a quality lead, never by the CAPA owner alone).
An ineffective effectiveness check goes back to root cause analysis. Closure needs a risk-register
update or a written reason for none, and a "no adverse effect on compliance or safety" statement.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from .errors import InvalidTransition
from .stages import MissingField, Move, Stage, StageMachine, present

SOURCES = ("complaint", "incident", "audit", "release", "pms", "other")
SEVERITIES = ("low", "medium", "high", "critical")
# default days allowed in each stage, by severity (configurable per CAPA via due dates)
STAGE_DAYS = {"critical": 3, "high": 10, "medium": 20, "low": 30}
EFFECTIVENESS_AFTER_DAYS = 30


class Action(BaseModel):
    what: str = Field(min_length=1)
    owner: str = Field(min_length=1)
    due: date
    evidence: list[str] = Field(default_factory=list)


def _actions(record_id: str, stages: Mapping[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    actions = fields.get("actions")
    if not isinstance(actions, list) or not actions:
        raise MissingField(f"{record_id}: moving to action_plan needs actions (what, owner, due)")
    try:
        checked = [Action.model_validate(a).model_dump(mode="json") for a in actions]
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(p) for p in problem["loc"])
        raise MissingField(
            f"{record_id}: actions[{where}]: {problem['msg']} (each action needs what, owner, due as YYYY-MM-DD)"
        ) from None
    return {**fields, "actions": checked}


def _evidence(record_id: str, stages: Mapping[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    actions = stages.get("action_plan", {}).get("actions", [])
    evidence = fields.get("evidence") or {}
    if not isinstance(evidence, dict):
        raise MissingField(
            f'{record_id}: evidence must map action numbers to links, e.g. {{"0": ["https://ci.example/run/42"]}}'
        )
    lacking = [str(i) for i in range(len(actions)) if not evidence.get(str(i))]
    if lacking:
        raise MissingField(f"{record_id}: implementation evidence missing for action(s) {', '.join(lacking)}")
    return fields


def _ineffective(record_id: str, stages: Mapping[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    if fields.get("result") != "ineffective":
        raise InvalidTransition(f"{record_id}: back to root cause analysis only after an ineffective check")
    return fields


def _closure(record_id: str, stages: Mapping[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    if fields.get("result") != "effective":
        raise InvalidTransition(f"{record_id}: closure needs an effectiveness check with result 'effective'")
    if not (present(fields.get("risk_update")) or present(fields.get("no_risk_update_reason"))):
        raise MissingField(f"{record_id}: moving to closed needs risk_update or no_risk_update_reason")
    return fields


# The CAPA procedure as a table (SOP-CAPA-001 section 4): its stages and the moves between them.
MACHINE = StageMachine(
    kind="capa",
    stages=(
        Stage("opened", "Opened"),
        Stage("containment", "Containment"),
        Stage("root_cause", "Root cause analysis"),
        Stage("action_plan", "Action plan"),
        Stage("implementation", "Implementation"),
        Stage("effectiveness_check", "Effectiveness check"),
        Stage("closed", "Closed", final=True),
    ),
    moves=(
        Move("opened", "containment", needs=("correction",)),
        Move("containment", "root_cause", needs=("method", "cause", "similar_cases")),
        Move("root_cause", "action_plan", needs=("actions",), signed=True, rule=_actions),
        Move("action_plan", "implementation"),
        Move("implementation", "effectiveness_check", needs=("evidence",), rule=_evidence),
        Move(
            "effectiveness_check",
            "closed",
            needs=("result", "checked_by", "no_adverse_effect"),
            signed=True,
            rule=_closure,
        ),
        Move(
            "effectiveness_check",
            "root_cause",
            needs=("result", "checked_by", "notes"),
            rule=_ineffective,
            label="back to root cause analysis (ineffective)",
        ),
    ),
)

STAGES: tuple[str, ...] = MACHINE.keys
STAGE_TITLES: dict[str, str] = MACHINE.titles
SIGNED_STAGES = MACHINE.signed_targets  # entering these needs an approved signature

AGE_BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("0–30 d", 0, 30),
    ("31–60 d", 31, 60),
    ("61–90 d", 61, 90),
    ("91–180 d", 91, 180),
    ("> 180 d", 181, None),
)


class Capa(BaseModel):
    id: str
    title: str
    source: str
    owner: str
    process: str
    severity: str = "medium"
    stage: str = "opened"
    due: date | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    def next_stages(self) -> list[str]:
        return MACHINE.next_stages(self.stage)

    def check_advance(self, target: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Validate moving to ``target`` with ``fields``; return the stage data to store.

        Raises ``InvalidTransition`` (not a next stage) or ``MissingField`` (names the field).
        Does not check signatures: entering a signed stage needs an approved request as well.
        """
        return MACHINE.check(self.id, self.stage, target, fields, self.data)

    def apply(self, target: str, stage_data: dict[str, Any]) -> None:
        """Move to ``target`` (after ``check_advance`` and, for signed stages, an approval)."""
        if self.stage == "effectiveness_check":  # leaving the check records its outcome, each time
            check = {k: stage_data[k] for k in ("result", "checked_by", "checked_on", "notes") if k in stage_data}
            self.data = {**self.data, "effectiveness_checks": [*self.data.get("effectiveness_checks", []), check]}
        self.data = {**self.data, target: stage_data}
        self.stage = target


def closure_signers(capa_owner: str, process_owner: str, quality_leads: list[str]) -> list[str]:
    """Who may sign a closure: the process owner or a quality lead, never the CAPA owner."""
    out = [p for p in [process_owner, *quality_leads] if p != capa_owner]
    return list(dict.fromkeys(out))


def stage_due(start: date, severity: str) -> date:
    return start + timedelta(days=STAGE_DAYS.get(severity, 20))


def is_closable(capa: Capa) -> list[str]:
    """Why a closed CAPA would be invalid: the invariant the property test checks (empty = valid)."""
    problems = []
    closure = capa.data.get("closed", {})
    checks = capa.data.get("effectiveness_checks", [])
    if not checks or checks[-1].get("result") != "effective" or closure.get("result") != "effective":
        problems.append("no effective effectiveness check")
    if not (present(closure.get("risk_update")) or present(closure.get("no_risk_update_reason"))):
        problems.append("no risk-register update or reason")
    if not present(closure.get("no_adverse_effect")):
        problems.append("no 'no adverse effect' statement")
    signed_by = closure.get("signed_by")
    if not signed_by or signed_by == capa.owner:
        problems.append("closure not signed by someone other than the CAPA owner")
    return problems
