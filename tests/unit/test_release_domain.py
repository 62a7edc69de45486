"""Release validation, the domain: criteria as data in qms.yaml, evidence parsing (three JUnit producers,
CTRF, metrics JSON, MLflow), fail-closed evaluation and pre-registration."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from qmsflow.domain.release import (
    Criterion,
    EvidenceError,
    ReleaseSettings,
    criteria_version,
    evaluate,
    parse_ctrf,
    parse_junit,
    parse_metrics,
    parse_tests,
)
from qmsflow.scaffold import environment
from qmsflow.settings import ConfigError, parse_config

DATA = Path(__file__).parent.parent / "data" / "release"
REGISTERED = datetime(2026, 12, 6, 21, 0, tzinfo=UTC)
SUBMITTED = datetime(2026, 12, 6, 23, 0, tzinfo=UTC)


def read(name: str) -> bytes:
    return (DATA / name).read_bytes()


def settings(*criteria: dict) -> ReleaseSettings:
    return ReleaseSettings(signers=["ana"], criteria=[Criterion(**c) for c in criteria])


def outcome(verdict, criterion_id: str):
    return next(o for o in verdict.outcomes if o.criterion == criterion_id)


def judge(release: ReleaseSettings, tests=(), metrics=(), registered=REGISTERED):
    return evaluate(release, list(tests), list(metrics), registered_at=registered, submitted_at=SUBMITTED)


# ------------------------------------------------------------------ JUnit from three producers


def test_pytest_junit_results_properties_and_timestamp():
    report = parse_junit(read("pytest.xml"), "pytest.xml")
    assert [r.outcome for r in report.results] == ["passed", "passed", "failed", "skipped"]
    assert report.results[1].requirements == ["REQ-ROB-1", "REQ-ROB-2"]
    assert report.produced_at == datetime(2026, 12, 6, 22, 0, 0, 123456, tzinfo=UTC)
    (total,) = report.totals
    assert (total.suite, total.tests, total.passed, total.failed, total.skipped) == ("robustness", 4, 2, 1, 1)


def test_surefire_junit_single_suite_root_and_flaky_rerun():
    report = parse_junit(read("surefire.xml"), "surefire.xml")
    assert report.produced_at is None  # Surefire writes no timestamp
    assert [r.full_name for r in report.results] == [
        "security.AuthTest.rejectsExpiredToken",
        "security.AuthTest.rejectsSqlInjection",
        "security.AuthTest.retriesFlakyLogin",
    ]
    assert all(r.outcome == "passed" for r in report.results)  # a flaky failure passed on its rerun
    assert report.results[1].requirements == ["REQ-SEC-4"]
    assert report.totals[0].suite == "security.AuthTest"


def test_jest_junit_suites_and_naive_timestamps_are_utc():
    report = parse_junit(read("jest-junit.xml"), "jest-junit.xml")
    assert [t.suite for t in report.totals] == ["unit.ui", "unit.api"]
    assert [t.tests for t in report.totals] == [2, 1]
    assert report.produced_at == datetime(2026, 12, 6, 22, 5, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    "body, message",
    [
        (b'<testsuites>\n<testsuite name="a">\n<testcase name="x">\n</testsuite>', "bad.xml:4: not well-formed XML"),
        (b"", "bad.xml:1: not well-formed XML"),
        (b"<html><body/></html>", "bad.xml:1: the root element is <html>"),
        (b'<?xml version="1.0"?>\n<!DOCTYPE x [<!ENTITY a "aaaa">]>\n<testsuites/>', "bad.xml:2: DOCTYPE declarations"),
        (b"<testsuites>\n\xff</testsuites>", "bad.xml:2: not UTF-8"),
        (b'<testsuite name="s"><testcase name="t" time="soon"/></testsuite>', "testcase 't' time 'soon'"),
        (b'<testsuite name="s" timestamp="yesterday"><testcase name="t"/></testsuite>', "timestamp: 'yesterday'"),
    ],
)
def test_malformed_junit_names_file_and_line(body: bytes, message: str):
    with pytest.raises(EvidenceError) as caught:
        parse_junit(body, "bad.xml")
    assert message in str(caught.value)


# ------------------------------------------------------------------ CTRF, metrics JSON, MLflow


def test_ctrf_is_detected_and_parsed():
    report = parse_tests(read("ctrf.json"), "ctrf.json")
    assert report.format == "ctrf"
    assert [(r.name, r.outcome) for r in report.results] == [("login works", "passed"), ("export works", "failed")]
    assert report.results[0].requirements == ["REQ-UI-1"]
    assert report.produced_at == datetime(2026, 12, 6, 22, 0, tzinfo=UTC)


def test_ctrf_unknown_status_is_named():
    with pytest.raises(EvidenceError, match=r"c.json: results.tests\[0\].status: 'green' is not a CTRF status"):
        parse_ctrf(b'{"results": {"tests": [{"name": "a", "status": "green"}]}}', "c.json")


def test_metrics_json_by_group_in_fairlearn_shape():
    metrics = parse_metrics(read("metrics.json"), "metrics.json")
    assert metrics.metrics == {"accuracy": 0.931, "auc": 0.97}
    assert metrics.by_group["true_positive_rate"]["male"] == 0.93
    assert metrics.by_group["count"]["non-binary"] == 140
    assert metrics.produced_at == datetime(2026, 12, 6, 22, 10, tzinfo=UTC)


def test_mlflow_run_export_takes_the_latest_step():
    metrics = parse_metrics(read("mlflow-run.json"), "run.json")
    assert metrics.format == "mlflow"
    assert metrics.metrics == {"accuracy": 0.94, "auc": 0.96}
    assert metrics.produced_at == datetime(2026, 12, 6, 21, 58, 20, tzinfo=UTC)  # run.info.end_time


@pytest.mark.parametrize(
    "body, message",
    [
        (b'{"produced_at": "2026-12-06T00:00:00Z",\n "metrics": {"accuracy": }}', "m.json:2: not valid JSON"),
        (b'{"metrics": {"accuracy": 0.9}}', "m.json: produced_at: missing"),
        (
            b'{"produced_at": "2026-12-06", "metrics": {"accuracy": "high"}}',
            "m.json: metrics.accuracy: 'high' is not a number",
        ),
        (b'{"produced_at": "2026-12-06", "metrics": {"accuracy": NaN}}', "NaN is not a number"),
        (b'{"produced_at": "2026-12-06", "by_group": {"tpr": [0.9]}}', "m.json: by_group.tpr: must be an object"),
        (b'{"produced_at": "2026-12-06", "metrix": {}}', "m.json: metrix: unknown key"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"run": {"data": {}}}', "run.data.metrics: missing"),
    ],
)
def test_malformed_metrics_are_named(body: bytes, message: str):
    with pytest.raises(EvidenceError) as caught:
        parse_metrics(body, "m.json")
    assert message in str(caught.value)


# ------------------------------------------------------------------ evaluation, fail-closed


METRICS = parse_metrics(read("metrics.json"), "metrics.json")
PYTEST = parse_junit(read("pytest.xml"), "pytest.xml")
SUREFIRE = parse_junit(read("surefire.xml"), "surefire.xml")
JEST = parse_junit(read("jest-junit.xml"), "jest-junit.xml")


def test_all_criteria_met():
    release = settings(
        {"id": "accuracy", "type": "metric", "metric": "accuracy", "min": 0.9},
        {
            "id": "tpr-gap",
            "type": "group_gap",
            "metric": "true_positive_rate",
            "groups": ["female", "male"],
            "max_difference": 0.05,
            "min_group_size": 100,
        },
        {"id": "security", "type": "required_tests", "tests": ["security.AuthTest.rejectsSqlInjection"]},
        {"id": "unit", "type": "no_failures", "suites": ["unit"]},
        {"id": "robust", "type": "pass_rate", "suites": ["robustness"], "min": 0.5},
    )
    verdict = judge(release, [PYTEST, SUREFIRE, JEST], [METRICS])
    assert verdict.passed, [o.reason for o in verdict.failed]
    assert outcome(verdict, "tpr-gap").observed["difference"] == pytest.approx(0.02)
    assert verdict.trace["REQ-ROB-1"] == [
        {"test": "tests.test_robustness.test_noise_tolerance", "outcome": "passed", "file": "pytest.xml"},
        {"test": "tests.test_robustness.test_occlusion", "outcome": "passed", "file": "pytest.xml"},
    ]
    assert {t.suite for t in verdict.totals} == {"robustness", "security.AuthTest", "unit.ui", "unit.api"}


@pytest.mark.parametrize(
    "criterion, reason",
    [
        ({"type": "metric", "metric": "accuracy", "min": 0.95}, "accuracy is 0.931, below the minimum 0.95"),
        ({"type": "metric", "metric": "f1", "min": 0.5}, "metric 'f1' is missing"),
        ({"type": "metric", "metric": "auc", "max": 0.9}, "above the maximum 0.9"),
        (
            {
                "type": "group_gap",
                "metric": "true_positive_rate",
                "groups": ["female", "male", "other"],
                "max_difference": 0.1,
            },
            "group(s) 'other' missing",
        ),
        (
            {
                "type": "group_gap",
                "metric": "true_positive_rate",
                "groups": ["female", "non-binary"],
                "max_difference": 0.1,
                "min_group_size": 500,
            },
            "group(s) 'non-binary' (n=140) below the minimum size 500",
        ),
        (
            {"type": "group_gap", "metric": "false_positive_rate", "groups": ["a", "b"], "max_difference": 0.1},
            "per-group metric 'false_positive_rate' is missing",
        ),
        (
            {
                "type": "group_gap",
                "metric": "true_positive_rate",
                "groups": ["female", "male", "non-binary"],
                "max_difference": 0.01,
            },
            "largest gap of true_positive_rate is 0.03, above 0.01",
        ),
        (
            {"type": "group_gap", "metric": "true_positive_rate", "groups": ["female", "male"], "min_ratio": 0.99},
            "ratio of true_positive_rate is 0.9785, below 0.99",
        ),
        ({"type": "pass_rate", "suites": ["robustness"], "min": 0.9}, "pass rate 2/4 = 0.5, below 0.9"),
        ({"type": "pass_rate", "suites": ["fairness"], "min": 0.9}, "suite(s) with no test in the evidence: fairness"),
        (
            {"type": "no_failures", "suites": ["robustness"]},
            "1 failed test(s): tests.test_robustness.test_adversarial_patch",
        ),
        (
            {"type": "required_tests", "tests": ["security.AuthTest.rejectsXss"]},
            "not in the evidence: security.AuthTest.rejectsXss",
        ),
        ({"type": "required_tests", "tests": ["test_gpu_only"]}, "not passed: test_gpu_only (skipped)"),
    ],
)
def test_failed_criteria_are_named(criterion: dict, reason: str):
    verdict = judge(settings({"id": "c", **criterion}), [PYTEST, SUREFIRE], [METRICS])
    assert not verdict.passed
    assert [o.criterion for o in verdict.failed] == ["c"]
    assert reason in outcome(verdict, "c").reason


def test_group_size_unknown_fails():
    metrics = parse_metrics(b'{"produced_at": "2026-12-06T22:00:00Z", "by_group": {"tpr": {"a": 0.9, "b": 0.9}}}', "m")
    verdict = judge(
        settings(
            {
                "id": "g",
                "type": "group_gap",
                "metric": "tpr",
                "groups": ["a", "b"],
                "max_difference": 0.1,
                "min_group_size": 10,
            }
        ),
        metrics=[metrics],
    )
    assert "group size of 'a', 'b' unknown" in outcome(verdict, "g").reason


def test_no_evidence_at_all_fails_every_criterion():
    verdict = judge(
        settings(
            {"id": "a", "type": "metric", "metric": "accuracy", "min": 0.1},
            {"id": "u", "type": "no_failures", "suites": ["unit"]},
        )
    )
    assert [o.criterion for o in verdict.failed] == ["a", "u"]


# ------------------------------------------------------------------ pre-registration


ACCURACY = settings({"id": "accuracy", "type": "metric", "metric": "accuracy", "min": 0.9})


def test_criteria_not_in_the_trail_fail():
    verdict = judge(ACCURACY, metrics=[METRICS], registered=None)
    assert not verdict.passed
    assert "is not in the trail" in outcome(verdict, "preregistration").reason


def test_criteria_registered_after_the_evidence_fail_named():
    verdict = judge(ACCURACY, [PYTEST], [METRICS], registered=datetime(2026, 12, 6, 22, 5, tzinfo=UTC))
    assert [o.criterion for o in verdict.failed] == ["preregistration"]
    reason = outcome(verdict, "preregistration").reason
    assert "after the evidence was produced (pytest.xml at 2026-12-06T22:00:00.123456+00:00)" in reason
    assert outcome(verdict, "accuracy").passed  # the metric itself met its criterion


def test_undated_evidence_is_judged_by_its_submission_time():
    verdict = judge(ACCURACY, [SUREFIRE], [METRICS])
    assert verdict.passed
    assert "no production time in surefire.xml" in outcome(verdict, "preregistration").reason
    late = judge(ACCURACY, [SUREFIRE], [], registered=datetime(2026, 12, 7, tzinfo=UTC))
    assert not outcome(late, "preregistration").passed


def test_criteria_version_changes_with_any_threshold():
    one = criteria_version(ACCURACY.criteria)
    assert one == criteria_version(
        settings({"id": "accuracy", "type": "metric", "metric": "accuracy", "min": 0.9}).criteria
    )
    assert one != criteria_version(
        settings({"id": "accuracy", "type": "metric", "metric": "accuracy", "min": 0.91}).criteria
    )
    assert len(one) == 64


# ------------------------------------------------------------------ criteria in qms.yaml

SAMPLE = environment().get_template("scaffold/qms.yaml.j2").render(org_name="Test AI GmbH")
RELEASE = """    release:
      signers: [chloe, role:quality-lead]
      criteria:
        - id: accuracy
          type: metric
          metric: accuracy
          min: 0.9
        - id: tpr-gap
          type: group_gap
          metric: true_positive_rate
          groups: [female, male]
          max_difference: 0.05
