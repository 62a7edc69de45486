"""Management review (QMS-001 section 4.6): quarters, the inputs it must consider, its outputs, its stages.

References: ISO 9001 §9.3.2 (inputs (a)-(f)), §9.3.3 (outputs: improvement, changes to the QMS, resource
needs), ISO/IEC 42001 §9.3, EU AI Act Art. 17(1). A review covers one calendar quarter (``2027Q1``) in the
organisation's time zone and is held on the first working day of the next quarter. Its minutes cannot be
submitted for signature until the chair has addressed every input and each output kind has at least one
decision or an explicit "none, because …". The decisions' actions are tracked records of their own
(``mr-action``): open ones roll into the next review as input (a).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, ValidationError

from .capabilities import declare
from .errors import DomainError
from .stages import Move, Stage, StageMachine, present

_PERIOD = re.compile(r"^(\d{4})-?Q([1-4])$")


class IncompleteMinutes(DomainError):
    """The minutes lack an addressed input or an output; the message names every gap."""


@dataclass(frozen=True, order=True)
class Period:
    """One calendar quarter, ``2027Q1``."""

    year: int
    quarter: int

    def __post_init__(self) -> None:
        if not 1 <= self.quarter <= 4 or not 1970 <= self.year <= 9998:
            raise DomainError(f"{self.year}Q{self.quarter} is not a quarter (like 2027Q1)")

    @classmethod
    def parse(cls, value: str) -> Period:
        match = _PERIOD.match((value or "").strip().upper())
        if not match:
            raise DomainError(f"{value!r} is not a quarter (write the year and the quarter, like 2027Q1)")
        return cls(int(match.group(1)), int(match.group(2)))

    @classmethod
    def of(cls, day: date) -> Period:
        return cls(day.year, (day.month - 1) // 3 + 1)

    def __str__(self) -> str:
        return f"{self.year}Q{self.quarter}"

    @property
    def start(self) -> date:
        return date(self.year, 3 * self.quarter - 2, 1)

    @property
    def end(self) -> date:
        """The first day after the quarter."""
        return self.next().start

    def next(self) -> Period:
        return Period(self.year + 1, 1) if self.quarter == 4 else Period(self.year, self.quarter + 1)

    def previous(self) -> Period:
        return Period(self.year - 1, 4) if self.quarter == 1 else Period(self.year, self.quarter - 1)

    def window(self, timezone: str) -> tuple[datetime, datetime]:
        """[start, end) of the quarter in the organisation's time zone, as UTC instants."""
        tz = zone(timezone)
        return (
            datetime.combine(self.start, time.min, tzinfo=tz).astimezone(UTC),
            datetime.combine(self.end, time.min, tzinfo=tz).astimezone(UTC),
        )


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name`` (``Europe/Berlin``); a name zoneinfo does not know is an error."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise DomainError(f"{name!r} is not a time zone (an IANA name like Europe/Berlin or UTC)") from None


def is_working_day(day: date, non_working: Iterable[date] = ()) -> bool:
    """Monday to Friday, except 1 January (a public holiday in every EU member state) and the days listed."""
    return day.weekday() < 5 and (day.month, day.day) != (1, 1) and day not in set(non_working)


def first_working_day(period: Period, non_working: Iterable[date] = ()) -> date:
    """The first working day of ``period`` (the day the review of the quarter before it is held)."""
    days = set(non_working)
    day = period.start
    while not is_working_day(day, days):
        day += timedelta(days=1)
    return day


def review_due_on(today: date, non_working: Iterable[date] = ()) -> Period | None:
    """The quarter whose review is held ``today`` (the previous quarter, on the first working day of this
    one), or None on any other day."""
    current = Period.of(today)
    return current.previous() if today == first_working_day(current, non_working) else None


def reviewed_period(today: date) -> Period:
    """The quarter a review started on ``today`` covers by default: the last completed one."""
    return Period.of(today).previous()


# QMS-001 4.6: the start of a quarter's review (tasks/management_review.start_due_review_task)
SCHEDULED_START = declare(
    "review.scheduled_start",
    "qmsflow starts the management review of the quarter just ended on the schedule set in qms.yaml "
    "(`management_review.schedule`, counted in the organisation's time zone); by default that is the first "
    "working day of each quarter: Monday to Friday, except 1 January and the non-working days listed in "
    "qms.yaml (`management_review.non_working_days`). A quarter is reviewed once: starting a quarter that was "
    "already started is refused, and the refusal is recorded in the audit trail.",
    proved_by=(
        "tests/integration/test_management_review_flow.py::test_the_schedule_fires_on_each_first_working_day_and_starts_one_review_per_quarter",
        "tests/integration/test_management_review_flow.py::test_one_real_run_starts_the_review_and_a_second_starts_none",
        "tests/integration/test_management_review.py::test_a_quarter_of_activity_gives_the_expected_figures",
    ),
    module=__name__,
)


