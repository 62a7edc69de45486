"""Internal audit (SOP-AUD-001): the audit's stages, the programme, impartiality, checklists, sampling.

References: ISO 9001 §9.2 (audit programme weighted by importance, changes and previous results;
objectivity and impartiality; results to management; corrective action without undue delay),
ISO 19011 clause 5 (programme) and 6 (audit steps through follow-up), ISO/IEC 42001 §9.2.

Stages of one audit: planned → in_progress (checklist built, sample drawn) → reporting (every item
recorded, a conclusion written) → closed (the report signed by the auditor and approved by a quality
lead). A planned audit may be cancelled with a reason; a report sent back goes back to in_progress.

Everything here is plain data and rules: no store, no files, no Prefect.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .aspects import ASPECTS
from .capabilities import declare
from .errors import DomainError, InvalidTransition
from .stages import MissingField, Move, Stage, StageMachine

RESULTS = ("conform", "observation", "improvement", "minor", "major")
NONCONFORMITIES = frozenset({"minor", "major"})
# the CAPA severity a nonconformity opens with
CAPA_SEVERITY = {"minor": "medium", "major": "high"}
ALLOWED_MONTHS = (1, 2, 3, 4, 6, 12)  # audit frequencies that divide the year into equal windows
LOOKBACK_DAYS = 365  # impartiality and evidence populations look back twelve months


class AuditError(DomainError):
    """An audit rule refused an operation."""


class Conflict(AuditError):
    """The auditor is not impartial for the process; the message names every conflict."""

    def __init__(self, auditor: str, process: str, reasons: list[str]):
        self.auditor, self.process, self.reasons = auditor, process, reasons
        super().__init__(f"{auditor} may not audit {process}: {'; '.join(reasons)} (ISO 9001 §9.2.2(c))")


# ------------------------------------------------------------------ the stages of one audit


def _all_recorded(record_id: str, stages: Mapping[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    items = fields.get("items") or []
    open_items = [str(i["n"]) for i in items if i.get("result") not in RESULTS]
    if not items:
        raise MissingField(f"{record_id}: moving to reporting needs a checklist with items")
    if open_items:
        raise MissingField(f"{record_id}: moving to reporting needs a result for item(s) {', '.join(open_items)}")
    return {k: v for k, v in fields.items() if k != "items"}


MACHINE = StageMachine(
    kind="audit",
    stages=(
        Stage("planned", "Planned"),
        Stage("in_progress", "In progress"),
        Stage("reporting", "Report"),
        Stage("closed", "Closed", final=True),
        Stage("cancelled", "Cancelled", final=True),
    ),
    moves=(
        Move("planned", "in_progress", needs=("checklist_version", "seed")),
        Move("in_progress", "reporting", needs=("conclusion", "items"), rule=_all_recorded),
        Move("reporting", "closed", needs=("report_sha256",), signed=True),
        Move("reporting", "in_progress", needs=("reason",), label="report sent back"),
        Move("planned", "cancelled", needs=("reason",)),
    ),
)

DONE_STAGES = frozenset({"reporting", "closed"})  # the audit itself took place


# ------------------------------------------------------------------ impartiality


@dataclass(frozen=True)
class DocumentActivity:
    """Someone authored or approved a version of a document (from the approval records)."""

    person: str
    document: str
    version: str
    role: Literal["authored", "approved"]
    on: date


# SOP-AUD-001 4.2: conflicts/check_impartial below, enforced by services.audit.plan
AUDITOR_IMPARTIAL = declare(
    "audit.auditor_impartial",
    "When an audit is planned (`qms audit plan`), qmsflow refuses an auditor who owns the process, is one of "
    "its members (`processes[].members`), or authored or approved a version of the process's procedure "
    "document in the twelve months before the audit date; the refusal names each conflict and is recorded in "
    "the audit trail. An auditor listed in `audit.external_auditors` of qms.yaml is recorded on the audit as "
    "external, with their organisation, under the same rules.",
    proved_by=(
        "tests/unit/test_audit_domain.py::test_each_conflict_is_refused_and_named",
        "tests/integration/test_audit.py::test_an_author_or_approver_of_its_documents_in_twelve_months_is_refused",
        "tests/integration/test_audit.py::test_an_external_auditor_is_recorded_as_such",
    ),
    module=__name__,
)


def conflicts(
    auditor: str,
    process: str,
    owner: str,
    members: Iterable[str],
    documents: Iterable[str],
    activity: Iterable[DocumentActivity],
    on: date,
) -> list[str]:
    """Why ``auditor`` may not audit ``process`` on ``on`` (empty: impartial). An auditor never audits their
    own work: not a process they own, not one they are a member of, and not one whose documents they
    authored or approved in the twelve months before the audit."""
    reasons = []
    if auditor == owner:
        reasons.append(f"owns the process {process}")
    if auditor in set(members):
        reasons.append(f"is a member of the process {process}")
    docs = set(documents)
    since = on - timedelta(days=LOOKBACK_DAYS)
    seen = set()
    for act in sorted(activity, key=lambda a: (a.on, a.document, a.version, a.role)):
        if act.person != auditor or act.document not in docs or not since <= act.on <= on:
            continue
        key = (act.role, act.document, act.version)
        if key in seen:
            continue
        seen.add(key)
        reasons.append(f"{act.role} {act.document} v{act.version} on {act.on.isoformat()}")
    return reasons


def check_impartial(auditor: str, process: str, **kwargs: Any) -> None:
    reasons = conflicts(auditor, process, **kwargs)
    if reasons:
        raise Conflict(auditor, process, reasons)


# ------------------------------------------------------------------ the programme


@dataclass(frozen=True)
class AuditFact:
    """An audit as the programme needs it."""

    id: str
    process: str
    planned: date
    stage: str
    done_on: date | None = None  # when it reached reporting


@dataclass(frozen=True)
class RiskSignal:
    """Why a process is audited sooner: an open major finding or an overdue CAPA."""

    process: str
    ref: str
    reason: str


@dataclass
class ProgrammeEntry:
    process: str
    every_months: int
    last_done: date | None
    due: date
    reasons: list[str] = field(default_factory=list)
    pulled_in: bool = False
    cells: dict[int, list[dict[str, str]]] = field(default_factory=dict)  # quarter -> audits

    def overdue(self, today: date) -> bool:
        """Its due date passed and no audit of it took place since (a later audit moves the due date)."""
        return self.due < today


def quarter_of(day: date) -> int:
    return (day.month - 1) // 3 + 1


def add_months(day: date, months: int) -> date:
    month = day.month - 1 + months
    year, month = day.year + month // 12, month % 12 + 1
    for dom in (day.day, 30, 29, 28):
        try:
            return date(year, month, dom)
        except ValueError:
            continue
    raise AssertionError("unreachable")


# SOP-AUD-001 4.1: programme below (`qms audit programme`)
PROGRAMME = declare(
    "audit.programme",
    "qmsflow generates the audit programme of a year from qms.yaml and the audit records (`qms audit "
    "programme --year YYYY`): every QMS process is due for an audit within twelve months of its last audit, "
    "or by the end of its first window of the year when it was never audited, or more often where "
    "`audit.every_months` sets 1, 2, 3, 4 or 6 months for it (`audit.default_every_months`, 12 by default, for "
    "the others). A process with an open major finding or an overdue CAPA is due within `audit.pull_in_days` "
    "(90 by default) of today when that is sooner, and the programme names each such finding or CAPA. For each "
    "process the programme shows its due date and, per quarter, the audits planned, done and overdue and the "
    "nonconformities raised.",
    proved_by=(
        "tests/unit/test_audit_domain.py::test_every_process_is_due_within_twelve_months_and_frequency_is_per_process",
        "tests/unit/test_audit_domain.py::test_an_open_major_finding_or_an_overdue_capa_pulls_the_audit_in_and_says_why",
        "tests/unit/test_audit_domain.py::test_quarter_cells_say_planned_done_overdue_and_cancelled",
    ),
    module=__name__,
)


def programme(
    year: int,
    processes: Sequence[str],
    every_months: Mapping[str, int],
    audits: Iterable[AuditFact],
    signals: Iterable[RiskSignal],
    today: date,
    pull_in_days: int,
) -> list[ProgrammeEntry]:
    """The audit programme of ``year``: for each process when its next audit is due and why.

    Regular due date: the last audit that took place plus the process's frequency (12 months at most);
    a process never audited is due by the end of its first window of the year. Risk-based: a process with
    an open major finding or an overdue CAPA is due within ``pull_in_days`` of today when that is sooner,
    and the entry names each reason. Each quarter cell lists the audits planned in it with their state:
    planned, done, overdue (planned date passed and not done), cancelled.
    """
    audits = list(audits)
    by_signal: dict[str, list[RiskSignal]] = {}
    for signal in signals:
        by_signal.setdefault(signal.process, []).append(signal)
    entries = []
    for key in processes:
        months = every_months.get(key, 12)
        if months not in ALLOWED_MONTHS:
            raise AuditError(f"audit frequency of {key}: {months} months (allowed: {ALLOWED_MONTHS})")
        done = sorted(a.done_on for a in audits if a.process == key and a.done_on is not None and a.done_on <= today)
        last = done[-1] if done else None
        if last is not None:
            due = add_months(last, months)
            reasons = [f"every {months} months after the last audit on {last.isoformat()}"]
        else:
            due = add_months(date(year, 1, 1), months) - timedelta(days=1)
            reasons = [f"not audited yet: due by the end of the first {months}-month window"]
        entry = ProgrammeEntry(key, months, last, due, reasons)
        sooner = today + timedelta(days=pull_in_days)
        for signal in by_signal.get(key, []):
            entry.reasons.append(f"risk: {signal.reason} ({signal.ref})")
            if sooner < entry.due:
                entry.due, entry.pulled_in = sooner, True
        if entry.pulled_in:
            entry.reasons.append(f"pulled in to {entry.due.isoformat()} ({pull_in_days} days from {today.isoformat()})")
        for audit in audits:
            if audit.process != key or audit.planned.year != year:
                continue
            if audit.stage in DONE_STAGES:
                state = "done"
            elif audit.stage == "cancelled":
                state = "cancelled"
            elif audit.planned < today:
                state = "overdue"
            else:
                state = "planned"
            entry.cells.setdefault(quarter_of(audit.planned), []).append({"audit": audit.id, "state": state})
        entries.append(entry)
    return entries


# ------------------------------------------------------------------ checklists (the versioned data file)


class Criteria(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    ai_act: str
    iso_42001: list[str] = Field(default_factory=list)
    iso_9001: list[str] = Field(default_factory=list)


EVIDENCE_KINDS = (
    "document-approvals",  # approval requests of the process's documents
    "capas",  # CAPA records of the process
    "release-validations",  # release records of the process
    "audits",  # earlier audits of the process
    "findings",  # audit findings of the process
    "approvals",  # every approval request filed under the process
)


class ChecklistEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    objective: str = Field(min_length=1)
    procedure: str = Field(min_length=1)
    criteria: Criteria
    evidence: list[str] = Field(min_length=1)
    sample_size: int = Field(default=3, ge=1, le=50)

    @field_validator("evidence")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if v not in EVIDENCE_KINDS]
        if bad:
            raise ValueError(f"unknown evidence kind {', '.join(bad)} (allowed: {', '.join(EVIDENCE_KINDS)})")
        return value


class Checklist(BaseModel):
    """The versioned checklist data file: an entry per Art. 17(1) aspect, per process without aspects,
    and items every audit contains."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    version: str = Field(min_length=1)
    every_process: list[ChecklistEntry] = Field(default_factory=list)
    aspects: dict[str, ChecklistEntry]
    processes: dict[str, list[ChecklistEntry]] = Field(default_factory=dict)

    @field_validator("aspects")
    @classmethod
    def _all_aspects(cls, value: dict[str, ChecklistEntry]) -> dict[str, ChecklistEntry]:
        unknown = [k for k in value if k not in ASPECTS]
        missing = [k for k in ASPECTS if k not in value]
        if unknown or missing:
            raise ValueError(f"aspects: unknown {unknown or 'none'}, missing {missing or 'none'} (need a to m)")
        return value

    @classmethod
    def parse(cls, data: Any, source: str) -> Checklist:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(p) for p in problem["loc"])
            raise AuditError(f"{source}: {where}: {problem['msg']}") from None

    def entries_for(self, process: str, aspects: Sequence[str]) -> list[tuple[str, ChecklistEntry]]:
        """(topic, entry) for an audit of ``process`` covering ``aspects``, in a stable order."""
        out: list[tuple[str, ChecklistEntry]] = [("process", e) for e in self.every_process]
        out += [(f"Art. 17(1)({a})", self.aspects[a]) for a in aspects if a in self.aspects]
        out += [(process, e) for e in self.processes.get(process, [])]
        return out


