"""`qms deploy` without a Prefect server: what it would register, and its refusals (tests/e2e/test_topology.py
registers against a real one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qmsflow.cli.main import run
from qmsflow.settings import load_config


@pytest.fixture
def qms(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    for name in ("QMS_DATABASE_URL", "QMS_CONFIG", "PREFECT_API_URL", "JIRA_URL", "SLACK_BOT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "200")

    def call(*args: str) -> tuple[int, str, str]:
        code = run(list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return call


def test_deploy_is_a_qms_command_from_the_deployments_plugin(qms) -> None:  # noqa: ANN001
    code, out, _ = qms("--help")
    assert code == 0 and "deploy" in out
    code, out, _ = qms("deploy", "--help")
    assert code == 0 and "--pool" in out and "--limit" in out


def test_deploy_needs_a_prefect_api_url(qms, repo: Path) -> None:  # noqa: ANN001
    code, out, err = qms("deploy", "-c", str(repo / "qms.yaml"))
    assert code == 2 and "set PREFECT_API_URL" in err and "Traceback" not in out + err


@pytest.mark.parametrize("limit", ["document-review/on-demand", "=3", "capa-escalation/daily=-1", "x=1001"])
def test_a_malformed_limit_is_refused(qms, repo: Path, monkeypatch: pytest.MonkeyPatch, limit: str) -> None:  # noqa: ANN001
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    code, _, err = qms("deploy", "-c", str(repo / "qms.yaml"), "--limit", limit)
    assert code == 2 and "give FLOW/DEPLOYMENT=N" in err, err


def test_an_unreachable_api_is_one_clear_error(qms, repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    monkeypatch.setenv("PREFECT_CLIENT_MAX_RETRIES", "0")
    code, out, err = qms("deploy", "-c", str(repo / "qms.yaml"))
    assert code == 1 and "http://127.0.0.1:9/api" in err and "Traceback" not in out + err, err


def test_plan_takes_schedules_from_qms_yaml_and_limits_per_procedure(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deployments.topology import TopologyError, full_name, plan

    for name in ("JIRA_URL", "JIRA_EMAIL", "JIRA_API_TOKEN", "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"):
        monkeypatch.delenv(name, raising=False)
    config = repo / "qms.yaml"
    text = config.read_text()
    assert "  - key: capa\n" in text
    config.write_text(text.replace("    schedule: daily\n", "    schedule: '15 5 * * *'\n", 1))
    planned = {full_name(spec): (cron, limit) for spec, cron, limit in plan(load_config(config).config)}
    assert planned["capa-escalation/daily"] == ("15 5 * * *", 1)  # the capa process's schedule in qms.yaml
    assert planned["document-review/on-demand"] == (None, None)  # reviews: on demand, no limit
    assert planned["jira-sync/every-minute"] == (None, 1)  # Jira off: no schedule
    assert planned["trail-anchor/hourly"] == ("41 * * * *", 1)
    assert planned["release-validation/on-demand"] == (None, None)  # validations: on demand, no limit
    assert planned["internal-audit/on-demand"] == (None, None)  # one run per audit, no limit
    assert planned["audit-scan/daily"] == ("45 6 * * *", 1)
    assert planned["management-review-quarterly/quarterly"] == ("0 7 1-7 1,4,7,10 *", 1)  # the first working day
    assert len(planned) == 12
    overridden = {
        full_name(spec): limit
        for spec, _, limit in plan(
            load_config(config).config, {"document-review/on-demand": 20, "trail-anchor/hourly": 0}
        )
    }
    assert overridden["document-review/on-demand"] == 20 and overridden["trail-anchor/hourly"] is None
    with pytest.raises(TopologyError, match="no deployment named nope/x"):
        plan(load_config(config).config, {"nope/x": 1})
