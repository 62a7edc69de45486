"""Verifying the records store against its audit trail, and anchoring the trail's head in git.

``qms verify`` checks, in one pass over the trail and one over each record table:

1. the trail's guards: every append-only trigger present, enabled and unchanged;
2. the chain: every stored canonical form hashes to its hash and links to the one before;
3. the head against every witness of an earlier head: the anchors (the anchors file, and every
   version of it git ever committed) and the heads earlier verifications saw, so that events
   removed from the tail, or a rewritten chain, are caught;
4. the state: every record table holds exactly what the trail implies (qmsflow/store/state.py),
   each signature sits on the request its event signs;
5. each signature still matches the content it signed.

Every outcome is recorded (``verifications``), which also makes each verified head a witness.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from ..adapters import git
from ..domain.capabilities import declare
from ..domain.seals import KEYS_FILE, parse_keys
from ..domain.trail import Anchor, ChainReport, format_ts, parse_anchors, parse_event, verify_chain
from ..store import guards, trail
from ..store.db import GUARDS_REINSTALLED, Database
from ..store.state import StateReport, check_states
from ..store.tables import ApprovalRequestRow, DocumentVersionRow, SignatureRow, TrailEventRow, VerificationRow
from ..store.uow import UnitOfWork
from . import sealing, signed_records

ANCHORED = "store.anchored"  # the store's anchors file, recorded in the trail when first anchored there
ANCHORED_REF = "store:anchors"

Progress = Callable[[Iterable], Iterable] | None


@dataclass
class Witness:
    """An earlier head someone saw: seq and hash, and who saw it."""

    seq: int
    hash: str
    source: str  # e.g. "trail-anchors.jsonl line 4 (commit 1a2b3c4d5e)"
    anchor: bool = True  # else a head an earlier verification saw


@dataclass
class VerifyResult:
    report: ChainReport
    guard_problems: list[str] = field(default_factory=list)
    anchors_checked: int = 0
    anchors_uncommitted: int = 0
    anchor_problems: list[str] = field(default_factory=list)
    head_problems: list[str] = field(default_factory=list)
    state: StateReport | None = None
    signatures_checked: int = 0
    signature_problems: list[str] = field(default_factory=list)
    seals: sealing.SealReport | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def seal_problems(self) -> list[str]:
        return self.seals.problems if self.seals else []

    @property
    def state_problems(self) -> list[str]:
        return self.state.problems if self.state else []

    @property
    def ok(self) -> bool:
        return self.report.ok and not (
            self.guard_problems
            or self.anchor_problems
            or self.head_problems
            or self.signature_problems
            or self.seal_problems
            or (self.state is not None and self.state.total)
        )

    @property
    def problem(self) -> str | None:
        """One line for the ``verifications`` table and the dashboard banner."""
        parts = [str(self.report.broken)] if self.report.broken else []
        parts += self.guard_problems + self.head_problems + self.anchor_problems
        if self.state is not None and self.state.total:
            parts.append(f"{self.state.total} record state difference(s), first: {self.state.problems[0]}")
        parts += self.signature_problems + self.seal_problems
        return "; ".join(parts) or None


VERIFY = declare(
    "trail.verify",
    "`qms verify` recomputes the audit trail's hash chain and checks its append-only guards, every record "
    "table against what the trail implies, the trail's head against every anchor git committed, the seal of "
    "each signature, and each signature against the content it signed. It names the first broken entry and "
    "every other problem, exits with status 1 when anything is wrong, and records the outcome of each run.",
    proved_by=(
        "tests/integration/test_cli.py::test_verify_exits_1_and_names_the_seq_after_tampering",
        "tests/integration/test_store.py::test_truncated_tail_is_caught_by_an_anchor",
        "tests/integration/test_store.py::test_verification_outcomes_are_recorded",
    ),
    module=__name__,
)


def verify(
    db: Database, anchors_file: Path | None, progress: Progress = None, root: Path | None = None
) -> VerifyResult:
    """Check the trail, its witnesses and every record table against it; record the outcome.

    ``root``: the compliance repo, where the anchors files the trail says the store was anchored in and
    the signing keys file (``records/signing-keys.jsonl``) are; by default the repo of the store's sealer.
    """
    if root is None and db.sealer is not None:
        root = db.sealer.root
    with db.snapshot() as session:  # the trail and the tables as of one moment, while others write
        conn = session.connection()
        guard_problems = [str(p) for p in guards.check(conn)]
        rows: Iterable = trail.iter_rows(session)
        if progress is not None:
            rows = progress(rows)
        report, replay = verify_chain(rows)
        result = VerifyResult(report, guard_problems=guard_problems)
        witnesses = list(_verified_heads(session))
        witnesses += _anchor_witnesses(session, anchors_file, root, result)
        _check_witnesses(session, report, witnesses, result)
        if report.ok:
            result.state = check_states(session, replay)
            keys_file = (root / KEYS_FILE) if root is not None else None
            committed, key_problems = _committed_keys(keys_file)
            result.seals = sealing.check(session, sorted(replay.signatures.items()), committed, key_problems)
            result.notes += result.seals.notes
        else:
            result.notes.append("record states not checked: the chain is broken")
            result.notes.append("signature seals not checked: the chain is broken")
        result.signatures_checked, result.signature_problems = check_signed_content(session)
        steps_checked, step_problems = signed_records.check(session)
        result.signatures_checked += steps_checked
        result.signature_problems += step_problems
        repaired = session.scalar(select(TrailEventRow.seq).where(TrailEventRow.action == GUARDS_REINSTALLED).limit(1))
        if repaired is not None:
            result.notes.append(f"append-only triggers were found missing and reinstalled (first at seq {repaired})")
    with db.session() as session, session.begin():
        session.add(
            VerificationRow(
                at=datetime.now(UTC),
                ok=result.ok,
                count=report.count,
                head_seq=report.head_seq,
                head_hash=report.head_hash,
                problem=(result.problem or "")[:4000] or None,
            )
        )
    return result


# ------------------------------------------------------------------ witnesses of earlier heads


def _verified_heads(session) -> Iterator[Witness]:  # noqa: ANN001
    seen = set()
    for seq, digest, at in session.execute(
        select(VerificationRow.head_seq, VerificationRow.head_hash, VerificationRow.at)
        .where(VerificationRow.head_seq > 0)
        .order_by(VerificationRow.head_seq.desc(), VerificationRow.id)
    ):
        if (seq, digest) not in seen:
            seen.add((seq, digest))
            yield Witness(seq, digest, f"the verification of {at:%Y-%m-%d %H:%M} UTC", anchor=False)


def _check_witnesses(session, report: ChainReport, witnesses: list[Witness], result: VerifyResult) -> None:  # noqa: ANN001
    """Every earlier head is still in the trail with the same hash (set-based: one query per 500)."""
    wanted = sorted({w.seq for w in witnesses})
    stored: dict[int, str] = {}
    for i in range(0, len(wanted), 500):
        stored.update(
            session.execute(
                select(TrailEventRow.seq, TrailEventRow.hash).where(TrailEventRow.seq.in_(wanted[i : i + 500]))
            ).all()
        )
    head = report.head_seq if report.ok else None
    for w in witnesses:
        problems = result.anchor_problems if w.anchor else result.head_problems
        if w.seq not in stored:
            problems.append(
                f"{w.source} saw the trail at seq {w.seq}, but the trail now ends at seq "
                f"{head if head is not None else '?'}: events were removed"
            )
        elif stored[w.seq] != w.hash:
            problems.append(
                f"{w.source} saw seq {w.seq} with hash {w.hash[:16]}…, the trail now has {stored[w.seq][:16]}…: "
                "the trail was rewritten"
            )


def _witnessed_lines(
    path: Path, root: Path | None, problems: list[str], what: str
) -> tuple[list[tuple[str, str]], int | None]:
    """Every line an append-only file witnessed by git ever held, with where it was seen: each version git
    committed (its history read from the repo, so a file removed with its folder still has one), then the
    working copy. Rewrites are reported to ``problems``. Also returns the lines not committed yet (None
    outside a git repo)."""
    name = path.name
    repo = root if root is not None and path.is_relative_to(root) else path.parent
    while not repo.is_dir() and repo != repo.parent:
        repo = repo.parent
    relative = str(path.relative_to(repo)) if path.is_relative_to(repo) else name
    history = git.file_history(repo, relative) if repo.is_dir() else None
    seen: list[tuple[str, str]] = []
    committed: list[str] = []
    for change in history or []:
        start = len(committed)
        rewritten = not _append_only(committed, change.hunks)
        before = len(committed)
        _apply(committed, change.hunks)
        if rewritten:
            how = "removed the file" if before and not committed else f"changed or removed {what} committed before it"
            problems.append(
                f"{relative}: commit {change.commit[:10]} ({change.date}) {how} (the {what} file only grows)"
            )
            start = 0  # read the whole rewritten version (lines it removed stay witnesses)
        seen += [
            (committed[i], f"{relative} line {i + 1} (commit {change.commit[:10]})")
            for i in range(start, len(committed))
        ]
    current = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    if history and current[: len(committed)] != committed:
        if not path.exists():
            problems.append(
                f"{relative} is missing from the working tree (git history holds {len(committed)} line(s) of it)"
            )
        else:
            line = next((i for i, (a, b) in enumerate(zip(current, committed, strict=False), 1) if a != b), None)
            where = f"line {line}" if line else f"after line {len(current)} (lines removed)"
            problems.append(
                f"{relative}: the working tree copy differs from the committed one at {where}: {what} were rewritten"
            )
    seen += [(line, f"{relative} line {i}") for i, line in enumerate(current, 1)]
    return seen, (max(0, len(current) - len(committed)) if history is not None else None)


def _anchors(anchors_file: Path, root: Path | None, result: VerifyResult) -> list[Witness]:
    """Anchors from the file and from every version of it in git history; rewrites reported."""
    found: dict[tuple[int, str], Witness] = {}
    lines, uncommitted = _witnessed_lines(anchors_file, root, result.anchor_problems, "anchors")
    for text, source in lines:
        for anchor in parse_anchors([text]):
            if isinstance(anchor, str):
                if "(commit " not in source:  # a malformed line of the working copy
                    result.anchor_problems.append(f"{source}: {anchor.removeprefix('line 1: ')}")
            else:
                found.setdefault((anchor.seq, anchor.hash), Witness(anchor.seq, anchor.hash, source))
    if uncommitted is not None:
        result.anchors_uncommitted += uncommitted
    return list(found.values())


def anchored_files(session) -> list[tuple[int, str]]:  # noqa: ANN001
    """Where the trail says the store was anchored: (event seq, file), in order. The event is recorded just
    before the first anchor in that file, so the file must hold an anchor at or after its seq."""
    out = []
    for seq, canonical, digest in session.execute(
        select(TrailEventRow.seq, TrailEventRow.canonical, TrailEventRow.hash)
        .where(TrailEventRow.record == ANCHORED_REF, TrailEventRow.action == ANCHORED)
        .order_by(TrailEventRow.seq)
    ):
        after = parse_event(seq, canonical, digest).after or {}
        out.append((seq, str(after.get("file", ""))))
    return out


def _anchor_witnesses(session, anchors_file: Path | None, root: Path | None, result: VerifyResult) -> list[Witness]:  # noqa: ANN001
    """The anchors of the configured file and of every file the trail says the store was anchored in: once
    anchored, a file that is missing, emptied, rewritten or no longer the configured one is a problem."""
    files: dict[Path, None] = {}
    if anchors_file is not None:
        files[anchors_file] = None
    recorded = anchored_files(session)
    for event_seq, name in recorded:
        path = Path(name) if Path(name).is_absolute() or root is None else root / name
        files.setdefault(path, None)
        if anchors_file is not None and path != anchors_file:
            result.anchor_problems.append(
                f"the store was anchored in {name} (trail seq {event_seq}), but retention.anchors_file is now "
                f"{_shown(anchors_file, root)}: the anchors file stays where it was first anchored"
            )
    witnesses: dict[tuple[int, str], Witness] = {}
    latest: dict[Path, int] = {}
    for path in files:
        found = _anchors(path, root, result)
        latest[path] = max((w.seq for w in found), default=0)
        for w in found:
            witnesses.setdefault((w.seq, w.hash), w)
    for event_seq, name in recorded:
        path = Path(name) if Path(name).is_absolute() or root is None else root / name
        if latest[path] < event_seq:
            state = "is missing" if not path.exists() else "holds no anchor since (emptied or rewritten)"
            result.anchor_problems.append(
                f"the trail records (seq {event_seq}) that the store is anchored in {name}, which {state}: "
                "a store once anchored is always checked against its anchors"
            )
    result.anchors_checked = sum(1 for w in witnesses.values())
    return list(witnesses.values())


def _shown(path: Path, root: Path | None) -> str:
    return str(path.relative_to(root)) if root is not None and path.is_relative_to(root) else str(path)


def _committed_keys(keys_file: Path | None) -> tuple[dict, list[str]]:
    """The signing keys of the keys file and of every version of it in git history; problems named."""
    if keys_file is None:
        return {}, []
    problems: list[str] = []
    lines, _ = _witnessed_lines(keys_file, keys_file.parent.parent, problems, "signing keys")
    texts = list(dict.fromkeys(text for text, _ in lines))
    keys, malformed = parse_keys(texts, KEYS_FILE)
    return keys, problems + malformed


def _append_only(lines: list[str], hunks: list[tuple[int, int, list[str]]]) -> bool:
    return all(length == 0 and start == len(lines) for start, length, _ in hunks)


def _apply(lines: list[str], hunks: list[tuple[int, int, list[str]]]) -> None:
    for start, length, added in sorted(hunks, reverse=True):
        at = start if length == 0 else start - 1
        lines[at : at + length] = added


# ------------------------------------------------------------------ signed content


def check_signed_content(session) -> tuple[int, list[str]]:  # noqa: ANN001
    """Each e-signature still matches the content it signed (Part 11 §11.70): the request's content
    hash, and for a document version its current content. Set-based: three queries, no ORM rows."""
    problems: list[str] = []
    versions = {
        f"document-version:{doc}@{version}": digest
        for doc, version, digest in session.execute(
            select(DocumentVersionRow.document_id, DocumentVersionRow.version, DocumentVersionRow.content_sha256)
        )
    }
    requests = {
        rid: (subject, digest)
        for rid, subject, digest in session.execute(
            select(ApprovalRequestRow.id, ApprovalRequestRow.subject, ApprovalRequestRow.content_sha256)
        )
    }
    checked = 0
    for request_id, name, at, signed in session.execute(
        select(SignatureRow.request_id, SignatureRow.printed_name, SignatureRow.at, SignatureRow.content_sha256)
    ):
        checked += 1
        label = f"signature of {name} on {request_id} ({at:%Y-%m-%d %H:%M} UTC)"
        subject, digest = requests.get(request_id, (None, None))
        if digest != signed:
            problems.append(f"{label}: the request's content hash changed since signing")
        elif subject.startswith("document-version:") and versions.get(subject) != signed:
            doc_id, _, version = subject.removeprefix("document-version:").partition("@")
            problems.append(
                f"{label}: no longer verifies: {doc_id} v{version} content is now "
                f"{(versions.get(subject) or 'missing')[:16]}…, signed {signed[:16]}…"
            )
    return checked, problems


# ------------------------------------------------------------------ anchoring


@dataclass(frozen=True)
class Anchored:
    anchor: Anchor
    written: bool  # False: the head was already the last anchor
    commit: str | None  # the git commit that holds it, when the repo is a git repo
    git_repo: bool


ANCHOR = declare(
    "trail.anchor",
    "`qms anchor`, and qmsflow's hourly trail-anchor run, append the audit trail's head (sequence number, "
    "hash and time) to the anchors file of the compliance repo and commit it to git when the repo is a git "
    "repository, so that `qms verify` catches entries removed or a chain rewritten after that point.",
    proved_by=(
        "tests/integration/test_flows_in_process.py::test_trail_anchor_appends_the_head",
        "tests/integration/test_store.py::test_rewritten_chain_is_caught_by_an_anchor",
        "tests/integration/test_signatures_bound.py::test_anchors_file_removed_from_git_fails_verify",
    ),
    module=__name__,
)


def anchor(db: Database, anchors_file: Path, root: Path | None = None) -> Anchored:
    """Append the current head to ``anchors_file`` and commit that file when it lies in a git repo.

    Not written again when the head is already the last anchor; a previously written anchor that
    is not committed yet is committed now. The first anchor in a file is recorded in the trail
    (``store.anchored``, the file relative to ``root``): from then on verify fails if that file goes
    missing, is emptied or rewritten, or is no longer the configured one.
    """
    with db.read() as session:
        seq, digest = trail.head(session)
        recorded = {name for _, name in anchored_files(session)}
    if seq == 0:
        raise ValueError("the trail is empty: nothing to anchor yet")
    name = _shown(anchors_file, root)
    if name not in recorded:  # first recorded, then anchored: the anchor witnesses the record of its own file
        with UnitOfWork(db, "qmsflow") as uow:
            uow.record(ANCHORED, ANCHORED_REF, None, {"file": name})
            uow.commit()
        with db.read() as session:
            seq, digest = trail.head(session)
    written = True
    new = Anchor(seq, digest, format_ts(datetime.now(UTC)))
    if anchors_file.is_file():
        last = [
            a for a in parse_anchors(anchors_file.read_text(encoding="utf-8").splitlines()) if isinstance(a, Anchor)
        ]
        if last and last[-1].seq == seq and last[-1].hash == digest:
            new, written = last[-1], False
    if written:
        anchors_file.parent.mkdir(parents=True, exist_ok=True)
        with anchors_file.open("a", encoding="utf-8") as handle:
            handle.write(new.to_json() + "\n")
    folder = anchors_file.parent
    in_repo = git.is_repo(folder)
    commit = git.commit_file(folder, anchors_file.name, f"Anchor the audit trail at seq {new.seq}") if in_repo else None
    return Anchored(new, written, commit, in_repo)


def last_verification(db: Database) -> VerificationRow | None:
    with db.read() as session:
        return session.scalar(select(VerificationRow).order_by(VerificationRow.id.desc()).limit(1))


def start_trail(uow: UnitOfWork, about: dict) -> bool:
    """Open an empty store's trail with one ``store.initialised`` event (what, which schema, which qmsflow);
    commits. False when the trail had begun already."""
    if trail.count(uow.session) > 0:
        return False
    uow.record("store.initialised", "store:trail", None, about)
    uow.commit()
    return True