"""


def with_release(block: str) -> str:
    anchor = "    placed_on_market: 2026-09-01\n"
    assert anchor in SAMPLE
    return SAMPLE.replace(anchor, anchor + block, 1)


def test_release_criteria_in_qms_yaml():
    loaded = parse_config(with_release(RELEASE), Path("/repo/qms.yaml"))
    system = loaded.config.system("triage-assist")
    assert [c.id for c in system.release.criteria] == ["accuracy", "tpr-gap"]
    assert [p.id for p in loaded.config.release_signers("triage-assist")] == ["chloe", "ana"]


@pytest.mark.parametrize(
    "old, new, field, message",
    [
        (
            "          min: 0.9\n",
            "          max_difference: 0.9\n",
            "systems[0].release.criteria[0]",
            "'max_difference' has no meaning for a 'metric' criterion",
        ),
        (
            "          max_difference: 0.05\n",
            "",
            "systems[0].release.criteria[1]",
            "needs 'max_difference' or 'min_ratio'",
        ),
        ("          type: metric\n", "          type: metrik\n", "systems[0].release.criteria[0].type", "metric"),
        (
            "signers: [chloe, role:quality-lead]",
            "signers: [chloe, zoe]",
            "systems[0].release.signers[1]",
            "'zoe' is not a person",
        ),
        (
            "        - id: tpr-gap\n",
            "        - id: accuracy\n",
            "systems[0].release.criteria[1].id",
            "'accuracy' is declared twice",
        ),
        (
            "      criteria:\n",
            "      process: releases\n      criteria:\n",
            "systems[0].release.process",
            "'releases' is not a QMS process",
        ),
    ],
)
def test_wrong_criteria_name_file_line_field(old: str, new: str, field: str, message: str):
    text = with_release(RELEASE.replace(old, new))
    with pytest.raises(ConfigError) as caught:
        parse_config(text, Path("/repo/qms.yaml"))
    issues = [i for i in caught.value.issues if i.field.startswith(field)]
    assert issues, [str(i) for i in caught.value.issues]
    assert message in issues[0].message
    assert issues[0].file == "qms.yaml" and issues[0].line > 1
    assert str(issues[0]).startswith(f"qms.yaml:{issues[0].line} {issues[0].field}")