class Workpaper(BaseModel):
    """One checklist item as the auditor works it: what is checked, how, on which records, with what result."""

    n: int
    topic: str
    objective: str
    procedure: str
    criteria: Criteria
    population: list[str]
    sample: list[str]
    seed: str
    result: str | None = None
    evidence: list[str] = Field(default_factory=list)
    note: str = ""
    preparer: str | None = None
    reviewer: str | None = None
    recorded_at: str | None = None
    finding: str | None = None


def seed_for(audit_id: str, entropy: str) -> str:
    """A seed for an audit's draw (hex): recorded in the trail before the sample is drawn from it."""
    return hashlib.sha256(f"{audit_id}:{entropy}".encode()).hexdigest()[:16]


def draw(population: Sequence[str], size: int, seed: str, item: int) -> list[str]:
    """A reproducible sample: the same population, size, seed and item number always give the same records
    (Python's Mersenne Twister, seeded with ``SEED:ITEM``, over the population in sorted order)."""
    ordered = sorted(set(population))
    if len(ordered) <= size:
        return ordered
    return sorted(random.Random(f"{seed}:{item}").sample(ordered, size))


# SOP-AUD-001 4.5: build_checklist and draw, run by services.audit.start
CHECKLIST_AND_SAMPLE = declare(
    "audit.checklist_and_sample",
    "When an audit starts, qmsflow builds its checklist from a versioned data file "
    "(`qmsflow/data/audit-checklist.yaml`) and records the file's version: one item on the process's "
    "procedure, one per Art. 17(1) aspect of the process and the items of the process itself, each with its "
    "objective, method, criteria (the AI Act aspect and the ISO/IEC 42001 and ISO 9001 clauses the file maps "
    "it to) and the kinds of evidence to sample. For each item it lists the population of records of the last "
    "twelve months and draws a sample from it; the seed of the draw is recorded in the audit trail with the "
    "populations before the draw, so anyone can draw the same sample again.",
    proved_by=(
        "tests/integration/test_audit.py::test_the_audit_end_to_end_with_a_major_finding_its_capa_and_the_signed_report",
        "tests/unit/test_audit_domain.py::test_the_sample_is_reproducible_from_the_seed_and_differs_with_another_seed",
        "tests/unit/test_audit_domain.py::test_build_checklist_gives_workpapers_with_population_and_sample",
    ),
    module=__name__,
)


