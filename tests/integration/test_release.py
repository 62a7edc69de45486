"""Release validation on a real store (SQLite and PostgreSQL): pre-registration at sync, submission, the
verdict and its exit code, the CAPA of a failed validation, the block and its signed override, the report
and its signatures verified by ``qms verify``."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from qmsflow.context import QmsContext, open_context
from qmsflow.domain.errors import DomainError
from qmsflow.domain.release import EvidenceError
from qmsflow.scaffold import scaffold
from qmsflow.services import capa, release, verify
from qmsflow.services.sync import sync_config
from qmsflow.store import UnitOfWork
from qmsflow.store.tables import RecordRow, TrailEventRow
from tests.identityutil import sign

DATA = Path(__file__).parent.parent / "data" / "release"
SYSTEM = "triage-assist"
RELEASE_BLOCK = """    release:
      signers: [chloe, role:quality-lead]
      criteria:
        - id: accuracy
          type: metric
          metric: accuracy
          min: {min_accuracy}
        - id: tpr-gap
          type: group_gap
          metric: true_positive_rate
          groups: [female, male]
          max_difference: 0.05
          min_group_size: 100
        - id: security
          type: required_tests
          tests: [security.AuthTest.rejectsSqlInjection]
        - id: unit
          type: no_failures
          suites: [unit]
"""


def write_criteria(repo: Path, min_accuracy: float = 0.9) -> None:
    path = repo / "qms.yaml"
    text = path.read_text()
    anchor = "    placed_on_market: 2026-09-01\n"
    start = text.index(anchor) + len(anchor)
    end = text.find("  - id: credit-score", start)
    path.write_text(text[:start] + RELEASE_BLOCK.format(min_accuracy=min_accuracy) + text[end:])


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    target = tmp_path / "repo"
    scaffold(target, org_name="Test AI GmbH", git=False)
    write_criteria(target)
    return target


def now_iso(delta: float = 1.0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=delta)).isoformat()


def evidence(accuracy: float = 0.931, jest_failure: bool = False, delta: float = 1.0) -> tuple[list, list]:
    """The three producers' reports and a metrics file, dated now (after the criteria were registered)."""
    stamp = now_iso(delta)
    jest = re.sub(r'timestamp="[^"]*"', f'timestamp="{stamp[:19]}"', (DATA / "jest-junit.xml").read_text())
    if jest_failure:
        jest = jest.replace(
            '<testcase classname="api returns 400 on bad input" name="api returns 400 on bad input" time="0.2">',
            '<testcase classname="api returns 400 on bad input" name="api returns 400 on bad input" time="0.2">'
            '<failure message="expected 400">got 500</failure>',
        )
    pytest_xml = (DATA / "pytest.xml").read_text().replace("2026-12-06T22:00:00.123456+00:00", stamp)
    metrics = (
        (DATA / "metrics.json")
        .read_text()
        .replace("2026-12-06T22:10:00Z", stamp)
        .replace('"accuracy": 0.931', f'"accuracy": {accuracy}')
    )
    tests = [
        ("pytest.xml", pytest_xml.encode()),
        ("surefire.xml", (DATA / "surefire.xml").read_bytes()),
        ("jest.xml", jest.encode()),
    ]
    return tests, [("metrics.json", metrics.encode())]


def submit(ctx: QmsContext, **kwargs) -> str:
    tests, metrics = evidence(**kwargs)
    with UnitOfWork(ctx.db, "dev") as uow:
        row = release.submit(
            uow,
            ctx.config,
            system_id=SYSTEM,
            version="1.4.0",
            submitted_by="dev",
            tests=tests,
            metrics=metrics,
            artifacts=[{"name": "model.onnx", "sha256": "ab" * 32, "size": 1234}],
        )
        return row.id


def evaluate(ctx: QmsContext, release_id: str) -> dict:
    with UnitOfWork(ctx.db, "qmsflow") as uow:
        return release.evaluate_release(uow, ctx.config, release_id, None)


