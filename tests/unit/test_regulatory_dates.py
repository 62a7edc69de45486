"""The AI Act's dates as data (issue 21, point 3): the bundled file, its sources, and bad files refused."""

from __future__ import annotations

from datetime import date

import pytest

from qmsflow.domain import regulatory

GOOD = """
version: "1"
regulation: Regulation (EU) 2024/1689 (AI Act)
application_dates:
  - {id: high-risk-annex-iii, applies_to: x, provision: Art. 113, date: 2027-12-02, source: s, checked_on: 2026-12-06, verified: false}
deadlines:
  - {id: documentation-retention, applies_to: x, provision: Art. 18(1), years: 10, counted_from: placing, source: s, checked_on: 2026-12-06, verified: true}
"""


def test_the_bundled_file_holds_the_omnibus_dates_with_source_and_check_date() -> None:
    dates = regulatory.bundled()
    annex_iii = dates.application("high-risk-annex-iii")
    annex_i = dates.application("high-risk-annex-i")
    assert (annex_iii.date, annex_iii.original_date) == (date(2027, 12, 2), date(2026, 8, 2))
    assert (annex_i.date, annex_i.original_date) == (date(2028, 8, 2), date(2027, 8, 2))
    for entry in [*dates.application_dates, *dates.deadlines]:
        assert entry.source and entry.checked_on and entry.provision
    assert "29 Jun 2026" in annex_iii.source and annex_iii.verified is False  # OJ publication not read
    assert dates.retention.years == 10 and dates.retention.provision == "Art. 18(1)"
    assert dates.deadline("serious-incident-report").period == "15 days"
    assert dates.deadline("serious-incident-widespread").days == 2
    assert dates.deadline("serious-incident-death").days == 10


def test_a_good_file_parses() -> None:
    assert regulatory.parse(GOOD).retention.years == 10


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("checked_on: 2026-12-06, verified: false", "verified: false"),
            r"application_dates.0.checked_on: Field required",
        ),
        (("source: s, checked_on: 2026-12-06, verified: false", "checked_on: 2026-12-06, verified: false"), "source"),
        (("date: 2027-12-02", "date: soon"), r"application_dates.0.date"),
        (("years: 10", "years: 10, days: 3"), "give exactly one of years, months, days"),
        (("documentation-retention", "other"), "documentation-retention' \\(Art. 18\\(1\\)\\) is missing"),
        (('version: "1"', 'version: "1"\nextra: 1'), "extra: Extra inputs are not permitted"),
        (("regulation:", "regulation: [\n"), "not valid YAML"),
    ],
)
def test_a_bad_file_is_refused_naming_the_field(change: tuple[str, str], message: str) -> None:
    with pytest.raises(regulatory.DataFileError, match=message):
        regulatory.parse(GOOD.replace(*change), where="dates.yaml")
