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

from .capabilities import declare
from .errors import InvalidTransition
from .stages import MissingField, Move, Stage, StageMachine, present

SOURCES = ("complaint", "incident", "audit", "release", "pms", "other")
SEVERITIES = ("low", "medium", "high", "critical")
# default days allowed in each stage, by severity (configurable per CAPA via due dates)
STAGE_DAYS = {"critical": 3, "high": 10, "medium": 20, "low": 30}
EFFECTIVENESS_AFTER_DAYS = 30


class Action(BaseModel):
    model_config = {"extra": "forbid"}  # a mistyped key is refused, not silently dropped

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


# SOP-CAPA-001 4.4, checked in _similar_cases
SIMILAR_CASES_STRUCTURED = declare(
    "capa.similar_cases_structured",
    "qmsflow refuses a root cause analysis whose similar-cases answer (`similar_cases`) is free text or lacks "
    "its parts: it must be either a check that was made, with where it looked (`scope`) and the identifiers "
    "of the similar cases found (`found`, an empty list when none were found), or a check that was not made, "
    "with the reason (`reason`).",
    proved_by=(
        "tests/unit/test_capa_rules.py::test_similar_cases_is_a_structured_answer",
        "tests/integration/test_capa_closure_rules.py::test_similar_cases_as_free_text_is_refused",
    ),
    module=__name__,
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
    checked = []
    for index, action in enumerate(actions):
        try:
            checked.append(Action.model_validate(action).model_dump(mode="json"))
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(p) for p in problem["loc"])
            raise MissingField(
                f"{record_id}: actions[{index}].{where}: {problem['msg']} "
                "(each action has what, owner, due as YYYY-MM-DD and, optionally, evidence)"
            ) from None
    return {**fields, "actions": checked}


# SOP-CAPA-001 4.5, checked in _actions and in Capa.check_advance
ACTION_PLAN_CHECKED = declare(
    "capa.action_plan_checked",
    "qmsflow refuses an action plan without actions, an action that lacks what is to be done (`what`), its "
    "owner (`owner`) or its due date (`due`, YYYY-MM-DD), an action with any other key than these and "
    "`evidence`, and an action whose owner is not a person of qms.yaml, naming the action in its error. It keeps each action's text as written and does not check the "
    "effectiveness criterion written in it.",
    proved_by=(
        "tests/unit/test_capa_rules.py::test_action_owners_are_people_of_qms_yaml",
        "tests/unit/test_capa_rules.py::test_an_action_key_that_is_not_known_is_refused_not_dropped",
        "tests/integration/test_capa_closure_rules.py::test_an_action_owner_not_in_qms_yaml_is_refused",
    ),
    module=__name__,
)


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


# SOP-CAPA-001 4.8, checked in _closure
CLOSURE_RULES = declare(
    "capa.closure_rules",
    "qmsflow refuses to close a CAPA unless the effectiveness check given with the closure has the result "
    "`effective`; the statement that the actions have no adverse effect on regulatory compliance or on the "
    "safety and performance of the AI system (`no_adverse_effect`) has the value true (false or any other "
    "value is refused) and comes with its reasoning (`no_adverse_effect_reasoning`); and either the update "
    "made to the risk register (`risk_update`) or the reason why none is needed (`no_risk_update_reason`) is "
    "written down. Its error names the missing or wrong field. qmsflow does not look at the risk register "
    "itself: it keeps what is written in these fields.",
    proved_by=(
        "tests/unit/test_capa_rules.py::test_no_adverse_effect_must_be_the_value_true",
        "tests/integration/test_capa_closure_rules.py::test_bad_closures_are_refused_naming_the_field_and_recorded",
        "tests/integration/test_capa.py::test_capa_through_every_stage_with_signed_plan_and_closure",
    ),
    module=__name__,
)


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

# SOP-CAPA-001 4.1 to 4.7: the stages of MACHINE and the data each move needs (MACHINE.check)
STAGES_IN_ORDER = declare(
    "capa.stages_in_order",
    "qmsflow moves a CAPA through its stages in order only: opened, containment, root cause analysis, action "
    "plan, implementation, effectiveness check, closed, and from the effectiveness check back to root cause "
    "analysis when the check found the actions ineffective (`result` ineffective, with `notes`). It refuses a "
    "move that skips a stage or lacks the data the stage needs: the correction made (`correction`) for "
    "containment; the method (`method`), the cause (`cause`) and the similar-cases answer (`similar_cases`) "
    "for root cause analysis; the actions for the action plan; and, for the effectiveness check, evidence of "
    "implementation (`evidence`) for every action of the plan. Its error names the missing field.",
    proved_by=(
        "tests/integration/test_capa.py::test_errors_name_the_missing_field",
        "tests/integration/test_capa.py::test_the_happy_path_and_the_loop_back_on_an_ineffective_check",
        "tests/integration/test_capa.py::test_capa_through_every_stage_with_signed_plan_and_closure",
    ),
    module=__name__,
)

# MACHINE.check keeps every field given with a move, not only those the move needs
FURTHER_FIELDS_KEPT = declare(
    "capa.further_fields_kept",
    "qmsflow keeps any further field given with a stage move (`qms capa advance CAPA_ID --to STAGE --field "
    "NAME=VALUE`), as written, in that stage's data next to the fields the stage needs; it does not check "
    "what such a field says.",
    proved_by=("tests/unit/test_capa_rules.py::test_further_fields_given_with_a_move_are_kept_as_written",),
    module=__name__,
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


# SOP-CAPA-001 4.7, checked in Capa._check_verifier
VERIFIER_INDEPENDENT = declare(
    "capa.verifier_independent",
    "qmsflow refuses an effectiveness result whose verifier (`checked_by`) is the CAPA owner or not a person "
    "of qms.yaml, whose date (`checked_on`) is missing or later than the day it is recorded, or whose date is "
    "before the effectiveness due date when no reason for the early check (`early_reason`) is recorded.",
    proved_by=(
        "tests/unit/test_capa_rules.py::test_the_verifier_is_a_person_of_qms_yaml_other_than_the_capa_owner",
        "tests/unit/test_capa_rules.py::test_the_check_is_dated_not_in_the_future_and_not_early_without_a_reason",
    ),
    module=__name__,
)


# SOP-CAPA-001 4.7, kept by Capa.apply
EFFECTIVENESS_CHECKS_KEPT = declare(
    "capa.effectiveness_checks_kept",
    "qmsflow keeps each effectiveness check that moves a CAPA on, to closure or back to root cause analysis, "
    "in the CAPA's list of effectiveness checks (`effectiveness_checks`), with its result, verifier, date, "
    "the reason for an early check and the notes, so that an ineffective check stays in the record after "
    "the CAPA has moved on.",
    proved_by=(
        "tests/integration/test_capa.py::test_the_happy_path_and_the_loop_back_on_an_ineffective_check",
        "tests/integration/test_capa_closure_rules.py::"
        "test_a_correct_closure_still_closes_and_keeps_the_dated_independent_check",
    ),
    module=__name__,
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
