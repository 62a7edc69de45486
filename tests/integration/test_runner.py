"""The runner of `qms up` serves every deployment with the flow-run limit of qms.yaml."""

from __future__ import annotations

import json
from pathlib import Path

import prefect
import pytest

from deployments import runner


def serve_of(repo: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Run the runner's entry point with Prefect's serve replaced; what it was called with."""
    seen: dict = {}

    def fake_serve(*built, **options) -> None:  # noqa: ANN002, ANN003
        seen.update(options, deployments=[f"{d.flow_name}/{d.name}" for d in built])

    monkeypatch.setattr(prefect, "serve", fake_serve)
    monkeypatch.setenv("QMS_CONFIG", str(repo / "qms.yaml"))
    monkeypatch.setenv("QMS_RUNNER_PID", "0")  # main() sets it for its flow runs: undone after the test
    assert runner.main() == 0
    return seen


def test_the_runner_runs_at_most_max_flow_runs_at_once(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = serve_of(repo, monkeypatch)
    # the scaffold's default; Prefect's serve() alone has no limit: a burst of approvals started one
    # process per run on the machine of the stack
    assert seen["limit"] == 4
    manifest = json.loads((repo / ".qms" / "runner-deployments.json").read_text())
    assert manifest == seen["deployments"] and "document-review/on-demand" in manifest

    text = (repo / "qms.yaml").read_text().replace("  max_flow_runs: 4", "  max_flow_runs: 1")
    (repo / "qms.yaml").write_text(text)
    assert serve_of(repo, monkeypatch)["limit"] == 1


def test_a_bad_limit_stops_the_runner_with_the_line(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (repo / "qms.yaml").read_text().replace("  max_flow_runs: 4", "  max_flow_runs: 500")
    (repo / "qms.yaml").write_text(text)
    monkeypatch.setattr(prefect, "serve", lambda *a, **k: pytest.fail("served with a bad qms.yaml"))
    monkeypatch.setenv("QMS_CONFIG", str(repo / "qms.yaml"))
    assert runner.main() == 2
    number = text.splitlines().index("  max_flow_runs: 500") + 1
    assert f"qms.yaml:{number} stack.max_flow_runs: Input should be less than or equal to 64" in capsys.readouterr().err
