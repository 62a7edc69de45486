"""Readiness per Art. 17(1) aspect: judged on evidence, never on the assignment alone."""

from datetime import date

from qmsflow.domain.readiness import ProcessFacts, Readiness, assess

TODAY = date(2026, 12, 6)


def facts(**kw) -> ProcessFacts:  # noqa: ANN003
    base = dict(key="p", title="P", procedure="SOP-X-001", owner="ana", owner_known=True)
    return ProcessFacts(**{**base, **kw})


def by_letter(covering: dict) -> dict:
    return {a.letter: a for a in assess(covering, TODAY)}


def test_an_aspect_no_process_covers_is_a_gap_saying_what_to_do() -> None:
    result = by_letter({})
    assert all(a.status is Readiness.GAP for a in result.values()) and len(result) == 13
    assert "no process covers (a)" in result["a"].gaps[0]


def test_assigned_with_an_owner_but_no_evidence_is_still_a_gap() -> None:
    """A fresh scaffold: drafts only, no records: the owner named in qms.yaml is no evidence."""
    a = by_letter({"a": [facts()]})["a"]
    assert a.status is Readiness.GAP and a.checks == {
        "procedure": False,
        "owner": True,
        "records": False,
        "audit": False,
    }
    assert any("has no approved version" in g for g in a.gaps) and any(
        "no records in the last 12 months" in g for g in a.gaps
    )


def test_every_check_for_every_covering_process_is_ready() -> None:
    good = facts(
        procedure_effective="1.0",
        procedure_review_due=date(2027, 6, 1),
        records_12_months=3,
        audits_this_year=["AUD-1"],
    )
    assert by_letter({"a": [good]})["a"].status is Readiness.READY
    late = facts(
        key="q",
        procedure_effective="2.0",
        procedure_review_due=date(2026, 11, 1),
        records_12_months=1,
        audits_this_year=["AUD-2"],
    )
    a = by_letter({"a": [good, late]})["a"]
    assert a.status is Readiness.PARTIAL and a.checks["procedure"] is False
    assert a.gaps == [
        "SOP-X-001 v2.0 (q) was due for its periodic review on 2026-11-01: review it (qms document submit SOP-X-001 --still-valid, or a new version)"
    ]


def test_an_unknown_owner_and_a_missing_audit_are_named() -> None:
    a = by_letter({"a": [facts(owner="nobody", owner_known=False, procedure_effective="1.0", records_12_months=1)]})[
        "a"
    ]
    assert a.status is Readiness.PARTIAL
    assert any("names owner 'nobody', who is not an active person" in g for g in a.gaps)
    assert any("was not audited in 2026: plan an internal audit" in g for g in a.gaps)
    no_source = by_letter({"a": [facts(procedure_effective="1.0", records_12_months=1, audit_source=False)]})["a"]
    assert any("record it as a manual step" in g for g in no_source.gaps)
