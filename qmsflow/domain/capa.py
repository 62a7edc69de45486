"""Corrective and preventive action (CAPA): its stages (ISO 9001 §10.2, ISO 13485 §8.5.2)."""

from __future__ import annotations

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
