"""Internal audit rules: stages, programme with risk-based pull-in, impartiality, checklist, sampling."""

from __future__ import annotations

from datetime import date

import pytest
import yaml

from qmsflow.domain import audit as rules
from qmsflow.domain.aspects import ASPECTS
from qmsflow.domain.errors import InvalidTransition
from qmsflow.domain.stages import MissingField
from qmsflow.services.audit import CHECKLIST_FILE, checklist

TODAY = date(2026, 6, 15)


# ------------------------------------------------------------------ stages


def test_an_audit_moves_through_its_table_and_names_what_is_missing() -> None:
    m = rules.MACHINE
    assert m.next_stages("planned") == ["in_progress", "cancelled"]
    with pytest.raises(MissingField, match="needs seed"):
        m.check("AUD-1", "planned", "in_progress", {"checklist_version": "1"})
    with pytest.raises(InvalidTransition, match="cannot move to closed"):
        m.check("AUD-1", "planned", "closed", {})
    items = [{"n": 1, "result": "conform"}, {"n": 2, "result": None}]
    with pytest.raises(MissingField, match=r"result for item\(s\) 2"):
        m.check("AUD-1", "in_progress", "reporting", {"conclusion": "ok", "items": items})
    items[1]["result"] = "minor"
    assert m.check("AUD-1", "in_progress", "reporting", {"conclusion": "ok", "items": items}) == {"conclusion": "ok"}
    assert "closed" in m.signed_targets and m.final == {"closed", "cancelled"}


# ------------------------------------------------------------------ programme


def _programme(audits=(), signals=(), months=None):  # noqa: ANN001, ANN202
    return {
        e.process: e
        for e in rules.programme(2026, ["risk", "data", "capa"], months or {}, audits, signals, TODAY, pull_in_days=30)
    }


def test_every_process_is_due_within_twelve_months_and_frequency_is_per_process() -> None:
    out = _programme(months={"data": 3})
    assert out["risk"].due == date(2026, 12, 31) and "not audited yet" in out["risk"].reasons[0]
    assert out["data"].due == date(2026, 3, 31) and out["data"].overdue(TODAY)
    assert not out["risk"].overdue(TODAY)
    done = [rules.AuditFact("AUD-1", "risk", date(2026, 2, 1), "closed", date(2026, 2, 3))]
    out = _programme(done)
    assert out["risk"].due == date(2027, 2, 3) and out["risk"].last_done == date(2026, 2, 3)
    assert out["risk"].cells == {1: [{"audit": "AUD-1", "state": "done"}]}
    with pytest.raises(rules.AuditError, match="5 months"):
        _programme(months={"risk": 5})


def test_an_open_major_finding_or_an_overdue_capa_pulls_the_audit_in_and_says_why() -> None:
    signals = [
        rules.RiskSignal("risk", "finding:FND-2026-0001", "open major finding"),
        rules.RiskSignal("capa", "capa:CAPA-2026-0004", "CAPA overdue since 2026-05-01"),
    ]
    out = _programme(signals=signals)
    assert out["risk"].pulled_in and out["risk"].due == date(2026, 7, 15)
    assert any("open major finding (finding:FND-2026-0001)" in r for r in out["risk"].reasons)
    assert any("CAPA overdue" in r and "CAPA-2026-0004" in r for r in out["capa"].reasons)
    assert not out["data"].pulled_in and out["data"].due == date(2026, 12, 31)
    # a due date already sooner than the pull-in is kept (the reason is still named)
    out = _programme(signals=signals[:1], months={"risk": 1})
    assert out["risk"].due == date(2026, 1, 31) and not out["risk"].pulled_in


def test_quarter_cells_say_planned_done_overdue_and_cancelled() -> None:
    audits = [
        rules.AuditFact("A1", "risk", date(2026, 5, 1), "planned"),
        rules.AuditFact("A2", "risk", date(2026, 8, 1), "planned"),
        rules.AuditFact("A3", "risk", date(2026, 1, 10), "reporting", date(2026, 1, 12)),
        rules.AuditFact("A4", "data", date(2026, 11, 1), "cancelled"),
        rules.AuditFact("A5", "data", date(2025, 11, 1), "planned"),  # another year
    ]
    out = _programme(audits)
    assert out["risk"].cells == {
        2: [{"audit": "A1", "state": "overdue"}],
        3: [{"audit": "A2", "state": "planned"}],
        1: [{"audit": "A3", "state": "done"}],
    }
    assert out["data"].cells == {4: [{"audit": "A4", "state": "cancelled"}]}


# ------------------------------------------------------------------ impartiality


ACT = [
    rules.DocumentActivity("dev", "SOP-RSK-001", "1.1", "authored", date(2026, 3, 1)),
    rules.DocumentActivity("chloe", "SOP-RSK-001", "1.1", "approved", date(2026, 3, 2)),
    rules.DocumentActivity("ben", "SOP-RSK-001", "1.0", "approved", date(2025, 5, 1)),  # over 12 months ago
    rules.DocumentActivity("ben", "SOP-DES-001", "1.0", "approved", date(2026, 3, 1)),  # another process's doc
]


def _conflicts(auditor: str) -> list[str]:
    return rules.conflicts(
        auditor, "risk", owner="ana", members=["eve"], documents=["SOP-RSK-001"], activity=ACT, on=TODAY
    )


