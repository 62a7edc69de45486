"""Render an approved controlled document (Markdown) to HTML and PDF with a control block.

The control block shows the document's identity, owner, approvers, dates, content SHA-256 and git
commit, and a signatures table with each signer's printed name, the meaning of the signature, the
decision, the UTC date and time, the method and the signed content hash (21 CFR Part 11 §11.50:
the human-readable form shows printed name, date/time and meaning). Each PDF page has a running
footer "DOC-ID vVERSION — controlled copy, effective YYYY-MM-DD — page X of Y".

Rendering is deterministic: the same inputs give byte-identical HTML (no render timestamp), so
``html_sha256`` can be recorded and re-checked. WeasyPrint is imported only when a PDF is written
(it is slow to import and needs Pango/HarfBuzz/fontconfig from the system, see
scripts/system-deps.sh); nothing is fetched from the network while rendering.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, select_autoescape
from markdown_it import MarkdownIt

from ..scaffold import environment

TEMPLATE = "documents/_controlled.html.j2"

# Debian packages WeasyPrint needs at run time (keep in step with scripts/system-deps.sh).
DEBIAN_PACKAGES = (
    "libglib2.0-0",
    "libpango-1.0-0",
    "libpangoft2-1.0-0",
    "libharfbuzz0b",
    "libharfbuzz-subset0",
    "libfontconfig1",
    "fonts-dejavu-core",
)

_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_REQUIRED = ("id", "title", "version", "status", "owner_name", "effective_date", "content_sha256")


class RenderError(Exception):
    """A controlled copy could not be rendered; the message says what to install or fix."""


@dataclass(frozen=True)
class Rendered:
    html_path: Path
    pdf_path: Path
    html_sha256: str


def markdown_to_html(text: str) -> str:
    """CommonMark plus tables; raw HTML in the source is escaped, never passed through."""
    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)


def html_environment() -> Environment:
    """The scaffold environment (same loader, StrictUndefined) with autoescaping for HTML templates."""
    return environment().overlay(autoescape=select_autoescape(["html", "html.j2"], default_for_string=True))


def render_html(markdown_text: str, doc: dict, signatures: list[dict], organisation: str) -> str:
    """The controlled copy as a self-contained HTML page."""
    missing = [key for key in _REQUIRED if doc.get(key) in (None, "")]
    if missing:
        raise ValueError(f"document {doc.get('id', '?')}: missing {', '.join(missing)} for the control block")
    context_doc = {
        **doc,
        "approvers": list(doc.get("approvers") or []),
        "next_review_date": doc.get("next_review_date"),
        "git_commit": doc.get("git_commit"),
        "config_sha256": doc.get("config_sha256"),
        "superseded": doc.get("superseded"),
    }
    context_signatures = [
        {
            "name": s.get("name"),
            "meaning": s.get("meaning"),
            "decision": s.get("decision"),
            "at": s.get("at"),
            "method": s.get("method"),
            "account": s.get("account") or "",
            "auth": s.get("auth") or "",
            "content_sha256": s.get("content_sha256") or "",
        }
        for s in signatures
    ]
    return (
        html_environment()
        .get_template(TEMPLATE)
        .render(
            doc=context_doc,
            signatures=context_signatures,
            body_html=markdown_to_html(markdown_text),
            organisation=organisation,
        )
    )


def render_controlled(
    markdown_text: str, doc: dict, signatures: list[dict], organisation: str, out_dir: Path
) -> Rendered:
    """Write ``out_dir/<id>/<version>/<id>-v<version>.html`` and ``.pdf`` (overwriting: idempotent)."""
    doc_id, version = str(doc.get("id", "")), str(doc.get("version", ""))
    for what, value in (("document id", doc_id), ("version", version)):
        if not _SAFE_SEGMENT.match(value) or ".." in value:
            raise ValueError(f"{what} {value!r} cannot be used in a file name (letters, digits, '.', '_', '-')")
    html = render_html(markdown_text, doc, signatures, organisation)
    data = html.encode("utf-8")
    target = Path(out_dir) / doc_id / version
    target.mkdir(parents=True, exist_ok=True)
    html_path = target / f"{doc_id}-v{version}.html"
    pdf_path = target / f"{doc_id}-v{version}.pdf"
    html_path.write_bytes(data)
    pdf_path.write_bytes(html_to_pdf(html, base_url=str(out_dir)))
    return Rendered(html_path, pdf_path, hashlib.sha256(data).hexdigest())


def _install_hint() -> str:
    return (
        "install its system libraries with scripts/system-deps.sh, or: "
        f"apt-get install -y --no-install-recommends {' '.join(DEBIAN_PACKAGES)}"
    )


def html_to_pdf(html: str, base_url: str) -> bytes:
    """PDF bytes from WeasyPrint; a clear RenderError if WeasyPrint or its system libraries are missing."""
    try:
        import weasyprint
    except ImportError as exc:
        raise RenderError(
            f"WeasyPrint is not installed ({exc}): pip install 'weasyprint>=62'; " + _install_hint()
        ) from exc
    except OSError as exc:  # cffi could not dlopen Pango, HarfBuzz, fontconfig or GObject
        raise RenderError(f"WeasyPrint cannot load a system library ({exc}): " + _install_hint()) from exc
    try:
        return weasyprint.HTML(string=html, base_url=base_url, url_fetcher=_offline_fetcher(weasyprint)).write_pdf()
    except OSError as exc:
        raise RenderError(f"WeasyPrint failed to write the PDF ({exc}): " + _install_hint()) from exc


def _offline_fetcher(weasyprint):
    """A URL fetcher that allows only data: URLs: a controlled copy is self-contained and never fetches."""
    fetcher_class = getattr(weasyprint, "URLFetcher", None)
    if fetcher_class is not None:  # newer WeasyPrint (URLFetcher class)
        return fetcher_class(allowed_protocols={"data"})

    def fetch(url: str, *args, **kwargs):  # pragma: no cover - older WeasyPrint
        if not url.lower().startswith("data:"):
            raise ValueError(f"not fetched while rendering a controlled copy: {url}")
        return weasyprint.default_url_fetcher(url, *args, **kwargs)

    return fetch


def render_report(template: str, context: dict) -> str:
    """A report page (``templates/reports/…``) as self-contained HTML, autoescaped."""
    return html_environment().get_template(f"reports/{template}").render(**context)
