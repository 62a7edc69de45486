"""Release validation: acceptance criteria fixed in advance, the evidence of one release, the verdict.

References: EU AI Act Art. 9(8) (testing against prior defined metrics and probabilistic thresholds),
Art. 17(1)(d) (examination, test and validation procedures), Annex IV 2(g) (test logs and reports, dated
and signed by the responsible persons).

- Criteria are data, per AI system in ``qms.yaml`` (``systems[].release``); ``criteria_version`` is the
  SHA-256 of their canonical form, so a report names exactly the criteria it applied.
- Evidence is parsed here from bytes (the caller reads the files): JUnit XML as pytest, Maven Surefire
  and jest-junit write it, CTRF JSON, the metrics JSON of ``docs/release-validation.md`` (per-group
  values in the shape of a fairlearn ``MetricFrame.by_group``) and an MLflow run exported to JSON.
  Malformed input raises ``EvidenceError`` naming the file and the line (or the JSON path).
- ``evaluate`` fails closed: a missing metric, a missing group, a group below its minimum size, a suite
  with no test, a required test that did not run, and evidence produced before the criteria became part
  of the configuration are failed criteria, each named with its reason; nothing unknown ever passes.

Pure: no I/O, no Prefect, no SQL.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import xml.etree.ElementTree as ElementTree
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from . import limits
from .capabilities import declare
from .limits import Text

# --------------------------------------------------------------------------- criteria (qms.yaml)

CRITERION_ID = r"^[a-z0-9][a-z0-9._-]*$"
CRITERION_TYPES = ("metric", "group_gap", "pass_rate", "required_tests", "no_failures")
NameText = Annotated[str, Field(min_length=1, max_length=limits.NAME)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Criterion(_Strict):
    """One acceptance criterion. ``type`` says which fields it needs:

    - ``metric``: ``metric`` with ``min`` and/or ``max`` (e.g. accuracy >= 0.9);
    - ``group_gap``: ``metric`` per group (``by_group``), ``groups`` that must all be present, and
      ``max_difference`` (largest minus smallest value) and/or ``min_ratio`` (smallest / largest);
      ``min_group_size`` against the group counts (``by_group.count``);
    - ``pass_rate``: ``suites`` whose tests pass at least ``min`` (0..1; skipped tests do not count as passed);
    - ``required_tests``: ``tests`` (``classname.name`` or ``name``) that must be present and passed;
    - ``no_failures``: no failed or errored test in ``suites``.
    """

    id: Annotated[str, Field(pattern=CRITERION_ID, min_length=1, max_length=limits.ID)]
    type: Literal[CRITERION_TYPES]  # type: ignore[valid-type]
    title: Text(limits.NAME) | None = None
    metric: NameText | None = None
    min: float | None = None
    max: float | None = None
    groups: list[NameText] = Field(default_factory=list, max_length=200)
    max_difference: float | None = Field(default=None, ge=0)
    min_ratio: float | None = Field(default=None, ge=0, le=1)
    min_group_size: int | None = Field(default=None, ge=1)
    suites: list[NameText] = Field(default_factory=list, max_length=200)
    tests: list[Annotated[str, Field(min_length=1, max_length=limits.TEXT)]] = Field(
        default_factory=list, max_length=1000
    )

    @model_validator(mode="after")
    def _fields_of_type(self) -> Criterion:
        def need(*names: str) -> None:
            for name in names:
                if getattr(self, name) in (None, []):
                    raise ValueError(f"a {self.type!r} criterion needs {name!r}")

        def forbid(*names: str) -> None:
            given = [n for n in names if getattr(self, n) not in (None, [])]
            if given:
                raise ValueError(f"{', '.join(map(repr, given))} has no meaning for a {self.type!r} criterion")

        if self.type == "metric":
            need("metric")
            forbid("groups", "max_difference", "min_ratio", "min_group_size", "suites", "tests")
            if self.min is None and self.max is None:
                raise ValueError("a 'metric' criterion needs 'min' or 'max'")
        elif self.type == "group_gap":
            need("metric", "groups")
            forbid("min", "max", "suites", "tests")
            if len(self.groups) < 2:
                raise ValueError("a 'group_gap' criterion needs at least two 'groups'")
            if self.max_difference is None and self.min_ratio is None:
                raise ValueError("a 'group_gap' criterion needs 'max_difference' or 'min_ratio'")
        elif self.type == "pass_rate":
            need("suites", "min")
            forbid("metric", "max", "groups", "max_difference", "min_ratio", "min_group_size", "tests")
            if not 0 <= self.min <= 1:
                raise ValueError("'min' of a 'pass_rate' criterion is a rate between 0 and 1")
        elif self.type == "required_tests":
            need("tests")
            forbid("metric", "min", "max", "groups", "max_difference", "min_ratio", "min_group_size", "suites")
        elif self.type == "no_failures":
            need("suites")
            forbid("metric", "min", "max", "groups", "max_difference", "min_ratio", "min_group_size", "tests")
        return self

    def describe(self) -> str:
        """The criterion in words, for the report and the CLI."""
        if self.title:
            return self.title
        if self.type == "metric":
            parts = [f"{self.metric} >= {self.min:g}"] if self.min is not None else []
            parts += [f"{self.metric} <= {self.max:g}"] if self.max is not None else []
            return " and ".join(parts)
        if self.type == "group_gap":
            parts = (
                [f"largest gap of {self.metric} <= {self.max_difference:g}"] if self.max_difference is not None else []
            )
            parts += [f"ratio of {self.metric} >= {self.min_ratio:g}"] if self.min_ratio is not None else []
            size = f", each group n >= {self.min_group_size}" if self.min_group_size else ""
            return " and ".join(parts) + f" across {', '.join(self.groups)}{size}"
        if self.type == "pass_rate":
            return f"pass rate of {', '.join(self.suites)} >= {self.min:g}"
        if self.type == "required_tests":
            return f"required tests present and passed: {', '.join(self.tests)}"
        return f"no failed test in {', '.join(self.suites)}"


class ReleaseSettings(_Strict):
    """``systems[].release``: who signs a validation report, and the acceptance criteria."""

    # people or role:ROLE who sign the report (the responsible persons of Annex IV 2(g))
    signers: list[Text(limits.ID + len("role:"))] = Field(min_length=1)
    required_signatures: Literal["all"] | Annotated[int, Field(ge=1, le=20)] = "all"
    # the QMS process a validation belongs to; its owner owns the CAPA a failed validation opens
    process: Annotated[str, Field(pattern=CRITERION_ID, max_length=limits.ID)] = "verification-validation"
    criteria: list[Criterion] = Field(min_length=1, max_length=200)

    def duplicate_ids(self) -> list[tuple[int, str]]:
        """(index, id) of each criterion whose id an earlier one already has (cross-checked in qms.yaml)."""
        seen: set[str] = set()
        out = []
        for index, criterion in enumerate(self.criteria):
            if criterion.id in seen:
                out.append((index, criterion.id))
            seen.add(criterion.id)
        return out


def criteria_version(criteria: list[Criterion]) -> str:
    """SHA-256 of the criteria's canonical JSON: the same criteria give the same version, any change another."""
    body = json.dumps(
        [c.model_dump(mode="json") for c in criteria], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- evidence


class EvidenceError(ValueError):
    """Evidence that cannot be read; the message names the file and the line or field."""


@dataclass
class CaseResult:
    suite: str
    classname: str
    name: str
    outcome: Literal["passed", "failed", "error", "skipped"]
    time: float = 0.0
    requirements: list[str] = field(default_factory=list)
    file: str = ""

    @property
    def full_name(self) -> str:
        return f"{self.classname}.{self.name}" if self.classname else self.name


@dataclass
class SuiteTotals:
    suite: str
    file: str
    tests: int = 0
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    time: float = 0.0


@dataclass
class ResultsEvidence:
    """The test results of one file (JUnit XML or CTRF JSON)."""

    file: str
    format: str
    produced_at: datetime | None
    results: list[CaseResult]
    totals: list[SuiteTotals]


@dataclass
class MetricsEvidence:
    """The metrics of one file: scalar ``metrics`` and per-group ``by_group`` (metric -> group -> value)."""

    file: str
    format: str
    produced_at: datetime | None
    metrics: dict[str, float]
    by_group: dict[str, dict[str, float]]


REQUIREMENT_PROPERTIES = ("requirement", "requirements", "requirement_id", "req", "verifies")
_SPLIT = re.compile(r"[,\s;]+")


def _requirements_from(values: list[str]) -> list[str]:
    out: list[str] = []
    for value in values:
        for item in _SPLIT.split(value or ""):
            if item and item not in out:
                out.append(item)
    return out


def parse_time(value: Any, where: str) -> datetime | None:
    """An ISO 8601 time (a time without offset is UTC) or epoch milliseconds; None when absent."""
    if value in (None, ""):
        return None
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(value / 1000, UTC)
        text = str(value).strip().replace("Z", "+00:00")
        moment = datetime.fromisoformat(text)
    except (ValueError, OverflowError, OSError):
        raise EvidenceError(f"{where}: {value!r} is not a time (ISO 8601, or epoch milliseconds)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _refuse_dtd(text: str, name: str) -> None:
    """Test reports need no DTD; entities are the way to an XML bomb, so any declaration is refused."""
    for marker in ("<!DOCTYPE", "<!ENTITY"):
        index = text.find(marker)
        if index >= 0:
            line = text.count("\n", 0, index) + 1
            raise EvidenceError(f"{name}:{line}: {marker[2:]} declarations are not accepted in a JUnit report")


def parse_junit(body: bytes, name: str) -> ResultsEvidence:
    """JUnit XML as pytest (``<testsuites><testsuite name="pytest">``), Maven Surefire (one ``<testsuite>`` root,
    ``<properties>`` of the JVM) and jest-junit (``<testsuites>`` with one suite per file) write it."""
    from junitparser import JUnitXml, TestSuite

    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = body.count(b"\n", 0, exc.start) + 1
        raise EvidenceError(f"{name}:{line}: not UTF-8 text (byte offset {exc.start})") from None
    _refuse_dtd(text, name)
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as exc:
        line, column = exc.position
        message = str(exc).split(":")[0]
        raise EvidenceError(f"{name}:{line}: not well-formed XML ({message}, column {column + 1})") from None
    if root.tag not in ("testsuites", "testsuite"):
        raise EvidenceError(f"{name}:1: the root element is <{root.tag}>, not <testsuites> or <testsuite> (JUnit XML)")
    xml = JUnitXml.fromroot(root)
    suites = [xml] if isinstance(xml, TestSuite) else list(xml)
    if not suites:
        raise EvidenceError(f"{name}:1: no <testsuite> in the report")
    results: list[CaseResult] = []
    totals: list[SuiteTotals] = []
    produced: list[datetime] = []
    for index, suite in enumerate(suites):
        suite_name = suite.name or f"suite-{index + 1}"
        where = f"{name}: testsuite {suite_name!r}"
        stamp = parse_time(suite._elem.get("timestamp"), f"{where} timestamp")
        if stamp:
            produced.append(stamp)
        total = SuiteTotals(suite_name, name)
        for case in suite:
            props = _case_properties(case._elem)
            requirements = _requirements_from([v for k, v in props if k.lower() in REQUIREMENT_PROPERTIES])
            outcome = _outcome(case._elem)
            try:
                duration = float(case._elem.get("time") or 0)
            except ValueError:
                raise EvidenceError(
                    f"{where}: testcase {case.name!r} time {case._elem.get('time')!r} is not a number"
                ) from None
            results.append(
                CaseResult(suite_name, case.classname or "", case.name or "", outcome, duration, requirements, name)
            )
            total.tests += 1
            total.time += duration
            _count(total, outcome)
        totals.append(total)
    return ResultsEvidence(name, "junit", min(produced) if produced else None, results, totals)


_TOTAL_FIELD = {"passed": "passed", "failed": "failed", "error": "errors", "skipped": "skipped"}


def _count(total: SuiteTotals, outcome: str) -> None:
    name = _TOTAL_FIELD[outcome]
    setattr(total, name, getattr(total, name) + 1)


def _case_properties(elem: ElementTree.Element) -> list[tuple[str, str]]:
    out = []
    for props in elem.findall("properties"):
        for prop in props.findall("property"):
            out.append(
                (prop.get("name") or "", prop.get("value") if prop.get("value") is not None else (prop.text or ""))
            )
    return out


def _outcome(elem: ElementTree.Element) -> Literal["passed", "failed", "error", "skipped"]:
    tags = {child.tag for child in elem}
    if "error" in tags:
        return "error"
    if "failure" in tags:
        return "failed"
    if "skipped" in tags:
        return "skipped"
    return "passed"  # Surefire's flakyFailure/rerunFailure: passed on a rerun


def _json(body: bytes, name: str) -> Any:
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = body.count(b"\n", 0, exc.start) + 1
        raise EvidenceError(f"{name}:{line}: not UTF-8 text (byte offset {exc.start})") from None
    try:
        return json.loads(text, parse_constant=lambda c: _bad_constant(c, name))
    except json.JSONDecodeError as exc:
        raise EvidenceError(f"{name}:{exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno})") from None
    except RecursionError:
        raise EvidenceError(f"{name}:1: nested too deeply") from None


def _bad_constant(constant: str, name: str) -> Any:
    raise EvidenceError(f"{name}: {constant} is not a number a metric may have")


CTRF_STATUS = {"passed": "passed", "failed": "failed", "skipped": "skipped", "pending": "skipped", "other": "error"}


def parse_ctrf(body: bytes, name: str) -> ResultsEvidence:
    """CTRF test JSON (``{"results": {"tool", "summary", "tests": [...]}}``); a test's suite is its ``suite``
    (else the tool's name), its requirements ``extra.requirements`` (a list or a comma-separated string)."""
    data = _json(body, name)
    results_data = data.get("results") if isinstance(data, dict) else None
    if not isinstance(results_data, dict) or not isinstance(results_data.get("tests"), list):
        raise EvidenceError(f"{name}: results.tests: missing (not a CTRF report)")
    tool = (results_data.get("tool") or {}).get("name") or "ctrf"
    summary = results_data.get("summary") or {}
    produced = parse_time(summary.get("start"), f"{name}: results.summary.start")
    results: list[CaseResult] = []
    by_suite: dict[str, SuiteTotals] = {}
    for index, test in enumerate(results_data["tests"]):
        where = f"{name}: results.tests[{index}]"
        if not isinstance(test, dict) or not isinstance(test.get("name"), str):
            raise EvidenceError(f"{where}.name: missing")
        status = CTRF_STATUS.get(test.get("status"))
        if status is None:
            raise EvidenceError(
                f"{where}.status: {test.get('status')!r} is not a CTRF status (allowed: {', '.join(CTRF_STATUS)})"
            )
        suite = test.get("suite") or tool
        if isinstance(suite, list):
            suite = " > ".join(map(str, suite))
        extra = test.get("extra") or {}
        reqs = extra.get("requirements") if isinstance(extra, dict) else None
        requirements = _requirements_from(reqs if isinstance(reqs, list) else [reqs] if isinstance(reqs, str) else [])
        duration = float(test.get("duration") or 0) / 1000
        results.append(CaseResult(str(suite), "", test["name"], status, duration, requirements, name))
        total = by_suite.setdefault(str(suite), SuiteTotals(str(suite), name))
        total.tests += 1
        total.time += duration
        _count(total, status)
    return ResultsEvidence(name, "ctrf", produced, results, list(by_suite.values()))


def parse_tests(body: bytes, name: str) -> ResultsEvidence:
    """JUnit XML, or CTRF JSON when the file starts with ``{``."""
    if body.lstrip()[:1] == b"{":
        return parse_ctrf(body, name)
    return parse_junit(body, name)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise EvidenceError(f"{where}: {value!r} is not a number")
    return float(value)


def parse_metrics(body: bytes, name: str) -> MetricsEvidence:
    """The metrics JSON of qmsflow, or an MLflow run exported to JSON (``{"run": {"info", "data": {"metrics"}}}``).

    qmsflow's schema (``docs/release-validation.md``)::

        {"produced_at": "2026-12-06T22:10:00Z",
         "metrics": {"accuracy": 0.93},
         "by_group": {"true_positive_rate": {"female": 0.91, "male": 0.93},
                      "count": {"female": 1200, "male": 1300}}}

    ``by_group`` is ``MetricFrame(metrics={..., "count": fairlearn.metrics.count}, ...).by_group.to_dict()``.
    """
    data = _json(body, name)
    if not isinstance(data, dict):
        raise EvidenceError(f"{name}: the metrics file must be a JSON object")
    if isinstance(data.get("run"), dict):
        return _parse_mlflow(data["run"], name)
    unknown = sorted(set(data) - {"produced_at", "metrics", "by_group", "schema", "source"})
    if unknown:
        raise EvidenceError(
            f"{name}: {unknown[0]}: unknown key (allowed: produced_at, metrics, by_group, schema, source)"
        )
    if "produced_at" not in data:
        raise EvidenceError(f"{name}: produced_at: missing (when the metrics were computed, ISO 8601)")
    produced = parse_time(data.get("produced_at"), f"{name}: produced_at")
    metrics_data = data.get("metrics") or {}
    if not isinstance(metrics_data, dict):
        raise EvidenceError(f"{name}: metrics: must be an object of metric names to numbers")
    metrics = {str(k): _number(v, f"{name}: metrics.{k}") for k, v in metrics_data.items()}
    groups_data = data.get("by_group") or {}
    if not isinstance(groups_data, dict):
        raise EvidenceError(f"{name}: by_group: must be an object metric -> group -> value")
    by_group: dict[str, dict[str, float]] = {}
    for metric, groups in groups_data.items():
        if not isinstance(groups, dict):
            raise EvidenceError(f"{name}: by_group.{metric}: must be an object group -> value")
        by_group[str(metric)] = {str(g): _number(v, f"{name}: by_group.{metric}.{g}") for g, v in groups.items()}
    return MetricsEvidence(name, "qmsflow", produced, metrics, by_group)


def _parse_mlflow(run: dict, name: str) -> MetricsEvidence:
    """An MLflow run (``mlflow`` REST ``runs/get`` answer): the latest value of each metric (highest step,
    then latest timestamp); produced at the run's end time (else its start)."""
    info = run.get("info") or {}
    metrics_list = (run.get("data") or {}).get("metrics")
    if not isinstance(metrics_list, list):
        raise EvidenceError(f"{name}: run.data.metrics: missing (not an MLflow run export)")
    latest: dict[str, tuple[int, int, float]] = {}
    for index, item in enumerate(metrics_list):
        where = f"{name}: run.data.metrics[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("key"), str):
            raise EvidenceError(f"{where}.key: missing")
        value = _number(item.get("value"), f"{where}.value")
        rank = (int(item.get("step") or 0), int(item.get("timestamp") or 0), value)
        if item["key"] not in latest or rank[:2] >= latest[item["key"]][:2]:
            latest[item["key"]] = rank
    produced = parse_time(info.get("end_time") or info.get("start_time"), f"{name}: run.info.end_time")
    return MetricsEvidence(name, "mlflow", produced, {k: v[2] for k, v in latest.items()}, {})


# --------------------------------------------------------------------------- evaluation


@dataclass
class Outcome:
    criterion: str
    description: str
    passed: bool
    reason: str
    observed: dict[str, Any] = field(default_factory=dict)
    evidence: list[str] = field(default_factory=list)


@dataclass
class Verdict:
    criteria_version: str
    passed: bool
    outcomes: list[Outcome]
    totals: list[SuiteTotals]
    trace: dict[str, list[dict[str, str]]]
    produced_at: datetime | None
    preregistration: str

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.passed]

    def as_dict(self) -> dict[str, Any]:
        return {
            "criteria_version": self.criteria_version,
            "passed": self.passed,
            "outcomes": [asdict(o) for o in self.outcomes],
            "totals": [asdict(t) for t in self.totals],
            "trace": self.trace,
            "produced_at": self.produced_at.isoformat() if self.produced_at else None,
            "preregistration": self.preregistration,
        }


PREREGISTRATION = "preregistration"


def _matches(suite: str, wanted: str) -> bool:
    return suite == wanted or suite.startswith(wanted + ".") or suite.startswith(wanted + " > ")


def _metric(metrics: list[MetricsEvidence], key: str) -> tuple[float, str] | None:
    for evidence in reversed(metrics):  # a later file wins
        if key in evidence.metrics:
            return evidence.metrics[key], evidence.file
    return None


def _groups(metrics: list[MetricsEvidence], key: str) -> tuple[dict[str, float], dict[str, float], str] | None:
    for evidence in reversed(metrics):
        if key in evidence.by_group:
            return evidence.by_group[key], evidence.by_group.get("count", {}), evidence.file
    return None


def _check(criterion: Criterion, tests: list[ResultsEvidence], metrics: list[MetricsEvidence]) -> Outcome:
    out = Outcome(criterion.id, criterion.describe(), False, "")
    if criterion.type == "metric":
        found = _metric(metrics, criterion.metric)
        if found is None:
            out.reason = f"metric {criterion.metric!r} is missing from the metrics evidence"
            return out
        value, file = found
        out.observed, out.evidence = {criterion.metric: value}, [file]
        if criterion.min is not None and value < criterion.min:
            out.reason = f"{criterion.metric} is {value:g}, below the minimum {criterion.min:g}"
        elif criterion.max is not None and value > criterion.max:
            out.reason = f"{criterion.metric} is {value:g}, above the maximum {criterion.max:g}"
        else:
            out.passed, out.reason = True, f"{criterion.metric} is {value:g}"
        return out
    if criterion.type == "group_gap":
        found = _groups(metrics, criterion.metric)
        if found is None:
            out.reason = f"per-group metric {criterion.metric!r} is missing from the metrics evidence (by_group)"
            return out
        values, counts, file = found
        out.evidence = [file]
        missing = [g for g in criterion.groups if g not in values]
        if missing:
            out.observed = {"groups": values}
            out.reason = f"group(s) {', '.join(map(repr, missing))} missing from by_group.{criterion.metric}"
            return out
        chosen = {g: values[g] for g in criterion.groups}
        out.observed = {"groups": chosen}
        if criterion.min_group_size:
            no_count = [g for g in criterion.groups if g not in counts]
            if no_count:
                out.reason = (
                    f"group size of {', '.join(map(repr, no_count))} unknown (by_group.count), "
                    f"needed for the minimum size {criterion.min_group_size}"
                )
                return out
            out.observed["sizes"] = {g: counts[g] for g in criterion.groups}
            small = [f"{g!r} (n={counts[g]:g})" for g in criterion.groups if counts[g] < criterion.min_group_size]
            if small:
                out.reason = f"group(s) {', '.join(small)} below the minimum size {criterion.min_group_size}"
                return out
        low, high = min(chosen.values()), max(chosen.values())
        difference = high - low
        ratio = (low / high) if high > 0 else (1.0 if low == high else 0.0)
        out.observed.update(difference=round(difference, 12), ratio=round(ratio, 12))
        if criterion.max_difference is not None and difference > criterion.max_difference:
            out.reason = f"largest gap of {criterion.metric} is {difference:.4g}, above {criterion.max_difference:g}"
        elif criterion.min_ratio is not None and ratio < criterion.min_ratio:
            out.reason = f"ratio of {criterion.metric} is {ratio:.4g}, below {criterion.min_ratio:g}"
        else:
            out.passed = True
            out.reason = f"largest gap {difference:.4g}, ratio {ratio:.4g}"
        return out
    results = [r for t in tests for r in t.results]
    if criterion.type == "required_tests":
        missing, failing = [], []
        for wanted in criterion.tests:
            hits = [r for r in results if wanted in (r.full_name, r.name)]
            if not hits:
                missing.append(wanted)
            elif any(r.outcome != "passed" for r in hits):
                failing.append(f"{wanted} ({', '.join(sorted({r.outcome for r in hits if r.outcome != 'passed'}))})")
            out.evidence += sorted({r.file for r in hits} - set(out.evidence))
        if missing:
            out.reason = f"required test(s) not in the evidence: {', '.join(missing)}"
        elif failing:
            out.reason = f"required test(s) not passed: {', '.join(failing)}"
        else:
            out.passed, out.reason = True, f"{len(criterion.tests)} required test(s) passed"
        return out
    missing = [s for s in criterion.suites if not any(_matches(r.suite, s) for r in results)]
    chosen = [r for r in results if any(_matches(r.suite, s) for s in criterion.suites)]
    out.evidence = sorted({r.file for r in chosen})
    if missing:
        out.reason = f"suite(s) with no test in the evidence: {', '.join(missing)}"
        return out
    if criterion.type == "pass_rate":
        passed = sum(r.outcome == "passed" for r in chosen)
        rate = passed / len(chosen)
        out.observed = {"passed": passed, "tests": len(chosen), "rate": round(rate, 6)}
        if rate < criterion.min:
            out.reason = f"pass rate {passed}/{len(chosen)} = {rate:.4g}, below {criterion.min:g}"
        else:
            out.passed, out.reason = True, f"pass rate {passed}/{len(chosen)} = {rate:.4g}"
        return out
    bad = [r for r in chosen if r.outcome in ("failed", "error")]
    out.observed = {"tests": len(chosen), "failed": len(bad)}
    if bad:
        shown = ", ".join(r.full_name for r in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        out.reason = f"{len(bad)} failed test(s): {shown}"
    else:
        out.passed, out.reason = True, f"{len(chosen)} test(s), none failed"
    return out


def evidence_time(tests: list[ResultsEvidence], metrics: list[MetricsEvidence]) -> datetime | None:
    """When the evidence was produced: the earliest time any file states."""
    times = [e.produced_at for e in [*tests, *metrics] if e.produced_at is not None]
    return min(times) if times else None


REQUIREMENT_TRACE = declare(
    "release.requirement_trace",
    "The release validation report lists, for each requirement identifier that a submitted test report "
    "names (a JUnit test case property `requirement`, `requirements`, `req` or `verifies`, or "
    "`extra.requirements` in CTRF), the tests that verify it, their outcomes and the file they came from. "
    "qmsflow holds no list of the requirements themselves, so it cannot show a requirement that no test names.",
    proved_by=(
        "tests/unit/test_release_domain.py::test_all_criteria_met",
        "tests/integration/test_release.py::test_released_after_all_signatures_and_verified",
    ),
    module=__name__,
)


def evaluate(
    settings: ReleaseSettings,
    tests: list[ResultsEvidence],
    metrics: list[MetricsEvidence],
    *,
    registered_at: datetime | None,
    submitted_at: datetime,
) -> Verdict:
    """Judge the evidence against the criteria, fail-closed, after the pre-registration check.

    ``registered_at`` is when this criteria version entered the trail (None: never). Evidence produced
    before it fails the validation (the criteria were changed after the evidence); evidence that states no
    time is taken as produced when it was submitted (said in the report).
    """
    version = criteria_version(settings.criteria)
    outcomes = [_check(c, tests, metrics) for c in settings.criteria]
    produced = evidence_time(tests, metrics)
    undated = [e.file for e in [*tests, *metrics] if e.produced_at is None]
    pre = Outcome(PREREGISTRATION, "criteria version recorded before the evidence was produced", False, "")
    pre.observed = {
        "criteria_version": version,
        "registered_at": registered_at.isoformat() if registered_at else None,
        "evidence_produced_at": produced.isoformat() if produced else None,
        "undated": undated,
    }
    earliest = produced if produced is not None else submitted_at
    if registered_at is None:
        pre.reason = f"criteria version {version[:12]} is not in the trail: run 'qms sync' before producing evidence"
    elif earliest < registered_at:
        dated = [e for e in [*tests, *metrics] if e.produced_at is not None]
        if dated:
            first = min(dated, key=lambda e: e.produced_at)
            pre.evidence, what = [first.file], f"{first.file} at {earliest.isoformat()}"
        else:
            pre.evidence, what = undated, f"undated, submitted at {earliest.isoformat()}"
        pre.reason = (
            f"criteria version {version[:12]} became part of the configuration at {registered_at.isoformat()}, "
            f"after the evidence was produced ({what})"
        )
    else:
        pre.passed = True
        pre.reason = f"criteria version {version[:12]} registered at {registered_at.isoformat()}" + (
            f"; no production time in {', '.join(undated)}: judged by the time of submission" if undated else ""
        )
    outcomes.insert(0, pre)
    trace: dict[str, list[dict[str, str]]] = {}
    for evidence in tests:
        for r in evidence.results:
            for requirement in r.requirements:
                trace.setdefault(requirement, []).append({"test": r.full_name, "outcome": r.outcome, "file": r.file})
    return Verdict(
        criteria_version=version,
        passed=all(o.passed for o in outcomes),
        outcomes=outcomes,
        totals=[t for e in tests for t in e.totals],
        trace=dict(sorted(trace.items())),
        produced_at=produced,
        preregistration=pre.reason,
    )