@pytest.mark.parametrize(
    ("auditor", "reason"),
    [
        ("ana", "owns the process risk"),
        ("eve", "is a member of the process risk"),
        ("dev", "authored SOP-RSK-001 v1.1 on 2026-03-01"),
        ("chloe", "approved SOP-RSK-001 v1.1 on 2026-03-02"),
    ],
)
def test_each_conflict_is_refused_and_named(auditor: str, reason: str) -> None:
    assert _conflicts(auditor) == [reason]
    with pytest.raises(rules.Conflict, match=reason):
        rules.check_impartial(
            auditor, "risk", owner="ana", members=["eve"], documents=["SOP-RSK-001"], activity=ACT, on=TODAY
        )


def test_an_auditor_without_conflicts_in_the_last_twelve_months_is_impartial() -> None:
    assert _conflicts("ben") == []


# ------------------------------------------------------------------ checklist and sampling


def test_the_checklist_file_maps_every_aspect_and_takes_clauses_only_from_the_brief() -> None:
    book = checklist()
    assert book.version and set(book.aspects) == set(ASPECTS)
    assert book.aspects["g"].criteria.iso_42001 == ["6.1", "8.2", "8.3"]
    assert book.aspects["a"].criteria.iso_42001 == ["4.1", "5.2"]
    assert book.processes["internal-audit"][0].criteria.iso_9001 == ["9.2"]
    allowed_9001 = {"7.5.2", "7.5.3", "9.2", "9.3.2", "9.3.3", "10.2"}
    used = {c for e in [*book.every_process, *book.aspects.values()] for c in e.criteria.iso_9001}
    used |= {c for es in book.processes.values() for e in es for c in e.criteria.iso_9001}
    assert used <= allowed_9001


def test_a_broken_checklist_names_the_file_and_field() -> None:
    data = yaml.safe_load(CHECKLIST_FILE.read_text())
    del data["aspects"]["m"]
    with pytest.raises(rules.AuditError, match="broken.yaml: aspects: .*missing \\['m'\\]"):
        rules.Checklist.parse(data, "broken.yaml")
    data = yaml.safe_load(CHECKLIST_FILE.read_text())
    data["aspects"]["a"]["evidence"] = ["gossip"]
    with pytest.raises(rules.AuditError, match="aspects.a.evidence: .*unknown evidence kind gossip"):
        rules.Checklist.parse(data, "broken.yaml")


def test_the_sample_is_reproducible_from_the_seed_and_differs_with_another_seed() -> None:
    population = [f"CAPA-2026-{n:04d}" for n in range(1, 41)]
    first = rules.draw(population, 5, "abc123", 2)
    assert first == rules.draw(list(reversed(population)), 5, "abc123", 2)  # order of the population is irrelevant
    assert len(first) == 5 and set(first) <= set(population)
    assert first != rules.draw(population, 5, "other-seed", 2)
    assert rules.draw(population[:2], 5, "abc123", 2) == population[:2]  # a small population is taken whole


def test_build_checklist_gives_workpapers_with_population_and_sample() -> None:
    book = checklist()
    papers = rules.build_checklist(
        book, "risk-management", ["g"], {"document-approvals": ["APR-1"], "capas": ["C-3", "C-1", "C-2", "C-4"]}, "s1"
    )
    assert [p.topic for p in papers] == ["process", "Art. 17(1)(g)"]
    assert papers[1].population == ["APR-1", "C-1", "C-2", "C-3", "C-4"] and len(papers[1].sample) == 3
    assert papers[1].sample == rules.draw(papers[1].population, 3, "s1", 2)


def test_recording_an_item_checks_result_note_evidence_and_stage() -> None:
    papers = [{"n": 1, "result": None}, {"n": 2, "result": None}]
    with pytest.raises(rules.AuditError, match="'fine' is not allowed"):
        rules.record_item("AUD-1", "in_progress", papers, 1, "fine", [], "", "ben")
    with pytest.raises(rules.AuditError, match="has no item 7"):
        rules.record_item("AUD-1", "in_progress", papers, 7, "conform", [], "", "ben")
    with pytest.raises(MissingField, match="needs a note"):
        rules.record_item("AUD-1", "in_progress", papers, 1, "observation", [], "", "ben")
    with pytest.raises(MissingField, match="needs objective evidence"):
        rules.record_item("AUD-1", "in_progress", papers, 1, "major", [], "no review", "ben")
    with pytest.raises(InvalidTransition, match="is planned"):
        rules.record_item("AUD-1", "planned", papers, 1, "conform", [], "", "ben")
    paper = rules.record_item("AUD-1", "in_progress", papers, 2, "conform", ["record:X"], "", "ben")
    assert paper == {"n": 2, "result": "conform", "evidence": ["record:X"], "note": "", "preparer": "ben"}


def test_sop_aud_001_names_only_audit_commands_that_exist_and_marks_manual_steps(tmp_path) -> None:  # noqa: ANN001
    import re

    from qmsflow.cli.audit import audit_app
    from qmsflow.scaffold import scaffold

    scaffold(tmp_path / "repo", org_name="Test AI GmbH", git=False)
    [sop] = (tmp_path / "repo").rglob("SOP-AUD-001*.md")
    text = sop.read_text()
    named = set(re.findall(r"`qms audit ([a-z-]+)", text))
    commands = {c.name for c in audit_app.registered_commands}
    assert named and named <= commands, named - commands
    assert text.count("*(manual step") >= 8
    assert "qmsflow refuses an auditor who owns the process, is one of its members" in text
