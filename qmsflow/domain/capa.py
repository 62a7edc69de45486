"""Corrective and preventive action (CAPA): stages and the rules to move between them.

References: ISO 9001 §10.2, ISO 13485 §8.5.2, EU AI Act Art. 20. Stages:
opened → containment → root_cause → action_plan (signed) → implementation → effectiveness_check
→ closed (signed by the process owner or a quality lead, never by the CAPA owner alone).
An ineffective effectiveness check goes back to root cause analysis. Closure needs a risk-register
update or a written reason for none, and a "no adverse effect on compliance or safety" statement.

The rules of SOP-CAPA-001 that need facts from outside the record (who the people of qms.yaml are,
today's date) are checked with ``Facts``: action owners and the effectiveness verifier are people of
qms.yaml, the verifier is not the CAPA owner, the check is dated, not in the future, and not before the
effectiveness due date unless a reason is recorded. Every refusal names the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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


class SimilarCases(BaseModel):
    """ISO 9001 10.2.1(b): were similar nonconformities looked for, where, and which were found."""

    model_config = {"extra": "forbid"}

    checked: bool
    scope: str = ""  # where the check looked: systems, versions, datasets, processes
    found: list[str] = Field(default_factory=list)  # ids of the similar cases found (CAPAs, systems, datasets)
    reason: str = ""  # why no check was made (only when checked is false)


SIMILAR_SHAPE = (
    'similar_cases must be {"checked": true, "scope": "where you looked", "found": ["ids found", ...]} '
    'or {"checked": false, "reason": "why no check was made"}'
)


def _similar_cases(record_id: str, stages: Mapping[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    value = fields.get("similar_cases")
    if not isinstance(value, dict):
        raise MissingField(f"{record_id}: {SIMILAR_SHAPE} (got {value!r})")
    if not isinstance(value.get("checked"), bool):
        raise MissingField(f"{record_id}: similar_cases.checked must be true or false (got {value.get('checked')!r})")
    try:
        answer = SimilarCases.model_validate(value)
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(p) for p in problem["loc"])
        raise MissingField(f"{record_id}: similar_cases.{where}: {problem['msg']} ({SIMILAR_SHAPE})") from None
    found = [f.strip() for f in answer.found]
    if any(not f for f in found):
        raise MissingField(f"{record_id}: similar_cases.found: an entry is blank (give the id of each case found)")
    if answer.checked and not answer.scope.strip():
        raise MissingField(f"{record_id}: similar_cases.scope: say where the check looked (systems, versions, data)")
    if not answer.checked:
        if not answer.reason.strip():
            raise MissingField(f"{record_id}: similar_cases.reason: a check that was not made needs its reason")
        if found:
            raise MissingField(f"{record_id}: similar_cases.found: cases found, but checked is false")
    return {**fields, "similar_cases": {**answer.model_dump(), "found": found}}


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


def _check_date(record_id: str, fields: dict[str, Any]) -> dict[str, Any]:
    value = fields.get("checked_on")
    try:
        checked_on = value if isinstance(value, date) else date.fromisoformat(str(value))
    except ValueError:
        raise MissingField(f"{record_id}: checked_on: {value!r} is not a date (YYYY-MM-DD)") from None
    return {**fields, "checked_on": checked_on.isoformat()}


def _ineffective(record_id: str, stages: Mapping[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    if fields.get("result") != "ineffective":
        raise InvalidTransition(f"{record_id}: back to root cause analysis only after an ineffective check")
    return _check_date(record_id, fields)


def _closure(record_id: str, stages: Mapping[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    if fields.get("result") != "effective":
        raise InvalidTransition(f"{record_id}: closure needs an effectiveness check with result 'effective'")
    if fields.get("no_adverse_effect") is not True:
        raise MissingField(
            f"{record_id}: no_adverse_effect must be true: the statement that the actions have no adverse effect "
            f"on regulatory compliance or on the safety and performance of the system (got "
            f"{fields.get('no_adverse_effect')!r}); if they have one, the CAPA is not ready to close"
        )
    if not present(fields.get("no_adverse_effect_reasoning")):
        raise MissingField(
            f"{record_id}: moving to closed needs no_adverse_effect_reasoning: why the actions have no adverse effect"
        )
    if not (present(fields.get("risk_update")) or present(fields.get("no_risk_update_reason"))):
        raise MissingField(f"{record_id}: moving to closed needs risk_update or no_risk_update_reason")
    return _check_date(record_id, fields)


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
        Move("containment", "root_cause", needs=("method", "cause", "similar_cases"), rule=_similar_cases),
        Move("root_cause", "action_plan", needs=("actions",), signed=True, rule=_actions),
        Move("action_plan", "implementation"),
        Move("implementation", "effectiveness_check", needs=("evidence",), rule=_evidence),
        Move(
            "effectiveness_check",
            "closed",
            needs=("result", "checked_by", "checked_on", "no_adverse_effect", "no_adverse_effect_reasoning"),
            signed=True,
            rule=_closure,
        ),
        Move(
            "effectiveness_check",
            "root_cause",
            needs=("result", "checked_by", "checked_on", "notes"),
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


@dataclass(frozen=True)
class Facts:
    """What the CAPA rules need from outside the record: the people of qms.yaml and today's date."""

    people: frozenset[str]
    today: date


