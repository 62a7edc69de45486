"""Verifying the audit trail, and anchoring its head in the compliance repo (git as a witness)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from ..domain.trail import Anchor, ChainReport, format_ts, parse_anchors, verify_rows
from ..store import trail
from ..store.db import Database
from ..store.tables import TrailEventRow, VerificationRow


@dataclass
class VerifyResult:
    report: ChainReport
    anchors_checked: int = 0
    anchor_problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.report.ok and not self.anchor_problems

    @property
    def problem(self) -> str | None:
        if self.report.broken:
            return str(self.report.broken)
        return "; ".join(self.anchor_problems) or None


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
    with db.session() as session, session.begin():
        session.add(VerificationRow(at=datetime.now(UTC), ok=result.ok, count=report.count,
                                    head_seq=report.head_seq, head_hash=report.head_hash, problem=result.problem))
    return result


def _check_anchor(session, anchor: Anchor) -> str | None:  # noqa: ANN001
    stored = session.scalar(select(TrailEventRow.hash).where(TrailEventRow.seq == anchor.seq))
    if stored is None:
        return (f"anchored seq {anchor.seq} (anchored {anchor.anchored_at}) is no longer in the trail: "
                "events were removed")
    if stored != anchor.hash:
        return f"seq {anchor.seq} has hash {stored[:16]}… but was anchored as {anchor.hash[:16]}… on {anchor.anchored_at}"
    return None


def anchor(db: Database, anchors_file: Path) -> tuple[Anchor, bool]:
    """Append the current head to ``anchors_file``. Returns (anchor, written); not written if unchanged."""
    with db.read() as session:
        seq, digest = trail.head(session)
    if seq == 0:
        raise ValueError("the trail is empty: nothing to anchor yet")
    if anchors_file.is_file():
        last = [a for a in parse_anchors(anchors_file.read_text(encoding="utf-8").splitlines()) if isinstance(a, Anchor)]
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
