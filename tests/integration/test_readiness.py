"""`qms readiness` and its dashboard page on a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from identityutil import account, password_of

from qmsflow.cli.main import run
from qmsflow.context import QmsContext
from qmsflow.services import readiness
from qmsflow.store import UnitOfWork
from qmsflow.web.app import create_app


def gather(ctx: QmsContext):  # noqa: ANN201
    with ctx.db.read() as session:
        return {a.letter: a for a in readiness.gather(session, ctx.config, UnitOfWork.now().date())}


def test_a_fresh_scaffold_is_thirteen_gaps_and_check_no_longer_claims_coverage(
    synced_ctx: QmsContext, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert {a.status.value for a in gather(synced_ctx).values()} == {"gap"}
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert run(["readiness", "-c", str(synced_ctx.loaded.path)]) == 1
    out = capsys.readouterr().out
    assert "0/13 aspects ready" in out and "SOP-RSK-001 (risk-management) has no approved version" in out
    assert run(["check", "-c", str(synced_ctx.loaded.path)]) == 0
    out = capsys.readouterr().out
    assert "aspects covered" not in out and "assignment is not evidence" in out


def test_records_and_an_approved_procedure_make_an_aspect_partial(synced_ctx: QmsContext) -> None:
    from qmsflow.services import capa

    with UnitOfWork(synced_ctx.db, "ana") as uow:
        capa.open_capa(
            uow, synced_ctx.config, title="Drift in triage model", source="pms", process="risk-management", owner="ana"
        )
    g = gather(synced_ctx)["g"]
    assert g.checks["records"] is True and g.status.value == "partial"
    assert not any("risk-management has no records" in gap for gap in g.gaps)


def test_an_audit_source_counts_the_audits_of_the_year(synced_ctx: QmsContext, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readiness, "_audit_sources", [lambda session, year: {"risk-management": [f"AUD-{year}-0001"]}])
    g = gather(synced_ctx)["g"]
    assert g.checks["audit"] is True
    assert not any("not audited" in gap or "no internal audit" in gap for gap in g.gaps)


def test_the_dashboard_shows_the_same_readiness(synced_ctx: QmsContext) -> None:
    account(synced_ctx.db, "dev", role="viewer")
    with TestClient(create_app(synced_ctx), base_url="http://testserver") as client:
        import re

        form = client.get("/login").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
        data = {"username": "dev", "password": password_of("dev"), "next": "/", "csrf": csrf}
        assert client.post("/login", data=data, follow_redirects=False).status_code == 303
        page = client.get("/readiness").text
    assert page.count('<span class="pill bad">gap</span>') == 13
    assert "SOP-RSK-001 (risk-management) has no approved version" in page
