"""Content under signature: stored once, addressed by its SHA-256, shown to signers from the store.

What an approver sees and signs is exactly what is stored here (the document text as submitted, or
the record state a signed step approves), never the working tree: a later edit of a file cannot change
what a signature covers, and the controlled copy can be rebuilt from the store alone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from ..domain.trail import canonical_json
from ..store.state import state_of
from ..store.tables import ContentRow
from ..store.uow import UnitOfWork

MARKDOWN = "text/markdown; charset=utf-8"
RECORD_JSON = "application/vnd.qmsflow.signed-step+json"
MAX_BYTES = 5 * 1024 * 1024  # a controlled document or a record state; far above any real one


class ContentTooLarge(ValueError):
    pass


@dataclass(frozen=True)
class Content:
    sha256: str
    media_type: str
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    @property
    def is_record(self) -> bool:
        return self.media_type == RECORD_JSON

    def data(self) -> Any:
        return json.loads(self.body) if self.is_record else None


def digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def record_body(value: Any) -> bytes:
    """The canonical bytes of a signed record state (sorted keys, UTF-8): its hash is what is signed."""
    return canonical_json(value).encode("utf-8")


def store(uow: UnitOfWork, body: bytes, media_type: str) -> str:
    """Keep ``body`` (once per hash) and return its SHA-256; the first time is recorded in the trail."""
    if len(body) > MAX_BYTES:
        raise ContentTooLarge(f"content of {len(body):,} bytes is over the limit of {MAX_BYTES:,} bytes")
    sha = digest(body)
    if uow.session.get(ContentRow, sha) is None:
        row = ContentRow(sha256=sha, media_type=media_type, size=len(body), body=body, created_at=uow.now())
        uow.session.add(row)
        uow.record("content.stored", f"content:{sha}", None, state_of(row))
    return sha


def load(session: Session, sha: str) -> Content | None:
    """The stored content, or None; a body that no longer hashes to its key is never returned as it."""
    row = session.get(ContentRow, sha)
    if row is None:
        return None
    body = bytes(row.body)
    if digest(body) != sha:
        return None
    return Content(sha, row.media_type, body)


def _plain(value: Any, indent: int = 0) -> list[str]:
    """A nested value as indented ``key: value`` lines, for people (CLI, Slack, the dashboard)."""
    pad = "  " * indent
    if isinstance(value, dict):
        lines = []
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{key}:")
                lines.extend(_plain(item, indent + 1))
            else:
                lines.append(f"{pad}{key}: {_scalar(item)}")
        return lines
    if isinstance(value, list):
        lines = []
        for number, item in enumerate(value, 1):
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{number}.")
                lines.extend(_plain(item, indent + 1))
            else:
                lines.append(f"{pad}{number}. {_scalar(item)}")
        return lines
    return [f"{pad}{_scalar(value)}"]


def _scalar(value: Any) -> str:
    if value is None or value == [] or value == {}:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


@dataclass(frozen=True)
class SignedStep:
    """A signed record step, laid out for reading: what it enters, with which data, on which record."""

    title: str
    fields: list[str]
    record: list[str]


def signed_step(content: Content) -> SignedStep:
    data = content.data() or {}
    step = data.get("step", {})
    record = dict(data.get("record", {}))
    stages = (record.get("data") or {}).get("stages", {})
    facts = {k: record.get(k) for k in ("id", "title", "status", "owner", "process", "due_date", "systems")}
    facts["source"] = (record.get("data") or {}).get("source")
    facts["severity"] = (record.get("data") or {}).get("severity")
    facts["description"] = (record.get("data") or {}).get("description")
    return SignedStep(
        title=f"{step.get('id', '?')}: enter {step.get('title', step.get('target', '?'))}",
        fields=_plain(data.get("fields", {})),
        record=_plain(facts) + (["stages so far:", *_plain(stages, 1)] if stages else []),
    )


def as_text(content: Content) -> str:
    """The content as plain text: the document as submitted, or the signed step laid out."""
    if not content.is_record:
        return content.text
    step = signed_step(content)
    return "\n".join([step.title, "", "data of this step:", *step.fields, "", "the record as it is:", *step.record])


def summary(content: Content, limit: int = 600) -> str:
    """A short summary for a notification (Slack shows it next to the link to the full content)."""
    if content.is_record:
        step = signed_step(content)
        text = "\n".join([step.title, *step.fields])
    else:
        lines = [line for line in content.text.splitlines() if line.strip()]
        text = f"{len(content.body):,} bytes, {len(content.text.splitlines()):,} lines" + (
            f"; begins: {lines[0][:120]}" if lines else ""
        )
    return text if len(text) <= limit else text[: limit - 1] + "…"