def status(ctx: QmsContext) -> dict:
    with UnitOfWork(ctx.db, "qmsflow") as uow:
        return release.summary(uow, release.latest(uow, SYSTEM, "1.4.0"))


def sign_as(ctx: QmsContext, request_id: str, person: str, decision: str = "approve", comment: str | None = None):
    with UnitOfWork(ctx.db, person) as uow:
        result = sign(uow, ctx.config, request_id, person, decision, comment)
        uow.commit()
        return result


def test_sync_registers_the_criteria_version_once(synced_ctx: QmsContext):
    with synced_ctx.db.read() as session:
        events = session.scalars(
            select(TrailEventRow).where(TrailEventRow.record == release.criteria_ref(SYSTEM))
        ).all()
    assert [e.action for e in events] == ["release.criteria"]
    with UnitOfWork(synced_ctx.db, "qmsflow") as uow:
        assert not sync_config(uow, synced_ctx.config, synced_ctx.root)  # unchanged: nothing recorded
        version = release.criteria_version(synced_ctx.config.system(SYSTEM).release.criteria)
        assert release.registered_at(uow, SYSTEM, version) is not None


def test_released_after_all_signatures_and_verified(synced_ctx: QmsContext):
    release_id = submit(synced_ctx)
    outcome = evaluate(synced_ctx, release_id)
    assert (outcome["status"], outcome["exit_code"], outcome["failed"]) == ("awaiting-signature", 2, [])
    assert evaluate(synced_ctx, release_id) == outcome  # idempotent
    sign_as(synced_ctx, outcome["request"], "chloe")
    assert status(synced_ctx)["exit_code"] == 2  # ana (quality lead) still has to sign
    sign_as(synced_ctx, outcome["request"], "ana")
    assert status(synced_ctx)["status"] == "released" and status(synced_ctx)["exit_code"] == 0

    with UnitOfWork(synced_ctx.db, "qmsflow") as uow:
        rendered = release.render_report(uow, synced_ctx.config, synced_ctx.loaded.state_dir / "rendered", release_id)
    html = Path(rendered["html"]).read_text()
    assert "Chloe Chen" in html and "Ana Alves" in html and "REQ-SEC-4" in html and "model.onnx" in html
    assert Path(rendered["pdf"]).read_bytes().startswith(b"%PDF")
    result = verify.verify(synced_ctx.db, None)
    assert result.ok, result.problem


def test_failed_criteria_open_a_linked_capa(synced_ctx: QmsContext):
    release_id = submit(synced_ctx, accuracy=0.85, jest_failure=True)
    outcome = evaluate(synced_ctx, release_id)
    assert (outcome["status"], outcome["exit_code"]) == ("failed", 1)
    assert outcome["failed"] == [
        "accuracy: accuracy is 0.85, below the minimum 0.9",
        "unit: 1 failed test(s): api returns 400 on bad input.api returns 400 on bad input",
    ]
    with synced_ctx.db.read() as session:
        capa_row = session.get(RecordRow, outcome["capa"])
        release_row = session.get(RecordRow, release_id)
    assert capa_row.kind == "capa" and capa_row.data["source"] == "release" and capa_row.systems == [SYSTEM]
    assert f"record:{release_id}" in capa_row.links and f"record:{capa_row.id}" in release_row.links
    assert "accuracy: accuracy is 0.85" in capa_row.data["description"]
    assert evaluate(synced_ctx, release_id)["capa"] == capa_row.id  # idempotent: one CAPA


def test_rejected_by_a_signer(synced_ctx: QmsContext):
    outcome = evaluate(synced_ctx, submit(synced_ctx))
    sign_as(synced_ctx, outcome["request"], "chloe", "reject", "robustness suite too small")
    assert (status(synced_ctx)["status"], status(synced_ctx)["exit_code"]) == ("rejected", 3)


