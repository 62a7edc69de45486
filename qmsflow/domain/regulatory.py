"""EU AI Act application dates and deadlines as data: ``ai_act_dates.yaml`` beside this module.

The dates of the law are not written in code: they are read from a versioned data file in which every
entry names its provision, its source and the day it was checked against that source (``checked_on``),
and says whether that source is the law itself (``verified``). The retention rule (``domain/retention``)
takes its ten years from the Art. 18(1) entry of this file.
"""

from __future__ import annotations

from datetime import date
from functools import lru_cache
from importlib import resources

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .capabilities import declare

# QMS-001 4.3: the dates file read by parse/bundled below, listed by `qms retention dates`
DATES_AS_DATA = declare(
    "retention.dates_as_data",
    "qmsflow reads the AI Act's application dates and deadlines from a versioned data file shipped with it "
    "(`ai_act_dates.yaml`), in which each entry names its provision and its source, the day it was checked "
    "against that source and whether that source is the law itself; a file lacking any of these is refused, "
    "naming the entry and field. `qms retention dates` lists every entry, and the retention period takes its "
    "years from the Art. 18(1) entry.",
    proved_by=(
        "tests/unit/test_regulatory_dates.py::test_the_bundled_file_holds_the_omnibus_dates_with_source_and_check_date",
        "tests/unit/test_regulatory_dates.py::test_a_bad_file_is_refused_naming_the_field",
        "tests/integration/test_retention.py::test_cli_dates_show_hold_and_release",
    ),
    module=__name__,
)


DATA_FILE = "ai_act_dates.yaml"


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    applies_to: str = Field(min_length=1)
    provision: str = Field(min_length=1)
    source: str = Field(min_length=1)
    checked_on: date
    verified: bool
    note: str | None = None


class ApplicationDate(_Entry):
    date: date
    original_date: date | None = None  # before an amendment (the Digital Omnibus), when one moved it


class Deadline(_Entry):
    counted_from: str = Field(min_length=1)
    years: int | None = Field(default=None, ge=1)
    months: int | None = Field(default=None, ge=1)
    days: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_period(self) -> Deadline:
        if sum(v is not None for v in (self.years, self.months, self.days)) != 1:
            raise ValueError(f"{self.id}: give exactly one of years, months, days")
        return self

    @property
    def period(self) -> str:
        for unit in ("years", "months", "days"):
            value = getattr(self, unit)
            if value is not None:
                return f"{value} {unit[:-1] if value == 1 else unit}"
        return ""


class RegulatoryDates(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(min_length=1)
    regulation: str = Field(min_length=1)
    application_dates: list[ApplicationDate]
    deadlines: list[Deadline]

    @model_validator(mode="after")
    def _unique_ids(self) -> RegulatoryDates:
        ids = [e.id for e in [*self.application_dates, *self.deadlines]]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"id declared twice: {', '.join(twice)}")
        if RETENTION_ID not in {d.id for d in self.deadlines}:
            raise ValueError(f"the deadline {RETENTION_ID!r} (Art. 18(1)) is missing")
        return self

    def deadline(self, deadline_id: str) -> Deadline:
        for entry in self.deadlines:
            if entry.id == deadline_id:
                return entry
        raise KeyError(
            f"no deadline {deadline_id!r} in {DATA_FILE} (deadlines: {', '.join(d.id for d in self.deadlines)})"
        )

    def application(self, entry_id: str) -> ApplicationDate:
        for entry in self.application_dates:
            if entry.id == entry_id:
                return entry
        raise KeyError(f"no application date {entry_id!r} in {DATA_FILE}")

    @property
    def retention(self) -> Deadline:
        """Art. 18(1): how long the documentation is kept after placing on the market or putting into service."""
        entry = self.deadline(RETENTION_ID)
        if entry.years is None:
            raise ValueError(f"{DATA_FILE}: {RETENTION_ID} must be given in years")
        return entry


RETENTION_ID = "documentation-retention"


class DataFileError(ValueError):
    """The dates file is not valid: the message names the entry and field."""


def parse(text: str, where: str = DATA_FILE) -> RegulatoryDates:
    """Read a dates file (YAML text); a bad file raises ``DataFileError`` naming the field."""
    from ruamel.yaml import YAML, YAMLError

    try:
        data = YAML(typ="safe").load(text)
    except YAMLError as exc:
        raise DataFileError(f"{where}: not valid YAML: {exc}") from None
    try:
        return RegulatoryDates.model_validate(data)
    except ValidationError as exc:
        problem = exc.errors()[0]
        loc = ".".join(str(p) for p in problem["loc"])
        raise DataFileError(f"{where}: {loc or 'file'}: {problem['msg']}") from None


@lru_cache(maxsize=1)
def bundled() -> RegulatoryDates:
    """The dates file shipped with qmsflow."""
    text = resources.files(__package__).joinpath(DATA_FILE).read_text(encoding="utf-8")
    return parse(text)
