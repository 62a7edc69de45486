"""Corrective and preventive action (CAPA): stages and the rules to move between them.

References: ISO 9001 §10.2, ISO 13485 §8.5.2, EU AI Act Art. 20. Stages:
opened → containment → root_cause → action_plan (signed) → implementation → effectiveness_check
→ closed (signed by the process owner or a quality lead, never by the CAPA owner alone).
An ineffective effectiveness check goes back to root cause analysis. Closure needs a risk-register
update or a written reason for none, and a "no adverse effect on compliance or safety" statement.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from .errors import DomainError, InvalidTransition

STAGES: tuple[str, ...] = (
    "opened",
    "containment",
    "root_cause",
    "action_plan",
    "implementation",
    "effectiveness_check",
    "closed",
)

STAGE_TITLES: dict[str, str] = {
    "opened": "Opened",
    "containment": "Containment",
    "root_cause": "Root cause analysis",
    "action_plan": "Action plan",
    "implementation": "Implementation",
    "effectiveness_check": "Effectiveness check",
    "closed": "Closed",
}

AGE_BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("0–30 d", 0, 30),
    ("31–60 d", 31, 60),
    ("61–90 d", 61, 90),
    ("91–180 d", 91, 180),
    ("> 180 d", 181, None),
)

SOURCES = ("complaint", "incident", "audit", "release", "pms", "other")
SEVERITIES = ("low", "medium", "high", "critical")
SIGNED_STAGES = frozenset({"action_plan", "closed"})  # entering these needs an approved signature
# default days allowed in each stage, by severity (configurable per CAPA via due dates)
STAGE_DAYS = {"critical": 3, "high": 10, "medium": 20, "low": 30}
EFFECTIVENESS_AFTER_DAYS = 30


class MissingField(DomainError):
    """A stage transition lacks data; the message names the field."""


class Action(BaseModel):
    what: str = Field(min_length=1)
    owner: str = Field(min_length=1)
    due: date
    evidence: list[str] = Field(default_factory=list)


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
        if self.stage == "effectiveness_check":
            return ["closed", "root_cause"]  # effective closes (signed); ineffective goes back
        if self.stage == "closed":
            return []
        return [STAGES[STAGES.index(self.stage) + 1]]

    def check_advance(self, target: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Validate moving to ``target`` with ``fields``; return the stage data to store.

        Raises ``InvalidTransition`` (not the next stage) or ``MissingField`` (names the field).
        Does not check signatures: entering a signed stage needs an approved request as well.
        """
        if target not in STAGES:
            raise InvalidTransition(f"{target!r} is not a CAPA stage (stages: {', '.join(STAGES)})")
        allowed = self.next_stages()
        if target not in allowed:
            raise InvalidTransition(
                f"{self.id} is in {self.stage}: cannot move to {target} (allowed: {', '.join(allowed) or 'none'})"
            )
        need = _required(self, target)
        missing = [name for name in need if not _present(fields.get(name))]
        if missing:
            raise MissingField(f"{self.id}: moving to {target} needs {', '.join(missing)}")
        if target == "root_cause" and self.stage == "effectiveness_check":
            if fields.get("result") != "ineffective":
                raise InvalidTransition(f"{self.id}: back to root cause analysis only after an ineffective check")
        if target == "closed":
            if fields.get("result") != "effective":
                raise InvalidTransition(f"{self.id}: closure needs an effectiveness check with result 'effective'")
            if not (_present(fields.get("risk_update")) or _present(fields.get("no_risk_update_reason"))):
                raise MissingField(f"{self.id}: moving to closed needs risk_update or no_risk_update_reason")
        if target == "action_plan":
            actions = fields.get("actions")
            if not isinstance(actions, list) or not actions:
                raise MissingField(f"{self.id}: moving to action_plan needs actions (what, owner, due)")
            try:
                checked = [Action.model_validate(a).model_dump(mode="json") for a in actions]
            except ValidationError as exc:
                problem = exc.errors()[0]
                where = ".".join(str(p) for p in problem["loc"])
                raise MissingField(
                    f"{self.id}: actions[{where}]: {problem['msg']} (each action needs what, owner, due as YYYY-MM-DD)"
                ) from None
            fields = {**fields, "actions": checked}
        if target == "effectiveness_check":
            actions = self.data.get("action_plan", {}).get("actions", [])
            evidence = fields.get("evidence") or {}
            if not isinstance(evidence, dict):
                raise MissingField(
                    f'{self.id}: evidence must map action numbers to links, e.g. {{"0": ["https://ci.example/run/42"]}}'
                )
            lacking = [str(i) for i in range(len(actions)) if not evidence.get(str(i))]
            if lacking:
                raise MissingField(f"{self.id}: implementation evidence missing for action(s) {', '.join(lacking)}")
        return {k: v for k, v in fields.items() if v is not None}

    def apply(self, target: str, stage_data: dict[str, Any]) -> None:
        """Move to ``target`` (after ``check_advance`` and, for signed stages, an approval)."""
        if self.stage == "effectiveness_check":  # leaving the check records its outcome, each time
            check = {k: stage_data[k] for k in ("result", "checked_by", "checked_on", "notes") if k in stage_data}
            self.data = {**self.data, "effectiveness_checks": [*self.data.get("effectiveness_checks", []), check]}
        self.data = {**self.data, target: stage_data}
        self.stage = target


def _present(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, (list, dict)):
        return bool(value)
    return True


def _required(capa: Capa, target: str) -> list[str]:
    if target == "containment":
        return ["correction"]
    if target == "root_cause":
        if capa.stage == "effectiveness_check":
            return ["result", "checked_by", "notes"]
        return ["method", "cause", "similar_cases"]
    if target == "action_plan":
        return ["actions"]
    if target == "implementation":
        return []
    if target == "effectiveness_check":
        return ["evidence"]
    if target == "closed":
        return ["result", "checked_by", "no_adverse_effect"]
    return []


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
    if not (_present(closure.get("risk_update")) or _present(closure.get("no_risk_update_reason"))):
        problems.append("no risk-register update or reason")
    if not _present(closure.get("no_adverse_effect")):
        problems.append("no 'no adverse effect' statement")
    signed_by = closure.get("signed_by")
    if not signed_by or signed_by == capa.owner:
        problems.append("closure not signed by someone other than the CAPA owner")
    return problems