def test_blocked_by_a_major_capa_until_a_signed_override(synced_ctx: QmsContext):
    with UnitOfWork(synced_ctx.db, "ana") as uow:
        blocker = capa.open_capa(
            uow,
            synced_ctx.config,
            title="Bias found in production",
            source="pms",
            owner="dev",
            severity="high",
            systems=[SYSTEM],
        ).id
    with UnitOfWork(synced_ctx.db, "ana") as uow:  # a minor CAPA does not block
        capa.open_capa(
            uow, synced_ctx.config, title="Typo", source="other", owner="dev", severity="low", systems=[SYSTEM]
        )
    outcome = evaluate(synced_ctx, submit(synced_ctx))
    assert (outcome["status"], outcome["exit_code"], outcome["blocked_by"]) == ("blocked", 4, [blocker])
    assert outcome["request"] is None and outcome["override_request"]

    with pytest.raises(DomainError, match="needs a justification"):
        sign_as(synced_ctx, outcome["override_request"], "ana")
    assert status(synced_ctx)["status"] == "blocked"  # the refused signature changed nothing

    sign_as(
        synced_ctx, outcome["override_request"], "ana", comment="Bias limited to a retired feature; fix ships in 1.4.1"
    )
    after = status(synced_ctx)
    assert (after["status"], after["exit_code"]) == ("awaiting-signature", 2)
    with synced_ctx.db.read() as session:
        deviation = session.get(RecordRow, after["deviation"])
    assert deviation.kind == "deviation" and deviation.data["signed_by"] == "ana"
    assert deviation.data["justification"].startswith("Bias limited") and deviation.process == "qms-governance"
    sign_as(synced_ctx, after["request"], "chloe")
    sign_as(synced_ctx, after["request"], "ana")
    assert status(synced_ctx)["exit_code"] == 0
    with UnitOfWork(synced_ctx.db, "qmsflow") as uow:
        html = Path(
            release.render_report(uow, synced_ctx.config, synced_ctx.loaded.state_dir / "r", after["id"])["html"]
        ).read_text()
    assert "Override of the block" in html and "retired feature" in html


def test_override_declined_stays_blocked(synced_ctx: QmsContext):
    with UnitOfWork(synced_ctx.db, "ana") as uow:
        capa.open_capa(
            uow, synced_ctx.config, title="Bias", source="pms", owner="dev", severity="critical", systems=[SYSTEM]
        )
    outcome = evaluate(synced_ctx, submit(synced_ctx))
    sign_as(synced_ctx, outcome["override_request"], "ana", "reject", "no: fix it first")
    assert status(synced_ctx)["exit_code"] == 4


def test_criteria_changed_after_the_evidence_fail(synced_ctx: QmsContext, repo: Path):
    tests, metrics = evidence(delta=-0.5)  # produced under the criteria registered at sync
    write_criteria(repo, min_accuracy=0.8)  # the criteria loosened afterwards, and synced
    ctx = open_context(repo / "qms.yaml")
    try:
        with UnitOfWork(ctx.db, "qmsflow") as uow:
            sync_config(uow, ctx.config, ctx.root, register_drafts=False)
        with UnitOfWork(ctx.db, "dev") as uow:
            release_id = release.submit(
                uow, ctx.config, system_id=SYSTEM, version="1.4.0", submitted_by="dev", tests=tests, metrics=metrics
            ).id
        outcome = evaluate(ctx, release_id)
    finally:
        ctx.close()
    assert outcome["exit_code"] == 1
    assert outcome["failed"][0].startswith("preregistration: criteria version")
    assert "after the evidence was produced (jest.xml at" in outcome["failed"][0]  # the earliest file


