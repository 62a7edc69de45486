"""Sealing signatures with a signing key the database does not hold, and checking the seals (ADR 0018).

``Sealer`` is a process's signing key for one records store: ``approvals.decide`` asks it for a seal
function (``seal_for(uow)``), which the trail writer calls with the bytes of the signature's event.
The key is registered on first use: ``signing.key-added`` in the same transaction as the first signature
it seals, then one line in ``records/signing-keys.jsonl``, committed to git, once that transaction has
committed. ``qms key add`` and ``qms key retire`` register and retire keys explicitly (a key rotation,
docs/operations.md).

``check`` (``qms verify``): every signature event after the point from which seals are required (the
``store.seals-required`` event migration 0013 appended to an older store; the whole trail of a newer
one) carries a valid seal of a key that the trail and the git-committed keys file both register, and
that was not retired before the event.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..adapters import git, keys
from ..domain.errors import DomainError
from ..domain.seals import (
    ALG,
    KEY_ADDED,
    KEY_RETIRED,
    KEYS_FILE,
    REF,
    KeyInfo,
    added_line,
    compare_registries,
    parse_keys,
    retired_line,
    unsealed,
)
from ..domain.trail import format_ts, parse_event
from ..store.tables import TrailEventRow
from ..store.uow import UnitOfWork

log = logging.getLogger("qmsflow.sealing")

SEALS_REQUIRED = "store.seals-required"  # appended by migration 0013 to a trail that existed before it
KEY_FILE_ENV = "QMS_SIGNING_KEY_FILE"
DEFAULT_KEY_FILE = ".qms/signing-key.pem"


class NoSigningKey(DomainError):
    """This process cannot seal signatures: no usable signing key (the message says what to do)."""


def key_file(root: Path) -> tuple[Path, bool]:
    """Where this process's signing key is, and whether it was named explicitly (``QMS_SIGNING_KEY_FILE``)."""
    named = os.environ.get(KEY_FILE_ENV, "").strip()
    if named:
        return Path(named).expanduser(), True
    return root / DEFAULT_KEY_FILE, False


def trail_keys(session: Session) -> dict[str, KeyInfo]:
    """The signing keys the trail registers (``signing.key-added`` / ``signing.key-retired`` on store:signing-keys)."""
    found: dict[str, KeyInfo] = {}
    rows = session.execute(
        select(TrailEventRow.seq, TrailEventRow.canonical, TrailEventRow.hash)
        .where(TrailEventRow.record == REF)
        .order_by(TrailEventRow.seq)
    )
    for seq, canonical, digest in rows:
        event = parse_event(seq, canonical, digest)
        after = event.after if isinstance(event.after, dict) else {}
        key = str(after.get("key", ""))
        if event.action == KEY_ADDED and key and key not in found:
            found[key] = KeyInfo(key, str(after.get("public", "")), seq, sources=[f"trail seq {seq}"])
        elif event.action == KEY_RETIRED and key in found and found[key].until_seq is None:
            found[key].until_seq = seq
    return found


def file_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.is_file() else []


