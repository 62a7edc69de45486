"""Readiness per Art. 17(1) aspect, from evidence, not from tags (issue 21, point 5).

An aspect assigned to a process in qms.yaml is only a plan. For each aspect (a)-(m) qmsflow asks four
questions of the records, about the processes that cover it:

1. procedure: is each process's procedure approved (an effective version) and in date (its periodic
   review not overdue)?
2. owner: does each process have a named owner who is an active person of qms.yaml?
3. records: did each process produce records in the last 12 months (records, approval requests)?
4. audit: was each process audited this calendar year (an internal audit that reached its report)?

All four for every covering process: ``ready``. Some, with at least an approved procedure or records
somewhere: ``partial``. An aspect no process covers, or with neither: ``gap`` (a fresh scaffold: ten
unapproved drafts and no records is thirteen gaps). Each missing answer becomes a line saying what to do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum

from .aspects import ASPECTS
from .capabilities import declare

# QMS-001 6 and SOP-AUD-001 4.1: the rules below, gathered by services.readiness (`qms readiness`)
PER_ASPECT = declare(
    "readiness.per_aspect",
    "`qms readiness` judges each Art. 17(1) aspect (a) to (m) on evidence, for the processes that cover it in "
    "qms.yaml: whether each process's procedure has an approved version not overdue for its periodic review, "
    "whether its owner is an active person of qms.yaml, whether it produced records in the last twelve months "
    "and whether it had an internal audit this calendar year that reached its report. An aspect with all four "
    "for every covering process is ready; an aspect that no process covers, or with neither an approved "
    "procedure nor records, is a gap; the others are partial. Each missing answer is named with what to do.",
    proved_by=(
        "tests/unit/test_readiness_domain.py::test_an_aspect_no_process_covers_is_a_gap_saying_what_to_do",
        "tests/unit/test_readiness_domain.py::test_every_check_for_every_covering_process_is_ready",
        "tests/integration/test_readiness.py::test_a_fresh_scaffold_is_thirteen_gaps_and_check_no_longer_claims_coverage",
    ),
    module=__name__,
)


class Readiness(StrEnum):
    READY = "ready"
    PARTIAL = "partial"
    GAP = "gap"


@dataclass(frozen=True)
class ProcessFacts:
    """What the store says about one process (gathered by ``services.readiness``)."""

    key: str
    title: str
    procedure: str
    owner: str
    owner_known: bool
    procedure_effective: str | None = None  # the effective version, if any
    procedure_review_due: date | None = None
    records_12_months: int = 0
    audits_this_year: list[str] = field(default_factory=list)  # audit ids
    audit_source: bool = True  # False: no internal-audit procedure records audits in this store


@dataclass
class AspectReadiness:
    letter: str
    title: str
    processes: list[str]
    status: Readiness
    checks: dict[str, bool]  # procedure, owner, records, audit: every covering process passes
    gaps: list[str]


CHECKS = ("procedure", "owner", "records", "audit")


def process_gaps(p: ProcessFacts, today: date) -> dict[str, str | None]:
    """For each check, what to do for this process (None: it passes)."""
    gaps: dict[str, str | None] = dict.fromkeys(CHECKS)
    if p.procedure_effective is None:
        gaps["procedure"] = (
            f"{p.procedure} ({p.key}) has no approved version: submit it for review (qms document submit {p.procedure})"
        )
    elif p.procedure_review_due is not None and p.procedure_review_due < today:
        gaps["procedure"] = (
            f"{p.procedure} v{p.procedure_effective} ({p.key}) was due for its periodic review on "
            f"{p.procedure_review_due.isoformat()}: review it (qms document submit {p.procedure} --still-valid, or a new version)"
        )
    if not p.owner_known:
        gaps["owner"] = f"process {p.key} names owner {p.owner!r}, who is not an active person of qms.yaml: name one"
    if p.records_12_months == 0:
        gaps["records"] = f"process {p.key} has no records in the last 12 months: run its procedure ({p.procedure})"
    if not p.audits_this_year:
        gaps["audit"] = (
            f"process {p.key} was not audited in {today.year}: plan an internal audit (qms audit plan {p.key} …)"
            if p.audit_source
            else f"process {p.key}: no internal audit is recorded in qmsflow this year (record it as a manual step)"
        )
    return gaps


def assess(covering: dict[str, list[ProcessFacts]], today: date) -> list[AspectReadiness]:
    """Readiness of every aspect (a)-(m), given the facts of the processes covering each."""
    result = []
    for letter, title in ASPECTS.items():
        processes = covering.get(letter, [])
        if not processes:
            result.append(
                AspectReadiness(
                    letter,
                    title,
                    [],
                    Readiness.GAP,
                    dict.fromkeys(CHECKS, False),
                    [f"no process covers ({letter}): add it to the 'aspects' of the process that does it, in qms.yaml"],
                )
            )
            continue
        per_process = [process_gaps(p, today) for p in processes]
        checks = {check: all(g[check] is None for g in per_process) for check in CHECKS}
        # an owner named in qms.yaml is not evidence on its own: partial needs an approved procedure or records
        any_pass = any(g["procedure"] is None or g["records"] is None for g in per_process)
        gaps = [g[check] for g in per_process for check in CHECKS if g[check] is not None]
        status = Readiness.READY if all(checks.values()) else (Readiness.PARTIAL if any_pass else Readiness.GAP)
        result.append(AspectReadiness(letter, title, [p.key for p in processes], status, checks, gaps))
    return result
