"""Controlled copies: Markdown -> HTML + PDF with a control block and signatures (Part 11 §11.50)."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

from qmsflow.adapters.render import Rendered, RenderError, markdown_to_html, render_controlled

CONTENT = "3f2a9c0d1e4b5a6978c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2"
COMMIT = "9b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c"

MARKDOWN = """\
# Document control

## Purpose

How controlled documents are approved & issued.

<script>alert("pwned")</script>

| Role | Responsibility |
|------|----------------|
| Owner | Drafts the document |
| Approver | Reviews and signs |
"""

DOC = {
    "id": "SOP-DOC-001",
    "title": "Document & record control",
    "version": "3",
    "status": "approved",
    "owner_name": "Anna Schmidt",
    "approvers": ["Ben Okafor", "Carla Ruiz"],
    "effective_date": "2025-03-01",
    "next_review_date": "2026-03-01",
    "content_sha256": CONTENT,
    "git_commit": COMMIT,
}

SIGNATURES = [
    {
        "name": "Anna Schmidt",
        "meaning": "approved as document owner",
        "decision": "approve",
        "at": "2025-02-27 14:03:11 UTC",
        "method": "slack",
        "content_sha256": CONTENT,
    },
    {
        "name": "Ben Okafor",
        "meaning": "approved as quality assurance",
        "decision": "approve",
        "at": "2025-02-28 09:41:02 UTC",
        "method": "web",
        "content_sha256": CONTENT,
    },
]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    return render_controlled(MARKDOWN, DOC, SIGNATURES, "Example AI GmbH", tmp_path_factory.mktemp("out"))


def test_markdown_escapes_raw_html_and_renders_tables() -> None:
    html = markdown_to_html(MARKDOWN)
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "<table>" in html and "<th>Role</th>" in html and "<td>Drafts the document</td>" in html


def test_html_has_control_block_signatures_and_escaped_body(rendered: Rendered) -> None:
    out = rendered.html_path.parent.parent.parent
    assert rendered.html_path == out / "SOP-DOC-001" / "3" / "SOP-DOC-001-v3.html"
    assert rendered.pdf_path == out / "SOP-DOC-001" / "3" / "SOP-DOC-001-v3.pdf"
    html = rendered.html_path.read_text(encoding="utf-8")
    assert rendered.html_sha256 == hashlib.sha256(html.encode("utf-8")).hexdigest()
    # control block
    for field in (
        "SOP-DOC-001",
        "Document &amp; record control",
        "approved",
        "Anna Schmidt",
        "Ben Okafor, Carla Ruiz",
        "2025-03-01",
        "2026-03-01",
        CONTENT,
        COMMIT,
        "Example AI GmbH",
    ):
        assert field in html, field
    assert "Document & record control" not in html  # autoescaped, not raw
    # the raw HTML in the Markdown is escaped, not passed through
    assert "<script>" not in html
    assert (
        "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in html
        or "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;" in html
    )
    # the body's table
    assert "<th>Role</th>" in html
    # signatures: printed name, meaning, date/time, method, first 16 hex of the signed hash (§11.50)
    for sig in SIGNATURES:
        for key in ("name", "meaning", "at", "method"):
            assert sig[key] in html, sig[key]
    assert CONTENT[:16] in html
    # running footer and the uncontrolled-copy note
    assert "SOP-DOC-001 v3 — controlled copy, effective 2025-03-01" in html
    assert 'counter(page) " of " counter(pages)' in html
    assert "Printed copies are uncontrolled; the current version is in qmsflow." in html


def test_pdf_is_written(rendered: Rendered) -> None:
    data = rendered.pdf_path.read_bytes()
    assert data.startswith(b"%PDF")
    assert len(data) > 1000


def test_pdf_text_has_doc_id_and_page_footer(rendered: Rendered) -> None:
    pypdf = pytest.importorskip("pypdf")
    reader = pypdf.PdfReader(str(rendered.pdf_path))
    text = " ".join(" ".join((page.extract_text() or "").split()) for page in reader.pages)
    assert "SOP-DOC-001" in text
    assert f"page 1 of {len(reader.pages)}" in text
    assert "Anna Schmidt" in text and "approved as document owner" in text  # cells may wrap: whitespace folded


def test_rendering_is_idempotent(tmp_path: Path) -> None:
    first = render_controlled(MARKDOWN, DOC, SIGNATURES, "Example AI GmbH", tmp_path)
    second = render_controlled(MARKDOWN, DOC, SIGNATURES, "Example AI GmbH", tmp_path)  # overwrites
    elsewhere = render_controlled(MARKDOWN, DOC, SIGNATURES, "Example AI GmbH", tmp_path / "other")
    assert first.html_sha256 == second.html_sha256 == elsewhere.html_sha256
    assert second.html_path == first.html_path and second.pdf_path.read_bytes().startswith(b"%PDF")


def test_uncommitted_document_without_signatures(tmp_path: Path) -> None:
    doc = {**DOC, "git_commit": None, "next_review_date": None}
    html = render_controlled("Body", doc, [], "Example AI GmbH", tmp_path).html_path.read_text(encoding="utf-8")
    assert "not committed" in html and "No signatures recorded." in html


def test_unsafe_id_or_version_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="file name"):
        render_controlled("x", {**DOC, "id": "../etc"}, [], "Org", tmp_path)
    with pytest.raises(ValueError, match="file name"):
        render_controlled("x", {**DOC, "version": "1/2"}, [], "Org", tmp_path)


def test_missing_weasyprint_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "weasyprint", None)  # makes `import weasyprint` raise ImportError
    with pytest.raises(RenderError, match="libpango-1.0-0"):
        render_controlled(MARKDOWN, DOC, SIGNATURES, "Example AI GmbH", tmp_path)
