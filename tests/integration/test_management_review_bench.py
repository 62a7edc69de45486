"""bench/management_review.py runs on a small store, and its SQL baseline computes the same figures as the
registered providers (so that its ratio compares the same work). SQLite only: the baseline's SQL is SQLite's."""

from __future__ import annotations

import importlib.util
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import identityutil
import pytest

from qmsflow.context import QmsContext
from qmsflow.demo.seed import seed
from qmsflow.domain.management_review import Period
from qmsflow.services import capa
from qmsflow.services import management_review as mr
from qmsflow.services.records import update_record
from qmsflow.services.review_inputs import Window
from qmsflow.store import UnitOfWork
from qmsflow.store.tables import RecordRow
from tests.integration.test_management_review import CLOSE
from tests.integration.test_management_review import _close as close

BENCH = Path(__file__).resolve().parents[2] / "bench" / "management_review.py"


def bench() -> ModuleType:
    name = "bench_management_review"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCH)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def bench_agrees(ctx: QmsContext, window: Window) -> dict[str, Any]:
    """The pack gathered for ``window`` equals the bench's SQL baseline, input by input; returns the pack."""
    b = bench()
    with ctx.db.read() as session:
        pack = mr.build_pack(session, ctx.config, window)
    assert b.same_figures(pack, b.baseline(ctx.db, window)) > 0
    return pack


def test_the_bench_runs_on_a_small_store_and_its_baseline_gives_the_same_figures(
    ctx: QmsContext, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("SLACK_BOT_TOKEN", "JIRA_API_TOKEN", "JIRA_EMAIL"):
        monkeypatch.delenv(var, raising=False)
    seed(ctx)  # the small demo: documents effective for various ages, some of them overdue for review
    today = mr.today_in(ctx.config, UnitOfWork.now())
    period = Period.of(today)
    with UnitOfWork(ctx.db, "ana") as uow:  # the previous quarter's review, with an action decided
        previous = mr.start(uow, ctx.config, period.previous()).id
    with UnitOfWork(ctx.db, "ben") as uow:
        mr.decide(
            uow,
            ctx.config,
            previous,
            "improvement",
            "Audit the labels",
            [{"what": "Label audit", "owner": "dev", "due": (today + timedelta(days=30)).isoformat()}],
        )
    ids = []
    for title in ("A", "B", "C"):
        with UnitOfWork(ctx.db, "dev") as uow:
            ids.append(capa.open_capa(uow, ctx.config, title=title, source="audit", owner="dev").id)
    close(ctx, ids[0])  # through every stage, its closure signed
    ineffective = ("root_cause", {"result": "ineffective", "checked_by": "ana", "checked_on": today.isoformat()})
    for target, fields in [
        *CLOSE[:-1],
        (ineffective[0], {**ineffective[1], "notes": "the drift came back", "early_reason": "it failed at once"}),
    ]:
        with UnitOfWork(ctx.db, "dev") as uow:  # C: its effectiveness check says ineffective
            result = capa.advance(uow, ctx.config, ids[2], target, fields)
        if "awaiting" in result:
            with UnitOfWork(ctx.db, "ana") as uow:
                identityutil.sign(uow, ctx.config, result["awaiting"], "ana")
    with UnitOfWork(ctx.db, "test-setup") as uow:  # B's stage fell due yesterday
        update_record(uow, uow.session.get(RecordRow, ids[1]), "due-moved", due_date=today - timedelta(days=1))
        uow.commit()
    with UnitOfWork(ctx.db, "ana") as uow:
        mr.watch_add(uow, ctx.config, note="AI Office guidance", source="https://example.eu/x", processes=["capa"])

    now = datetime.now(UTC)
    with ctx.db.read() as session:
        window = mr.window_for(session, ctx.config, period, now)
    pack = bench_agrees(ctx, window)
    figures = {i["key"]: {f["label"]: f for f in i["figures"]} for i in pack["inputs"]}
    assert figures["c.document-reviews"][f"document reviews overdue on {now.date().isoformat()}"]["value"] > 0
    assert figures["a.previous-actions"]["open, rolled into this review"]["value"] == 1
    assert figures["c.capa"]["opened this quarter"]["records"] == ids
    assert figures["c.capa"]["effectiveness checks: effective"]["records"] == ids[:1]
    assert figures["c.capa"]["effectiveness checks: ineffective (back to root cause)"]["records"] == ids[2:]
    assert figures["e.risk-actions"]["CAPA closures that updated the risk register"]["records"] == ids[:1]
    assert figures["c.approval-lead-times"]["approvals decided this quarter"]["value"] >= 2

    assert bench().main(["--repo", str(ctx.root), "--period", str(period), "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "compared with the SQL baseline: identical" in out and 'gather / baseline "sql":' in out
