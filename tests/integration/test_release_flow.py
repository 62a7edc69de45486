"""The release validation flow in-process against Prefect's test harness, as its deployment runs it: a failed
validation completes at once (CAPA, report); a met one suspends at the signatures, the deciding signature
resumes it through the Prefect API, and the resumed run renders the signed report."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from qmsflow.context import QmsContext, open_context
from qmsflow.services import approvals, release
from qmsflow.services.sync import sync_config
from qmsflow.store import UnitOfWork
from tests.identityutil import sign
from tests.integration.test_flows_in_process import _deployment_run, _execute, _state
from tests.integration.test_release import SYSTEM, evidence, write_criteria


@pytest.fixture(params=["sqlite", "postgresql"])
def world(
    request: pytest.FixtureRequest, repo: Path, prefect_server: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[QmsContext]:
    for var in ("QMS_DATABASE_URL", "SLACK_BOT_TOKEN", "JIRA_API_TOKEN", "JIRA_EMAIL"):
        monkeypatch.delenv(var, raising=False)
    if request.param == "postgresql":
        monkeypatch.setenv("QMS_DATABASE_URL", request.getfixturevalue("pg_schema_url"))
    write_criteria(repo)
    monkeypatch.setenv("QMS_CONFIG", str(repo / "qms.yaml"))
    monkeypatch.setenv("PREFECT_API_URL", prefect_server)
    ctx = open_context(repo / "qms.yaml", migrate=True)
    with UnitOfWork(ctx.db, "qmsflow") as uow:
        sync_config(uow, ctx.config, ctx.root)
    yield ctx
    ctx.close()


def submitted(ctx: QmsContext, **kwargs) -> str:
    tests, metrics = evidence(**kwargs)
    with UnitOfWork(ctx.db, "dev") as uow:
        return release.submit(
            uow, ctx.config, system_id=SYSTEM, version="2.0.0", submitted_by="dev", tests=tests, metrics=metrics
        ).id


def test_failed_validation_completes_with_a_capa_and_its_report(world: QmsContext) -> None:
    from flows.release_validation import release_validation

    parameters = {"release_id": submitted(world, accuracy=0.5)}
    run_id = _deployment_run(release_validation, parameters)
    state = _execute(release_validation, run_id, parameters)
    assert state.is_completed() and _state(run_id) == "COMPLETED"
    outcome = state.result()
    assert outcome["status"] == "failed" and outcome["exit_code"] == 1 and outcome["capa"].startswith("CAPA-")
    html = Path(outcome["html"]).read_text()
    assert "FAILED" in html and "accuracy is 0.5, below the minimum 0.9" in html
    assert Path(outcome["pdf"]).read_bytes().startswith(b"%PDF")


def test_met_validation_waits_for_signatures_then_renders_the_signed_report(world: QmsContext) -> None:
    from flows.release_validation import release_validation

    release_id = submitted(world)
    parameters = {"release_id": release_id}
    run_id = _deployment_run(release_validation, parameters)
    assert _execute(release_validation, run_id, parameters) is None and _state(run_id) == "PAUSED"
    with UnitOfWork(world.db, "qmsflow") as uow:
        request_id = release.summary(uow, release.load(uow, release_id))["request"]
    for person in ("chloe", "ana"):
        with UnitOfWork(world.db, person) as uow:
            result = sign(uow, world.config, request_id, person)
            uow.commit()
    approvals.after_decision(world, result)  # resumes the run, as every signing channel does
    final = _execute(release_validation, run_id, parameters)
    assert final.is_completed() and _state(run_id) == "COMPLETED"
    outcome = final.result()
    assert outcome["status"] == "released" and outcome["exit_code"] == 0
    html = Path(outcome["html"]).read_text()
    assert "Chloe Chen" in html and "Ana Alves" in html