def build_checklist(
    checklist: Checklist,
    process: str,
    aspects: Sequence[str],
    populations: Mapping[str, Sequence[str]],
    seed: str,
) -> list[Workpaper]:
    """The workpapers of one audit: each entry's population (the records of its evidence kinds) and sample."""
    papers = []
    for n, (topic, entry) in enumerate(checklist.entries_for(process, aspects), start=1):
        population = sorted({rid for kind in entry.evidence for rid in populations.get(kind, [])})
        papers.append(
            Workpaper(
                n=n,
                topic=topic,
                objective=entry.objective,
                procedure=entry.procedure,
                criteria=entry.criteria,
                population=population,
                sample=draw(population, entry.sample_size, seed, n),
                seed=seed,
            )
        )
    return papers


def record_item(
    audit_id: str,
    stage: str,
    papers: list[dict[str, Any]],
    n: int,
    result: str,
    evidence: list[str],
    note: str,
    by: str,
) -> dict[str, Any]:
    """Check and return the workpaper ``n`` with its result (the caller resolves the evidence)."""
    if stage != "in_progress":
        raise InvalidTransition(f"{audit_id} is {stage}: items are recorded while it is in progress")
    if result not in RESULTS:
        raise AuditError(f"result {result!r} is not allowed (allowed: {', '.join(RESULTS)})")
    numbers = [p["n"] for p in papers]
    if n not in numbers:
        raise AuditError(f"{audit_id} has no item {n} (items: 1 to {len(papers)})")
    if result != "conform" and not note.strip():
        raise MissingField(f"{audit_id} item {n}: a result of {result} needs a note (the criterion and what was found)")
    if result in NONCONFORMITIES and not evidence:
        raise MissingField(f"{audit_id} item {n}: a {result} nonconformity needs objective evidence (--evidence)")
    paper = dict(papers[numbers.index(n)])
    if paper.get("finding"):
        raise AuditError(f"{audit_id} item {n} already raised {paper['finding']}; it cannot be recorded again")
    paper.update(result=result, evidence=list(evidence), note=note, preparer=by)
    return paper


FOLLOW_UP_RESULTS = ("effective", "ineffective")
