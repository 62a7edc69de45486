"""The large demo generator, at a small size: a verifiable chain, signatures that verify, pages that render."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from qmsflow.context import open_context
from qmsflow.demo.large import fill, write_config
from qmsflow.services.verify import verify
from qmsflow.store.tables import DocumentVersionRow, RecordRow


def test_large_demo_generator_makes_a_consistent_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QMS_DATABASE_URL", raising=False)
    count = write_config(tmp_path / "large", systems=5, people=12)
    assert count == 11 + 5 * 6  # the scaffold's procedures and risk register, six per system
    ctx = open_context(tmp_path / "large" / "qms.yaml", migrate=True)
    # small units of work, so that versions made obsolete in a later one are changed through the ORM
    summary = fill(ctx.db, ctx.config, ctx.root, capas=500, target_events=20_000, batch_events=1_500)
    assert summary["capas"] == 500 and summary["events"] >= 20_000 * 0.95
    result = verify(ctx.db, None)
    assert result.ok, result.problem  # the state of every record table included
    assert summary["events"] == result.report.count
    with ctx.db.read() as s:
        lifecycles = s.scalar(select(func.count()).select_from(RecordRow).where(RecordRow.kind == "ai-system"))
    assert lifecycles == len(ctx.config.systems)  # each system's dates, recorded at sync (retention)
    assert result.state.by_table["records"] == 500 + lifecycles and result.state.by_table["signatures"] > 0
    assert result.signatures_checked == summary["document_versions"]
    with ctx.db.read() as s:
        effective = s.scalar(
            select(func.count()).select_from(DocumentVersionRow).where(DocumentVersionRow.status == "effective")
        )
        assert effective == count  # exactly one effective version per document
        assert s.scalar(select(func.count()).select_from(RecordRow).where(RecordRow.kind == "capa")) == 500
    ctx.close()
