"""The hash-chained audit trail: canonical form, hashing and verification.

Every change to a QMS record appends one event. An event's hash is the SHA-256 of the
canonical JSON of the event: an object with the keys ``action, actor, after, before,
prev_hash, record, seq, ts`` in that (sorted) order, no whitespace, UTF-8, and ``before`` and
``after`` embedded as canonical JSON values themselves. ``prev_hash`` is the hash of the event
with the previous sequence number (``GENESIS`` for the first), so that changing, removing or
reordering any event breaks the chain at that event's sequence number.

The storage layer keeps ``before``/``after`` as canonical JSON text, so that verification
hashes exactly what was stored and what is shown, and can build the canonical bytes by string
formatting (fast) rather than by re-serialising a dictionary.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64

try:  # the C encoder json.dumps uses for str with ensure_ascii=False
    from _json import encode_basestring as _encode_str  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - CPython always has it
    from json.encoder import py_encode_basestring as _encode_str


def canonical_json(value: Any) -> str:
    """Canonical JSON text of a value: sorted keys, no whitespace, UTF-8 characters kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def format_ts(moment: datetime) -> str:
    """UTC timestamp as stored in the trail, with microseconds: 2026-11-26T10:00:00.000000Z."""
    if moment.tzinfo is None:
        raise ValueError("trail timestamps must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_event(
    seq: int,
    ts: str,
    actor: str,
    action: str,
    record: str,
    before_json: str,
    after_json: str,
    prev_hash: str,
) -> bytes:
    """The canonical bytes of one event (``before_json``/``after_json`` already canonical)."""
    return (
        '{"action":%s,"actor":%s,"after":%s,"before":%s,"prev_hash":%s,"record":%s,"seq":%d,"ts":%s}'
        % (
            _encode_str(action),
            _encode_str(actor),
            after_json,
            before_json,
            _encode_str(prev_hash),
            _encode_str(record),
            seq,
            _encode_str(ts),
        )
    ).encode("utf-8")


def event_hash(canonical: bytes) -> str:
    return hashlib.sha256(canonical).hexdigest()


@dataclass(frozen=True, slots=True)
class TrailEvent:
    """One event as stored. ``record`` is a reference like ``document:SOP-DOC-001``."""

    seq: int
    ts: str
    actor: str
    action: str
    record: str
    before_json: str
    after_json: str
    prev_hash: str
    hash: str

    def canonical(self) -> bytes:
        return canonical_event(
            self.seq,
            self.ts,
            self.actor,
            self.action,
            self.record,
            self.before_json,
            self.after_json,
            self.prev_hash,
        )

    @property
    def before(self) -> Any:
        return json.loads(self.before_json)

    @property
    def after(self) -> Any:
        return json.loads(self.after_json)


def make_event(
    seq: int,
    moment: datetime,
    actor: str,
    action: str,
    record: str,
    before: Any,
    after: Any,
    prev_hash: str,
) -> TrailEvent:
    """Build the next event of a chain, hash included."""
    if not actor:
        raise ValueError("every trail event needs an actor")
    ts = format_ts(moment)
    before_json = canonical_json(before)
    after_json = canonical_json(after)
    digest = event_hash(canonical_event(seq, ts, actor, action, record, before_json, after_json, prev_hash))
    return TrailEvent(seq, ts, actor, action, record, before_json, after_json, prev_hash, digest)


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first place where the chain does not verify."""

    seq: int
    problem: str  # "content changed" | "link broken" | "gap" | "anchor mismatch"
    detail: str

    def __str__(self) -> str:
        return f"seq {self.seq}: {self.problem}: {self.detail}"


@dataclass(frozen=True, slots=True)
class ChainReport:
    count: int
    head_seq: int
    head_hash: str
    broken: ChainBreak | None = None

    @property
    def ok(self) -> bool:
        return self.broken is None


Row = tuple[int, str, str, str, str, str, str, str, str]
"""seq, ts, actor, action, record, before_json, after_json, prev_hash, hash."""


def verify_rows(rows: Iterable[Row]) -> ChainReport:
    """Recompute the chain over rows ordered by seq; stop at the first break.

    Rows are plain tuples (not ``TrailEvent``) because this loop is the hot path of
    ``qms verify`` over millions of events.
    """
    sha256 = hashlib.sha256
    enc = _encode_str
    fmt = '{"action":%s,"actor":%s,"after":%s,"before":%s,"prev_hash":%s,"record":%s,"seq":%d,"ts":%s}'
    expected_seq = 1
    prev = GENESIS
    count = 0
    for seq, ts, actor, action, record, before_json, after_json, prev_hash, stored_hash in rows:
        if seq != expected_seq:
            if seq > expected_seq:
                detail = f"expected seq {expected_seq}, next stored event is seq {seq}: events are missing"
            else:
                detail = f"seq {seq} appears again or out of order after seq {expected_seq - 1}"
            return ChainReport(count, expected_seq - 1, prev, ChainBreak(expected_seq, "gap", detail))
        canonical = (
            fmt % (enc(action), enc(actor), after_json, before_json, enc(prev_hash), enc(record), seq, enc(ts))
        ).encode("utf-8")
        digest = sha256(canonical).hexdigest()
        if digest != stored_hash:
            return ChainReport(
                count,
                seq - 1,
                prev,
                ChainBreak(
                    seq, "content changed", f"stored hash {stored_hash[:16]}… but the content hashes to {digest[:16]}…"
                ),
            )
        if prev_hash != prev:
            return ChainReport(
                count,
                seq - 1,
                prev,
                ChainBreak(
                    seq,
                    "link broken",
                    f"prev_hash {prev_hash[:16]}… does not match the hash {prev[:16]}… of seq {seq - 1}",
                ),
            )
        prev = stored_hash
        expected_seq += 1
        count += 1
    return ChainReport(count, expected_seq - 1, prev)


@dataclass(frozen=True, slots=True)
class Anchor:
    """A published head of the chain: written to a file that git keeps as an outside witness."""

    seq: int
    hash: str
    anchored_at: str
    line: int = 0

    def to_json(self) -> str:
        return canonical_json({"anchored_at": self.anchored_at, "hash": self.hash, "seq": self.seq})


def parse_anchors(lines: Iterable[str]) -> Iterator[Anchor | str]:
    """Anchors from the lines of an anchors file; a malformed line yields an error message instead."""
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        try:
            data = json.loads(text)
            yield Anchor(int(data["seq"]), str(data["hash"]), str(data["anchored_at"]), number)
        except (ValueError, KeyError, TypeError) as exc:
            yield f"line {number}: not an anchor ({exc.__class__.__name__}: {exc})"