def _a_person(record_id: str, field: str, value: Any, facts: Facts) -> None:
    if not isinstance(value, str) or value not in facts.people:
        raise MissingField(
            f"{record_id}: {field}: {value!r} is not a person of qms.yaml (people: {', '.join(sorted(facts.people))})"
        )


VERIFIED_MOVES = frozenset({("effectiveness_check", "closed"), ("effectiveness_check", "root_cause")})


class Capa(BaseModel):
    id: str
    title: str
    source: str
    owner: str
    process: str
    severity: str = "medium"
    stage: str = "opened"
    due: date | None = None
    effectiveness_due: date | None = None  # set when the CAPA enters effectiveness_check
    data: dict[str, Any] = Field(default_factory=dict)

    def next_stages(self) -> list[str]:
        return MACHINE.next_stages(self.stage)

    def check_advance(self, target: str, fields: dict[str, Any], facts: Facts) -> dict[str, Any]:
        """Validate moving to ``target`` with ``fields``; return the stage data to store.

        Raises ``InvalidTransition`` (not a next stage) or ``MissingField`` (names the field).
        Does not check signatures: entering a signed stage needs an approved request as well.
        """
        data = MACHINE.check(self.id, self.stage, target, fields, self.data)
        if target == "action_plan":
            for index, action in enumerate(data["actions"]):
                _a_person(self.id, f"actions[{index}].owner", action["owner"], facts)
        if (self.stage, target) in VERIFIED_MOVES:
            self._check_verifier(data, facts)
        return data

    def _check_verifier(self, data: dict[str, Any], facts: Facts) -> None:
        """SOP-CAPA-001 4.7: a verifier of qms.yaml other than the CAPA owner, on a date not in the future and
        not before the effectiveness due date unless the reason for the early check is recorded."""
        _a_person(self.id, "checked_by", data["checked_by"], facts)
        if data["checked_by"] == self.owner:
            raise MissingField(
                f"{self.id}: checked_by: the effectiveness check must be made by someone other than the CAPA "
                f"owner {self.owner!r}"
            )
        checked_on = date.fromisoformat(data["checked_on"])
        if checked_on > facts.today:
            raise MissingField(f"{self.id}: checked_on: {checked_on} is in the future (today is {facts.today})")
        if self.effectiveness_due and checked_on < self.effectiveness_due and not present(data.get("early_reason")):
            raise MissingField(
                f"{self.id}: checked_on: {checked_on} is before the effectiveness due date {self.effectiveness_due}; "
                "record why the check could be made early as early_reason, or check again later"
            )

    def apply(self, target: str, stage_data: dict[str, Any]) -> None:
        """Move to ``target`` (after ``check_advance`` and, for signed stages, an approval)."""
        if self.stage == "effectiveness_check":  # leaving the check records its outcome, each time
            keys = ("result", "checked_by", "checked_on", "early_reason", "notes")
            check = {k: stage_data[k] for k in keys if k in stage_data}
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
    if closure.get("no_adverse_effect") is not True or not present(closure.get("no_adverse_effect_reasoning")):
        problems.append("no 'no adverse effect' statement with its reasoning")
    if not checks or checks[-1].get("checked_by") in (None, capa.owner) or not checks[-1].get("checked_on"):
        problems.append("no dated effectiveness check by someone other than the CAPA owner")
    signed_by = closure.get("signed_by")
    if not signed_by or signed_by == capa.owner:
        problems.append("closure not signed by someone other than the CAPA owner")
    return problems
