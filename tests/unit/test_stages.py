"""The stage engine every procedure declares its table for (issue 12), without a database."""

from __future__ import annotations

import pytest

from qmsflow.domain import capa, documents
from qmsflow.domain.errors import InvalidTransition
from qmsflow.domain.stages import MissingField, Move, Stage, StageMachine

AUDIT = StageMachine(
    kind="audit",
    stages=(Stage("planned", "Planned"), Stage("held", "Held"), Stage("reported", "Reported", final=True)),
    moves=(
        Move("planned", "held", needs=("auditor", "scope")),
        Move(
            "held",
            "reported",
            needs=("findings",),
            signed=True,
            rule=lambda rid, rec, f: {**f, "count": len(f["findings"])},
        ),
    ),
)


def test_a_declared_move_returns_the_stage_data_without_empty_values() -> None:
    assert AUDIT.check("AUD-1", "planned", "held", {"auditor": "ana", "scope": "SOP-DOC-001", "note": None}) == {
        "auditor": "ana",
        "scope": "SOP-DOC-001",
    }
    assert AUDIT.check("AUD-1", "held", "reported", {"findings": ["F1", "F2"]})["count"] == 2


def test_the_engine_names_the_missing_field_and_what_is_allowed() -> None:
    with pytest.raises(MissingField, match="AUD-1: moving to held needs scope"):
        AUDIT.check("AUD-1", "planned", "held", {"auditor": "ana", "scope": "  "})
    with pytest.raises(InvalidTransition, match=r"AUD-1 is in planned: cannot move to reported \(allowed: held\)"):
        AUDIT.check("AUD-1", "planned", "reported", {"findings": ["F1"]})
    with pytest.raises(InvalidTransition, match=r"allowed: none \(final stage\)"):
        AUDIT.move("AUD-1", "reported", "held")
    with pytest.raises(InvalidTransition, match="'closed' is not a audit stage"):
        AUDIT.move("AUD-1", "planned", "closed")


def test_a_table_that_contradicts_itself_is_refused_when_it_is_declared() -> None:
    with pytest.raises(ValueError, match="names no stage 'nowhere'"):
        StageMachine("x", (Stage("a", "A"),), (Move("a", "nowhere"),))
    with pytest.raises(ValueError, match="b is final"):
        StageMachine("x", (Stage("a", "A"), Stage("b", "B", final=True)), (Move("b", "a"),))
    with pytest.raises(ValueError, match="declared twice"):
        StageMachine("x", (Stage("a", "A"), Stage("a", "A again")), ())


def test_capa_and_document_control_are_tables_of_the_same_engine() -> None:
    assert capa.MACHINE.signed_targets == {"action_plan", "closed"}
    assert capa.MACHINE.final == {"closed"} and documents.MACHINE.final == {"obsolete"}
    assert capa.MACHINE.next_stages("effectiveness_check") == ["closed", "root_cause"]
    assert documents.MACHINE.next_stages("in_review") == ["effective", "draft"]
    assert documents.MACHINE.signed_targets == {"effective", "draft"}
