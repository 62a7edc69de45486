"""Verifying the audit trail, and anchoring its head in the compliance repo (git as a witness)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from ..domain.trail import Anchor, ChainReport, canonical_json, format_ts, parse_anchors, verify_rows
from ..store import trail
from ..store.db import Database
from ..store.tables import ApprovalRequestRow, DocumentVersionRow, SignatureRow, TrailEventRow, VerificationRow
from . import signed_records
from .approvals import signature_of


@dataclass
class VerifyResult:
    report: ChainReport
    anchors_checked: int = 0
    anchor_problems: list[str] = field(default_factory=list)
    signatures_checked: int = 0
    signature_problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.report.ok and not self.anchor_problems and not self.signature_problems

    @property
    def problem(self) -> str | None:
        if self.report.broken:
            return str(self.report.broken)
        return "; ".join(self.anchor_problems + self.signature_problems) or None


def verify(db: Database, anchors_file: Path | None, progress=None) -> VerifyResult:  # noqa: ANN001
    """Recompute the whole chain, then check every anchor; record the outcome."""
    with db.read() as session:
        rows = trail.iter_rows(session)
        if progress is not None:
            rows = progress(rows)
        report = verify_rows(rows)
        result = VerifyResult(report)
        if anchors_file is not None and anchors_file.is_file():
            with anchors_file.open(encoding="utf-8") as handle:
                for anchor in parse_anchors(handle):
                    if isinstance(anchor, str):
                        result.anchor_problems.append(f"{anchors_file.name} {anchor}")
                        continue
                    result.anchors_checked += 1
                    problem = _check_anchor(session, anchor)
                    if problem:
                        result.anchor_problems.append(f"{anchors_file.name} line {anchor.line}: {problem}")
        result.signatures_checked, result.signature_problems = check_signatures(session)
        steps_checked, step_problems = signed_records.check(session)
        result.signatures_checked += steps_checked
        result.signature_problems += step_problems
    with db.session() as session, session.begin():
        session.add(
            VerificationRow(
                at=datetime.now(UTC),
                ok=result.ok,
                count=report.count,
                head_seq=report.head_seq,
                head_hash=report.head_hash,
                problem=result.problem,
            )
        )
    return result


def _check_anchor(session, anchor: Anchor) -> str | None:  # noqa: ANN001
    stored = session.scalar(select(TrailEventRow.hash).where(TrailEventRow.seq == anchor.seq))
    if stored is None:
        return (
            f"anchored seq {anchor.seq} (anchored {anchor.anchored_at}) is no longer in the trail: events were removed"
        )
    if stored != anchor.hash:
        return (
            f"seq {anchor.seq} has hash {stored[:16]}… but was anchored as {anchor.hash[:16]}… on {anchor.anchored_at}"
        )
    return None


def check_signatures(session) -> tuple[int, list[str]]:  # noqa: ANN001
    """Each e-signature still matches its trail record and the content it signed (Part 11 §11.70).

    Three set-based queries (signatures with their trail events and requests; version hashes),
    not one query per signature: a ten-year store holds tens of thousands of signatures.
    """
    problems: list[str] = []
    versions = {
        (doc, version): digest
        for doc, version, digest in session.execute(
            select(DocumentVersionRow.document_id, DocumentVersionRow.version, DocumentVersionRow.content_sha256)
        )
    }
    rows = session.execute(
        select(SignatureRow, TrailEventRow.action, TrailEventRow.after_json, ApprovalRequestRow)
        .outerjoin(TrailEventRow, TrailEventRow.seq == SignatureRow.trail_seq)
        .outerjoin(ApprovalRequestRow, ApprovalRequestRow.id == SignatureRow.request_id)
        .order_by(SignatureRow.id)
    )
    checked = 0
    for sig, action, after_json, request in rows:
        checked += 1
        label = f"signature of {sig.printed_name} on {sig.request_id} ({sig.at:%Y-%m-%d %H:%M} UTC)"
        as_signed = canonical_json(signature_of(sig).model_dump(mode="json"))
        if action != "approval.signed" or after_json != as_signed:
            problems.append(f"{label}: differs from its trail record at seq {sig.trail_seq}")
            continue
        if request is None or request.content_sha256 != sig.content_sha256:
            problems.append(f"{label}: the request's content hash changed since signing")
            continue
        if request.subject.startswith("document-version:"):
            doc_id, _, version = request.subject.removeprefix("document-version:").partition("@")
            stored = versions.get((doc_id, version))
            if stored != sig.content_sha256:
                problems.append(
                    f"{label}: no longer verifies: {doc_id} v{version} content is now "
                    f"{(stored or 'missing')[:16]}…, signed {sig.content_sha256[:16]}…"
                )
    return checked, problems


def anchor(db: Database, anchors_file: Path) -> tuple[Anchor, bool]:
    """Append the current head to ``anchors_file``. Returns (anchor, written); not written if unchanged."""
    with db.read() as session:
        seq, digest = trail.head(session)
    if seq == 0:
        raise ValueError("the trail is empty: nothing to anchor yet")
    if anchors_file.is_file():
        last = [
            a for a in parse_anchors(anchors_file.read_text(encoding="utf-8").splitlines()) if isinstance(a, Anchor)
        ]
        if last and last[-1].seq == seq and last[-1].hash == digest:
            return last[-1], False
    new = Anchor(seq, digest, format_ts(datetime.now(UTC)))
    anchors_file.parent.mkdir(parents=True, exist_ok=True)
    with anchors_file.open("a", encoding="utf-8") as handle:
        handle.write(new.to_json() + "\n")
    return new, True


def last_verification(db: Database) -> VerificationRow | None:
    with db.read() as session:
        return session.scalar(select(VerificationRow).order_by(VerificationRow.id.desc()).limit(1))
