"""Procedures never go stale (issue 21, point 2): the procedure file holds its organisation-specific parts
as placeholders, and every controlled copy fills them from the qms.yaml in force when it is made, naming
that configuration's digest; the signed content stays the same. On SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import identityutil
import pytest

from qmsflow.context import QmsContext
from qmsflow.domain import procedure_text
from qmsflow.domain.errors import DomainError
from qmsflow.services import contents, review
from qmsflow.services.verify import verify
from qmsflow.settings import parse_config
from qmsflow.store import UnitOfWork
from qmsflow.store.tables import DocumentVersionRow

DOC = "SOP-DAT-001"
PATH = "procedures/SOP-DAT-001-data-management.md"


def _approve(ctx: QmsContext) -> str:
    with UnitOfWork(ctx.db, "ben") as uow:
        sub = review.submit_document(uow, ctx.config, ctx.root, document_id=DOC, submitted_by="ben")
        uow.commit()
        submission_id = sub.id
    with UnitOfWork(ctx.db, "qmsflow") as uow:
        request_id = review.open_review(uow, ctx.config, submission_id, "run-1")["id"]
    for person in ("chloe", "ana"):
        with UnitOfWork(ctx.db, person) as uow:
            identityutil.sign(uow, ctx.config, request_id, person)
    return request_id


def test_a_copy_is_filled_from_the_qms_yaml_in_force_and_names_it(synced_ctx: QmsContext, tmp_path: Path) -> None:
    ctx = synced_ctx
    source = (ctx.root / PATH).read_text()
    assert "{{qms:org.name}}" in source and "Test AI GmbH" not in source  # nothing frozen at qms init
    request_id = _approve(ctx)
    with UnitOfWork(ctx.db, "qmsflow") as uow:
        first = Path(review.render_approved_copy(uow, ctx.config, ctx.root, tmp_path / "a", request_id)["html"])
    html = first.read_text()
    assert "Test AI GmbH" in html and "Dev Patel" in html and "Triage Assist" in html
    assert "{{qms:" not in html
    assert procedure_text.config_digest(ctx.config) in html  # "Filled from the configuration of qms.yaml … SHA-256 …"

    # qms.yaml changes: the organisation is renamed, the document gets another owner, a system is added
    config_file = ctx.root / "qms.yaml"
    changed = (
        config_file.read_text()
        .replace("name: Test AI GmbH", "name: Renamed AI SE")
        .replace(f"path: {PATH}, owner: dev", f"path: {PATH}, owner: chloe")
        .replace(
            "systems:\n",
            "systems:\n  - id: new-system\n    name: Fresh Forecaster\n"
            "    intended_purpose: Forecasts demand.\n    risk_class: minimal-risk\n",
            1,
        )
    )
    assert changed.count("Renamed AI SE") == 1 and "owner: chloe" in changed and "Fresh Forecaster" in changed
    config = parse_config(changed, config_file).config
    with UnitOfWork(ctx.db, "qmsflow") as uow:
        again = Path(review.render_document_copy(uow, config, ctx.root, tmp_path / "b", DOC)["html"])
    html = again.read_text()
    assert "Renamed AI SE" in html and "Test AI GmbH" not in html and "Fresh Forecaster" in html
    assert "Document owner:</strong> Chloe Chen" in html
    assert procedure_text.config_digest(config) in html
    with ctx.db.read() as s:
        version = s.query(DocumentVersionRow).filter_by(document_id=DOC, status="effective").one()
    assert version.content_sha256 == contents.digest(source.encode("utf-8"))  # the signed text is unchanged
    assert verify(ctx.db, None).ok


def test_an_unknown_placeholder_is_refused_at_submission_naming_file_and_line(synced_ctx: QmsContext) -> None:
    path = synced_ctx.root / PATH
    lines = path.read_text().splitlines()
    lines.insert(4, "- **Budget:** {{qms:org.budget}}")
    path.write_text("\n".join(lines) + "\n")
    with UnitOfWork(synced_ctx.db, "ben") as uow, pytest.raises(DomainError, match=rf"{PATH}:5: unknown placeholder"):
        review.submit_document(uow, synced_ctx.config, synced_ctx.root, document_id=DOC, submitted_by="ben")


def test_fill_names_the_line_and_the_known_placeholders(synced_ctx: QmsContext) -> None:
    lookup = procedure_text.values(synced_ctx.config, DOC)
    text = "one\n{{qms:org.name}} and {{ qms:document SOP-CAPA-001 }}\n{{qms:nope}}\n"
    with pytest.raises(
        procedure_text.PlaceholderError, match=r"x.md:3: unknown placeholder \{\{qms:nope\}\} \(known: org.name"
    ):
        procedure_text.fill(text, lookup, "x.md")
    filled = procedure_text.fill(text.replace("{{qms:nope}}", ""), lookup, "x.md")
    assert "Test AI GmbH and SOP-CAPA-001 Corrective and preventive action procedure" in filled
    with pytest.raises(procedure_text.PlaceholderError, match="takes no argument"):
        procedure_text.fill("{{qms:org.name SOP-X}}", lookup, "x.md")


def test_no_writer_waits_while_a_copy_renders(synced_ctx: QmsContext, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """The copy's inputs are read first; the PDF (seconds with WeasyPrint) renders with no lock held."""
    import threading

    from qmsflow.adapters import render

    request_id = _approve(synced_ctx)
    real = render.render_controlled
    finished: list[bool] = []

    def write_meanwhile() -> None:
        with UnitOfWork(synced_ctx.db, "ana") as uow:
            uow.record("web.refused", "web:while-rendering", None, {"why": "a write while a copy renders"})
            uow.commit()
        finished.append(True)

    def rendering(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        writer = threading.Thread(target=write_meanwhile)
        writer.start()
        writer.join(timeout=15)
        assert finished, "a writer waited for the copy's rendering"
        return real(*args, **kwargs)

    monkeypatch.setattr(render, "render_controlled", rendering)
    with UnitOfWork(synced_ctx.db, "qmsflow") as uow:
        review.render_approved_copy(uow, synced_ctx.config, synced_ctx.root, tmp_path / "c", request_id)
    assert finished == [True]