def test_malformed_evidence_refused_and_recorded(synced_ctx: QmsContext):
    bad = b'<testsuites>\n<testsuite name="unit">\n<testcase name="a">\n</testsuite>\n'
    with UnitOfWork(synced_ctx.db, "dev") as uow:
        with pytest.raises(EvidenceError, match=r"broken.xml:4: not well-formed XML") as caught:
            release.submit(
                uow,
                synced_ctx.config,
                system_id=SYSTEM,
                version="1.4.0",
                submitted_by="dev",
                tests=[("broken.xml", bad)],
                metrics=[],
            )
        release.refuse(uow, SYSTEM, "1.4.0", caught.value)
    with UnitOfWork(synced_ctx.db, "dev") as uow:
        with pytest.raises(EvidenceError, match=r"m.json: produced_at: missing"):
            release.submit(
                uow,
                synced_ctx.config,
                system_id=SYSTEM,
                version="1.4.0",
                submitted_by="dev",
                tests=[],
                metrics=[("m.json", b'{"metrics": {}}')],
            )
    with synced_ctx.db.read() as session:
        refused = session.scalars(select(TrailEventRow).where(TrailEventRow.action == "release.refused")).all()
        releases = session.scalars(select(RecordRow).where(RecordRow.kind == "release")).all()
    assert len(refused) == 1 and "broken.xml:4" in refused[0].canonical
    assert releases == []


def test_unknown_system_and_system_without_criteria_are_refused(synced_ctx: QmsContext):
    tests, metrics = evidence()
    with UnitOfWork(synced_ctx.db, "dev") as uow:
        with pytest.raises(DomainError, match="'nope' is not an AI system"):
            release.submit(
                uow, synced_ctx.config, system_id="nope", version="1", submitted_by="dev", tests=tests, metrics=[]
            )
        with pytest.raises(DomainError, match="'credit-score' has no release criteria"):
            release.submit(
                uow,
                synced_ctx.config,
                system_id="credit-score",
                version="1",
                submitted_by="dev",
                tests=tests,
                metrics=[],
            )
        with pytest.raises(DomainError, match="version '1 0'"):
            release.submit(
                uow, synced_ctx.config, system_id=SYSTEM, version="1 0", submitted_by="dev", tests=tests, metrics=[]
            )


# ------------------------------------------------------------------ qms release validate / status


