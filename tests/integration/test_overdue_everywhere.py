"""One definition of overdue (issue 12): the due scan, `qms status`, the dashboard's overview and
documents register, and `qms document list` show the same numbers for the same store."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from qmsflow.cli.main import run
from qmsflow.context import QmsContext
from qmsflow.demo.seed import seed
from qmsflow.services.documents import scan_due_reviews
from qmsflow.services.status import process_status
from qmsflow.store import UnitOfWork
from qmsflow.web.app import create_app


def test_every_surface_counts_the_same_overdue_documents(
    ctx: QmsContext, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    monkeypatch.setenv("COLUMNS", "250")
    seed(ctx)  # documents effective since 1–13 months, one never approved (registered today: due, not overdue)
    from datetime import UTC, datetime

    today = datetime.now(UTC).date()
    with UnitOfWork(ctx.db, "qmsflow") as uow:
        scanned = scan_due_reviews(uow, today, process="document-control")
        uow.commit()
    scan_overdue = sum(d.state == "overdue" for d in scanned)
    assert 0 < scan_overdue < len(scanned)  # the fixture has both overdue and due-soon documents

    [control] = [p for p in process_status(ctx.db) if p.key == "document-control"]
    assert control.overdue_items == scan_overdue

    assert run(["status", "-c", str(ctx.loaded.path)]) == 0
    status_line = next(line for line in capsys.readouterr().out.splitlines() if "document-control" in line)
    cells = [c.strip() for c in status_line.split("│") if c.strip()]
    assert cells[-1] == str(scan_overdue), status_line

    assert run(["document", "list", "-c", str(ctx.loaded.path)]) == 0
    listed = capsys.readouterr().out
    # red = overdue: rich prints no colour to a captured stream, so compare with the register's own rows
    with TestClient(create_app(ctx)) as client:
        form = client.get("/login").text  # the demo seed's viewer account (one account per person)
        csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
        login = {"username": "viewer", "password": "demo-viewer-password", "next": "/", "csrf": csrf}
        assert client.post("/login", data=login, follow_redirects=False).status_code == 303
        register = client.get("/documents").text
        overview = client.get("/").text
    flagged = len(re.findall(r'<td class="bad">', register))
    assert flagged == scan_overdue
    row = re.search(r"document-control.*?</tr>", overview, re.S).group(0)
    assert re.search(r'<td class="num bad">(\d+)</td>', row).group(1) == str(scan_overdue)
    assert "never approved" in listed