def _append_line(root: Path, line: str, message: str) -> None:
    """Append ``line`` to the keys file unless it is there, and commit the file in a git repo."""
    path = root / KEYS_FILE
    if line not in file_lines(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
    if git.is_repo(path.parent) and git.commit_file(path.parent, path.name, message) is None:
        log.warning("could not commit %s to git: commit it yourself (it witnesses the signing keys)", path)


class Sealer:
    """The signing key of this process for the store of the compliance repo at ``root``."""

    def __init__(self, root: Path, *, generate: bool = True, path: Path | None = None):
        """``generate``: make the default key file when it is missing (the embedded stack's own store); a
        production process is given its key (``QMS_SIGNING_KEY_FILE``) and never makes one."""
        self.root = root
        default, named = key_file(root)
        self.path = path or default
        self.explicit = named or path is not None
        self.generate = generate and not self.explicit
        self._key: keys.SigningKey | None = None

    @property
    def keys_file(self) -> Path:
        return self.root / KEYS_FILE

    def key(self) -> keys.SigningKey:
        """This process's key; the default file is made when missing, a named one (``QMS_SIGNING_KEY_FILE``) never."""
        if self._key is None:
            if not self.path.exists() and self.generate:
                log.warning("no signing key at %s: made a new one (registered when it first seals)", self.path)
                self._key = keys.generate(self.path)
            else:
                try:
                    self._key = keys.load(self.path)
                except keys.KeyFileError as exc:
                    hint = (
                        f" (named by {KEY_FILE_ENV})"
                        if self.explicit
                        else f": set {KEY_FILE_ENV} to the store's signing key, or sign in the dashboard or with the "
                        "approvals API, whose process holds it"
                    )
                    raise NoSigningKey(f"this process cannot seal signatures: {exc}{hint}") from None
        return self._key

    def seal_for(self, uow: UnitOfWork) -> Callable[[bytes], dict[str, Any]]:
        """The seal function for a signature in ``uow``; registers the key in this transaction if it is new."""
        key = self.key()
        registered = trail_keys(uow.session).get(key.id)
        if registered is None:
            event = uow.record(
                KEY_ADDED,
                REF,
                None,
                {"key": key.id, "alg": ALG, "public": key.public, "file": KEYS_FILE},
                actor="qmsflow",
            )
            line = added_line(key.id, key.public, event.seq, event.ts)
            uow.after_commit(lambda: self._write(line, f"Register signing key {key.id}"))
        elif registered.until_seq is not None:
            raise NoSigningKey(
                f"this process's signing key {key.id} ({self.path}) was retired at trail seq {registered.until_seq}: "
                "install the key that replaced it (docs/operations.md, key rotation)"
            )
        elif key.id not in parse_keys(file_lines(self.keys_file), KEYS_FILE)[0]:  # a write lost after a commit
            at = _event_ts(uow.session, registered.from_seq)
            line = added_line(key.id, key.public, registered.from_seq, at)
            uow.after_commit(lambda: self._write(line, f"Register signing key {key.id}"))
        return lambda message: {"alg": ALG, "key": key.id, "sig": key.sign(message)}

    def _write(self, line: str, message: str) -> None:
        try:
            _append_line(self.root, line, message)
        except OSError as exc:  # the signature is committed; the next one writes the line again
            log.error("could not write %s: %s (the next signature tries again)", self.keys_file, exc)


def _event_ts(session: Session, seq: int) -> str:
    row = session.execute(select(TrailEventRow.ts).where(TrailEventRow.seq == seq)).first()
    return row[0] if row else format_ts(datetime.now(UTC))


# ------------------------------------------------------------------ explicit registration and retirement


@dataclass(frozen=True)
class KeyChange:
    key: str
    seq: int
    file: Path


def add_key(uow: UnitOfWork, root: Path, path: Path) -> KeyChange:
    """Make a new key at ``path`` and register it (trail, then the keys file); commits. The old keys stay
    valid until they are retired: install the new key in every signing process first."""
    key = keys.generate(path)
    event = uow.record(KEY_ADDED, REF, None, {"key": key.id, "alg": ALG, "public": key.public, "file": KEYS_FILE})
    line = added_line(key.id, key.public, event.seq, event.ts)
    uow.after_commit(lambda: _append_line(root, line, f"Register signing key {key.id}"))
    uow.commit()
    return KeyChange(key.id, event.seq, path)


def retire_key(uow: UnitOfWork, root: Path, key_id: str, reason: str) -> KeyChange:
    """Retire a key: it seals nothing after this event (commits). A compromised key is retired at once."""
    registered = trail_keys(uow.session)
    info = registered.get(key_id)
    if info is None:
        raise DomainError(f"no signing key {key_id} is registered (see 'qms key status')")
    if info.until_seq is not None:
        raise DomainError(f"signing key {key_id} was retired already (at trail seq {info.until_seq})")
    if not [k for k, other in registered.items() if k != key_id and other.until_seq is None]:
        raise DomainError(
            f"{key_id} is the only active signing key: add its successor first ('qms key add'), install it "
            "in every signing process, then retire this one"
        )
    event = uow.record(KEY_RETIRED, REF, None, {"key": key_id, "reason": reason})
    line = retired_line(key_id, event.seq, event.ts)
    uow.after_commit(lambda: _append_line(root, line, f"Retire signing key {key_id}"))
    uow.commit()
    return KeyChange(key_id, event.seq, root / KEYS_FILE)


@dataclass(frozen=True)
class KeyRow:
    key: str
    from_seq: int
    until_seq: int | None
    in_trail: bool
    in_file: bool


@dataclass
class KeyStatus:
    keys: list[KeyRow]
    held: str | None  # the id of the key this process would seal with
    held_path: Path | None
    held_problem: str = ""
    problems: list[str] = field(default_factory=list)


def status(session: Session, sealer: Sealer | None) -> KeyStatus:
    """The keys the trail and the committed keys file register, and the key this process holds (``qms key status``)."""
    recorded = trail_keys(session)
    root = sealer.root if sealer else None
    committed, problems = parse_keys(file_lines(root / KEYS_FILE), KEYS_FILE) if root else ({}, [])
    rows = []
    for key in sorted(set(recorded) | set(committed), key=lambda k: (recorded.get(k) or committed[k]).from_seq):
        info = recorded.get(key) or committed[key]
        rows.append(KeyRow(key, info.from_seq, info.until_seq, key in recorded, key in committed))
    problems = problems + compare_registries(recorded, committed, KEYS_FILE)
    if sealer is None:
        return KeyStatus(rows, None, None, "no compliance repo", problems)
    if not sealer.path.exists():
        made = "made at the first signature" if sealer.generate else f"set {KEY_FILE_ENV}"
        return KeyStatus(rows, None, sealer.path, f"no key file at {sealer.path}: {made}", problems)
    try:
        held = sealer.key().id
    except NoSigningKey as exc:
        return KeyStatus(rows, None, sealer.path, str(exc), problems)
    return KeyStatus(rows, held, sealer.path, "", problems)


# ------------------------------------------------------------------ verification


@dataclass
class SealReport:
    sealed: int = 0
    legacy: int = 0  # signatures made before seals were required
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def seals_required_after(session: Session) -> int:
    """The seq after which every signature event must carry a seal (0: the whole trail)."""
    row = session.execute(
        select(TrailEventRow.seq).where(TrailEventRow.action == SEALS_REQUIRED).order_by(TrailEventRow.seq).limit(1)
    ).first()
    return row[0] if row else 0


def check(
    session: Session,
    signatures: Iterable[tuple[int, str]],
    committed: dict[str, KeyInfo],
    committed_problems: list[str],
    limit: int = 200,
) -> SealReport:
    """Check every signature event's seal against the keys both the trail and the committed file register."""
    report = SealReport()
    recorded = trail_keys(session)
    report.problems += committed_problems
    report.problems += compare_registries(recorded, committed, KEYS_FILE)
    trusted = {k: v for k, v in recorded.items() if k in committed and committed[k].public == v.public}
    required_after = seals_required_after(session)
    for seq, canonical in signatures:
        if seq <= required_after:
            report.legacy += 1
            continue
        message, proof = unsealed(canonical)
        problem = None
        if proof is None:
            problem = "carries no seal (a signature qmsflow made would): it was not made by qmsflow"
        else:
            info = trusted.get(str(proof.get("key")))
            if info is None:
                problem = f"is sealed by {proof.get('key')!r}, which is not a signing key the trail and {KEYS_FILE} both register"
            elif not info.covers(seq):
                problem = f"is sealed by {info.key}, retired at seq {info.until_seq}, after its retirement"
            elif proof.get("alg") != ALG or not keys.check(info.public, message, str(proof.get("sig", ""))):
                problem = f"has a seal that does not verify with {info.key}: the event is not the one that key sealed"
        if problem:
            if len(report.problems) < limit:
                report.problems.append(f"the signature event at seq {seq} {problem}")
        else:
            report.sealed += 1
    if report.legacy:
        report.notes.append(
            f"{report.legacy} signature(s) made before seals were required (up to seq {required_after}) carry no seal"
        )
    return report