# Days of the quarterly cron: the first working day is always within the first week of a quarter's first
# month (1 January and a weekend: the 4th at the latest, plus listed non-working days). The flow starts the
# review only on the first working day itself.
QUARTERLY_CRON = "0 7 1-7 1,4,7,10 *"


# ------------------------------------------------------------------ inputs (§9.3.2 and AI-specific)


@dataclass(frozen=True)
class ReviewInput:
    key: str
    clause: str  # the §9.3.2 letter, or "ai" for the AI-specific inputs
    title: str
    when_empty: str  # what the minutes say when nothing was recorded (or no procedure provides it)
    chair: bool = False  # asked of the chair in the minutes form, not gathered from the records


INPUTS: tuple[ReviewInput, ...] = (
    ReviewInput(
        "a.previous-actions", "a", "Status of actions from previous reviews", "no actions from previous reviews"
    ),
    ReviewInput(
        "b.regulatory-watch",
        "b",
        "Changes in external issues: regulatory-watch entries",
        "no regulatory-watch entries recorded this quarter",
    ),
    ReviewInput(
        "b.qms-changes",
        "b",
        "Changes in internal issues: qms.yaml and procedures since the last review",
        "no changes to qms.yaml or to procedures recorded since the last review",
    ),
    ReviewInput(
        "c.capa",
        "c",
        "Nonconformities and corrective actions: CAPAs opened, closed, overdue, ageing, effectiveness",
        "no CAPAs recorded this quarter",
    ),
    ReviewInput(
        "c.internal-audit",
        "c",
        "Internal audit results and open findings",
        "no internal audit results recorded this quarter",
    ),
    ReviewInput("c.document-reviews", "c", "Document reviews overdue", "no document reviews overdue"),
    ReviewInput(
        "c.release-validation",
        "c",
        "Release validations passed and failed",
        "no release validations recorded this quarter",
    ),
    ReviewInput(
        "c.incidents",
        "c",
        "Incidents and monitoring breaches",
        "not recorded in qmsflow, which keeps no incident or monitoring records: the quality lead brings them to the review",
    ),
    ReviewInput("c.approval-lead-times", "c", "Approval lead times", "no approvals decided this quarter"),
    ReviewInput("d.resources", "d", "Adequacy of resources", "asked of the chair in the minutes", chair=True),
    ReviewInput(
        "e.risk-actions",
        "e",
        "Effectiveness of actions taken to address risks and opportunities",
        "no actions on risks recorded this quarter",
    ),
    ReviewInput(
        "f.improvement",
        "f",
        "Opportunities for improvement (audit OFIs, CAPA suggestions)",
        "no opportunities for improvement recorded this quarter",
    ),
    ReviewInput(
        "ai.fairness",
        "ai",
        "Release validation results: how per-group fairness gaps moved since the last review",
        "no release validations with fairness results recorded this quarter",
    ),
    ReviewInput(
        "ai.monitoring-breaches",
        "ai",
        "Post-market monitoring breaches",
        "not recorded in qmsflow, which keeps no monitoring records: the quality lead brings them to the review",
    ),
    ReviewInput(
        "ai.serious-incidents",
        "ai",
        "Serious incidents (Art. 73)",
        "not recorded in qmsflow, which keeps no incident records: the quality lead brings them to the review",
    ),
    ReviewInput(
        "ai.deviations", "ai", "Deviations (overrides) recorded", "no deviations (overrides) recorded this quarter"
    ),
)
INPUT_KEYS: tuple[str, ...] = tuple(i.key for i in INPUTS)


def review_input(key: str) -> ReviewInput:
    for item in INPUTS:
        if item.key == key:
            return item
    raise DomainError(f"{key!r} is not a management review input (inputs: {', '.join(INPUT_KEYS)})")


# ------------------------------------------------------------------ outputs (§9.3.3) and minutes

OUTPUT_KINDS: dict[str, str] = {
    "improvement": "Opportunities for improvement",
    "qms-changes": "Changes to the QMS",
    "resources": "Resource needs",
}