@pytest.fixture
def qms(synced_ctx: QmsContext, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # noqa: ANN201
    """`qms` in-process as dev (a personal token), with a Prefect whose run of the validation flow performs its
    first step (the judgement) at once, as the runner would; `signers` sign right after it when given."""
    from qmsflow.adapters import prefect_api
    from qmsflow.cli.main import run
    from tests.identityutil import token

    monkeypatch.setenv("QMS_TOKEN", token(synced_ctx.db, "dev", person="dev"))
    monkeypatch.setenv("COLUMNS", "200")
    started: list[tuple[str, dict]] = []
    then_sign: list[tuple[str, str]] = []

    def start_run(endpoint, deployment, parameters, idempotency_key=None):  # noqa: ANN001, ANN202
        started.append((deployment, parameters))
        outcome = evaluate(synced_ctx, parameters["release_id"])
        for person, decision in then_sign:
            sign_as(synced_ctx, outcome["request"], person, decision, "signed from the test")
        return "run-1"

    monkeypatch.setattr(prefect_api, "locate", lambda state_dir: "http://prefect.test/api")
    monkeypatch.setattr(prefect_api, "start_run", start_run)

    def call(*args: str) -> tuple[int, str, str]:
        code = run([*args, "-c", str(synced_ctx.loaded.path)])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    call.started, call.then_sign = started, then_sign
    return call


def files(tmp_path: Path, **kwargs) -> list[str]:
    tests, metrics = evidence(**kwargs)
    args = []
    for name, body in tests:
        (tmp_path / name).write_bytes(body)
        args += ["--junit", str(tmp_path / name)]
    for name, body in metrics:
        (tmp_path / name).write_bytes(body)
        args += ["--metrics", str(tmp_path / name)]
    (tmp_path / "model.onnx").write_bytes(b"weights")
    return [*args, "--artifact", f"model={tmp_path / 'model.onnx'}"]


VALIDATE = ("release", "validate", "--system", SYSTEM, "--version", "1.4.0")
STATUS = ("release", "status", "--system", SYSTEM, "--version", "1.4.0")


def test_cli_met_awaits_signature_then_status_gates(qms, synced_ctx: QmsContext, tmp_path: Path):  # noqa: ANN001
    code, out, err = qms(*VALIDATE, *files(tmp_path), "--no-wait")
    assert code == 2, out + err
    assert "awaiting signature" in out and qms.started[0] == (
        "release-validation/on-demand",
        {"release_id": status(synced_ctx)["id"]},
    )
    with synced_ctx.db.read() as session:
        row = session.scalars(select(RecordRow).where(RecordRow.kind == "release")).one()
    assert row.owner == "dev"  # the token's person, never self-declared
    assert {
        "role": "artifact",
        "name": "model",
        "size": 7,
        "sha256": __import__("hashlib").sha256(b"weights").hexdigest(),
    } in row.data["evidence"]
    assert qms(*STATUS)[0] == 2
    sign_as(synced_ctx, row.data["request"], "chloe")
    sign_as(synced_ctx, row.data["request"], "ana")
    code, out, _ = qms(*STATUS)
    assert code == 0 and "released" in out


def test_cli_wait_returns_released(qms, tmp_path: Path):  # noqa: ANN001
    qms.then_sign.extend([("chloe", "approve"), ("ana", "approve")])
    code, out, err = qms(*VALIDATE, *files(tmp_path), "--wait", "--timeout", "5")
    assert code == 0, out + err


def test_cli_rejected(qms, tmp_path: Path):  # noqa: ANN001
    qms.then_sign.append(("chloe", "reject"))
    assert qms(*VALIDATE, *files(tmp_path), "--timeout", "5")[0] == 3
    assert qms(*STATUS)[0] == 3


def test_cli_failed_names_each_criterion(qms, tmp_path: Path):  # noqa: ANN001
    code, out, _ = qms(*VALIDATE, *files(tmp_path, accuracy=0.5))
    assert code == 1
    assert "FAILED accuracy: accuracy is 0.5, below the minimum 0.9" in out and "CAPA CAPA-" in out
    assert qms(*STATUS)[0] == 1


def test_cli_blocked(qms, synced_ctx: QmsContext, tmp_path: Path):  # noqa: ANN001
    with UnitOfWork(synced_ctx.db, "ana") as uow:
        blocker = capa.open_capa(
            uow, synced_ctx.config, title="Bias", source="pms", owner="dev", severity="high", systems=[SYSTEM]
        ).id
    code, out, _ = qms(*VALIDATE, *files(tmp_path), "--no-wait")
    assert code == 4 and f"blocked by open CAPA {blocker}" in out and "qms approve APR-" in out
    assert qms(*STATUS)[0] == 4


def test_cli_malformed_xml_named_and_recorded(qms, synced_ctx: QmsContext, tmp_path: Path):  # noqa: ANN001
    bad = tmp_path / "surefire-bad.xml"
    bad.write_text('<?xml version="1.0"?>\n<testsuite name="x">\n  <testcase name="a">\n</testsuite>\n')
    code, out, err = qms(*VALIDATE, "--junit", str(bad))
    assert code == 1 and "surefire-bad.xml:4: not well-formed XML" in err and "Traceback" not in err
    code, _, err = qms(*VALIDATE, "--metrics", str(bad))
    assert code == 1 and "surefire-bad.xml:1: not valid JSON" in err
    with synced_ctx.db.read() as session:
        assert len(session.scalars(select(TrailEventRow).where(TrailEventRow.action == "release.refused")).all()) == 2
    assert qms.started == []


def test_cli_dry_run_records_nothing(qms, synced_ctx: QmsContext, tmp_path: Path):  # noqa: ANN001
    with synced_ctx.db.read() as session:
        before = session.scalar(select(TrailEventRow.seq).order_by(TrailEventRow.seq.desc()).limit(1))
    code, out, _ = qms(*VALIDATE, *files(tmp_path, accuracy=0.5), "--dry-run")
    assert code == 1 and "FAILED accuracy" in out and "nothing recorded" in out
    assert qms(*VALIDATE, *files(tmp_path), "--dry-run")[0] == 2
    with synced_ctx.db.read() as session:
        assert session.scalar(select(TrailEventRow.seq).order_by(TrailEventRow.seq.desc()).limit(1)) == before
    assert qms.started == []


def test_cli_status_of_unknown_release(qms):  # noqa: ANN001
    code, _, err = qms("release", "status", "--system", SYSTEM, "--version", "9.9")
    assert code == 1 and "no validation of triage-assist 9.9" in err


def test_dashboard_lists_releases_and_their_verdicts(synced_ctx: QmsContext, monkeypatch: pytest.MonkeyPatch):
    from fastapi.testclient import TestClient

    from qmsflow.services import accounts
    from qmsflow.web.app import create_app
    from tests.integration.test_web import sign_in

    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    failed = evaluate(synced_ctx, submit(synced_ctx, accuracy=0.5))
    with UnitOfWork(synced_ctx.db, "admin") as uow:
        accounts.add_user(uow, "dev", "dev", "viewer", "dev-password-123", must_change=False)
    with TestClient(create_app(synced_ctx), base_url="http://testserver") as client:
        assert client.get("/releases", follow_redirects=False).status_code == 303  # sign-in first
        sign_in(client, "dev")
        page = client.get("/releases").text
        assert failed["id"] in page and "accuracy is 0.5, below the minimum 0.9" in page and failed["capa"] in page
        assert ">1</td>" in page  # the exit code
        assert failed["id"] in client.get(f"/releases?system={SYSTEM}").text
        assert failed["id"] not in client.get("/releases?system=credit-score").text
        assert client.get("/releases?system=Bad%20Id").status_code == 422


def test_qms_verify_checks_the_signed_report_and_sees_a_tampered_one(qms, synced_ctx: QmsContext, tmp_path: Path):  # noqa: ANN001
    from sqlalchemy import text

    qms.then_sign.extend([("chloe", "approve"), ("ana", "approve")])
    assert qms(*VALIDATE, *files(tmp_path), "--timeout", "5")[0] == 0
    code, out, err = qms("verify")
    assert code == 0, out + err
    with synced_ctx.db.read() as session:
        row = session.scalars(select(RecordRow).where(RecordRow.kind == "release")).one()
        request_id = row.data["request"]
    with synced_ctx.db.engine.begin() as conn:  # someone edits the signed request's content hash in the database
        conn.execute(
            text("UPDATE approval_requests SET content_sha256 = :h WHERE id = :id"), {"h": "0" * 64, "id": request_id}
        )
    code, out, err = qms("verify")
    assert code == 1 and request_id in out + err


def test_the_management_review_sees_the_quarters_validations_gaps_and_deviations(synced_ctx: QmsContext):
    """The release procedure's review inputs (ADR 0026): validations by verdict, group gaps, deviations."""
    from qmsflow.domain.management_review import Period
    from qmsflow.services import management_review, review_inputs

    failed = submit(synced_ctx, accuracy=0.85)
    evaluate(synced_ctx, failed)
    met = submit(synced_ctx)
    evaluate(synced_ctx, met)
    now = datetime.now(UTC)
    with synced_ctx.db.read() as session:
        window = management_review.window_for(session, synced_ctx.config, Period.of(now.date()), now)
        inputs = {i["key"]: i for i in review_inputs.gather(session, synced_ctx.config, window)}
    figures = {f["label"]: f for f in inputs["c.release-validation"]["figures"]}
    assert figures["release validations"]["records"] == [failed, met]
    assert figures["failed"]["records"] == [failed] and figures["awaiting signature"]["records"] == [met]
    assert inputs["c.release-validation"]["statement"] is None
    gaps = inputs["ai.fairness"]["figures"]
    assert (
        gaps and all(isinstance(g["value"], float) for g in gaps) and {g["records"][0] for g in gaps} == {failed, met}
    )
    assert inputs["ai.deviations"]["statement"] == review_inputs_when_empty("ai.deviations")
    if synced_ctx.db.dialect == "sqlite":  # bench/management_review.py's SQL baseline computes the same figures
        from tests.integration.test_management_review_bench import bench_agrees

        bench_agrees(synced_ctx, window)


def review_inputs_when_empty(key: str) -> str:
    from qmsflow.domain.management_review import review_input

    return review_input(key).when_empty