class ActionDraft(BaseModel):
    what: str = Field(min_length=1, max_length=2000)
    owner: str = Field(min_length=1)
    due: date


def check_output_kind(kind: str) -> str:
    if kind not in OUTPUT_KINDS:
        raise DomainError(f"{kind!r} is not a §9.3.3 output kind (kinds: {', '.join(OUTPUT_KINDS)})")
    return kind


def check_action(record_id: str, value: Mapping[str, Any], people: Iterable[str], today: date) -> dict[str, Any]:
    """An action of a decision: what, an owner who is a person in qms.yaml, a due date not in the past."""
    try:
        action = ActionDraft.model_validate(dict(value))
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(p) for p in problem["loc"])
        raise DomainError(f"{record_id}: action {where}: {problem['msg']} (an action needs what, owner, due)") from None
    known = sorted(set(people))
    if action.owner not in known:
        raise DomainError(f"{record_id}: action owner {action.owner!r} is not a person (people: {', '.join(known)})")
    if action.due < today:
        raise DomainError(f"{record_id}: action due date {action.due.isoformat()} is in the past")
    return action.model_dump(mode="json")


# QMS-001 4.6, checked by check_complete below and in services.management_review.submit
MINUTES_COMPLETE = declare(
    "review.minutes_complete",
    "qmsflow records the minutes of a management review: a note on how each input was considered "
    "(`qms management-review decide REVIEW --input KEY --note …`, the adequacy of resources included) and the "
    "decisions on the three outputs of ISO 9001 9.3.3 (improvement, changes to the QMS, resource needs), from the "
    "command line or on the review's page of the dashboard, where a viewer's attempt is refused and recorded. It "
    "refuses to submit the minutes for signature (`qms management-review submit`) until every input is "
    "addressed and each output has a decision or a recorded reason for none (`--none-because`); the refusal "
    "names every gap and is recorded in the audit trail. Once submitted, the minutes can no longer change.",
    proved_by=(
        "tests/unit/test_management_review_domain.py::test_submission_names_every_gap",
        "tests/integration/test_management_review.py::test_minutes_blocked_until_complete_signed_and_actions_rolled_in",
        "tests/integration/test_management_review.py::test_cli_start_decide_submit_show",
        "tests/integration/test_management_review_web.py::test_the_minutes_are_recorded_and_submitted_through_the_form",
        "tests/integration/test_management_review_web.py::test_a_viewer_cannot_record_minutes_and_the_refusal_is_recorded",
    ),
    module=__name__,
)


def gaps(inputs: Iterable[str], minutes: Mapping[str, Any]) -> list[str]:
    """What the minutes still lack before they may be submitted, in the order of the inputs and outputs."""
    addressed = minutes.get("addressed") or {}
    outputs = minutes.get("outputs") or {}
    out = [f"input {key} is not addressed" for key in inputs if not present(addressed.get(key))]
    for kind in OUTPUT_KINDS:
        given = outputs.get(kind) or {}
        if not given.get("decisions") and not present(given.get("none_because")):
            out.append(f"output {kind} has no decision and no 'none, because …'")
    return out


def check_complete(record_id: str, inputs: Iterable[str], minutes: Mapping[str, Any]) -> None:
    missing = gaps(inputs, minutes)
    if missing:
        raise IncompleteMinutes(f"{record_id} cannot be submitted for approval: {'; '.join(missing)}")


def _complete(record_id: str, record: Mapping[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    check_complete(record_id, record.get("inputs") or (), record.get("minutes") or {})
    return fields


# The review as a table: minutes are prepared, then signed by top management.
MACHINE = StageMachine(
    kind="management-review",
    stages=(Stage("minutes", "Minutes in preparation"), Stage("signed", "Signed by top management", final=True)),
    moves=(Move("minutes", "signed", signed=True, rule=_complete, label="submit the minutes for signature"),),
)

# An action decided by a review: tracked until done (or cancelled with a reason).
ACTION_MACHINE = StageMachine(
    kind="mr-action",
    stages=(
        Stage("open", "Open"),
        Stage("in_progress", "In progress"),
        Stage("done", "Done", final=True),
        Stage("cancelled", "Cancelled", final=True),
    ),
    moves=(
        Move("open", "in_progress"),
        Move("open", "done"),
        Move("in_progress", "done"),
        Move("open", "cancelled", needs=("reason",)),
        Move("in_progress", "cancelled", needs=("reason",)),
    ),
)
