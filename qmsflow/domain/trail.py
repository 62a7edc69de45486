"""The hash-chained audit trail: canonical form, hashing and verification.

Every change to a QMS record appends one event. An event's hash is the SHA-256 of the
canonical JSON of the event: an object with the keys ``action, actor, after, before,
prev_hash, record, seq, ts`` in that (sorted) order, no whitespace, UTF-8, and ``before`` and
``after`` embedded as canonical JSON values themselves. ``prev_hash`` is the hash of the event
with the previous sequence number (``GENESIS`` for the first), so that changing, removing or
reordering any event breaks the chain at that event's sequence number.

The store keeps each event as its canonical text, hashed as stored: verification reads the
canonical form and its hash and nothing else (seq and prev_hash are read from the canonical
form itself); the columns used to search the trail are generated from it by the database
(docs/adr/0011-records-verified-against-the-trail.md).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from json.decoder import scanstring as _scan  # the C string scanner of json
from typing import Any

from .capabilities import declare

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


APPEND_ONLY = declare(
    "trail.append_only",
    "qmsflow writes each change to its records (controlled documents and their versions, submissions, "
    "approval requests, signatures and refused signatures, CAPAs and the other records, deletions) to an "
    "append-only audit trail, in the same transaction as the change. Each entry holds the time, the actor, "
    "the action, the record, its state before and after, and the hash of the previous entry, so that the "
    "entries form a hash chain. The database refuses to change or delete an entry: a correction is a new "
    "entry.",
    proved_by=(
        "tests/integration/test_store.py::test_trail_refuses_update_and_delete",
        "tests/integration/test_store.py::test_change_and_event_commit_together_or_not_at_all",
        "tests/unit/test_trail_domain.py::test_any_single_changed_byte_is_detected_at_its_event",
    ),
    module=__name__,
)


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


@dataclass(frozen=True, slots=True)
class Canonical:
    """A value already written as canonical JSON (``canonical_json``), for ``make_event`` to embed as is.

    For writers of many events whose ``after`` is the next one's ``before`` (the large demo).
    """

    text: str


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
    before_json = before.text if isinstance(before, Canonical) else canonical_json(before)
    after_json = after.text if isinstance(after, Canonical) else canonical_json(after)
    digest = event_hash(canonical_event(seq, ts, actor, action, record, before_json, after_json, prev_hash))
    return TrailEvent(seq, ts, actor, action, record, before_json, after_json, prev_hash, digest)


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first place where the chain does not verify."""

    seq: int
    problem: str  # "content changed" | "link broken" | "gap" | "malformed"
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


Stored = tuple[int, str, str]
"""An event as stored: seq, canonical text (exactly the hashed bytes, as UTF-8), hash."""

# ------------------------------------------------------------------ state events and notes
#
# An event on a tracked record (a row of a record table, named by its ref, e.g. ``record:CAPA-2026-0001``)
# is a *state event*: its ``after`` is the row's full state (``null`` once deleted), so that replaying
# the trail gives the state every record table must hold. Events that only note something about a
# record (a refusal, a reminder, an escalation, a run of a process) are *notes* and are declared here,
# explicitly: an undeclared event on a tracked ref is taken as a state event, and the store refuses
# to commit it unless it really holds the row's state (qmsflow/store/state.py), so a new kind of
# note cannot slip past verification unnoticed.

NOTE_ACTIONS = frozenset(
    {
        "approval.refused",
        "approval.reminded",
        "approval.escalated",
        "capa.escalated",
        "capa.advance-refused",
        "capa.jira-transition-refused",
        "web.refused",
        "web.sign-in-failed",
        "flow.refused",
        "management-review.start-refused",
        "management-review.submit-refused",
    }
)
NOTE_SUFFIXES = (
    ".delete-refused",
    ".hold-refused",
    ".jira-transition-refused",
    ".reminded",
    ".escalated",
)  # <kind>.delete-refused: a deletion refused under retention; <kind>.reminded/.escalated: a rung of a
# deadline ladder (services/deadlines.py)
NOTE_PREFIXES = ("process.run-",)  # process.run-<state>: a flow run of a process (process_runs is operational)
# before migration 0008, token events were recorded on the person's ref and never held a person's state
LEGACY_NOTES = frozenset({("token.created", "person"), ("token.revoked", "person")})
SIGNED = "approval.signed"  # holds a signature's state; its ref names the request it signs

IGNORED, STATE, NOTE, SIGNATURE, DEPENDS = 0, 1, 2, 3, 4
_LEGACY_ACTIONS = frozenset(action for action, _ in LEGACY_NOTES)


def action_kind(action: str) -> int:
    """What an action makes of an event on a record, as far as the action alone says it (DEPENDS: on the entity)."""
    if action == SIGNED:
        return SIGNATURE
    if action in NOTE_ACTIONS or action.endswith(NOTE_SUFFIXES) or action.startswith(NOTE_PREFIXES):
        return NOTE
    return DEPENDS if action in _LEGACY_ACTIONS else STATE


def is_note(action: str, entity: str) -> bool:
    kind = action_kind(action)
    return kind == NOTE or (kind == DEPENDS and (action, entity) in LEGACY_NOTES)


def event_kind(action: str, entity: str, tracked: frozenset[str]) -> int:
    """STATE, NOTE, SIGNATURE or IGNORED (an entity no record table holds, e.g. ``store`` of ``store:trail``)."""
    if entity not in tracked:
        return IGNORED
    if action == SIGNED:
        return SIGNATURE
    return NOTE if is_note(action, entity) else STATE


# ------------------------------------------------------------------ reading stored canonical forms

_HEAD = '{"action":"'
_PREV = ',"prev_hash":"'
_RECORD = '","record":"'


def fields_of(canonical: str) -> tuple[str, str, str]:
    """(action, actor, record) of a canonical event, without parsing before/after.

    ``ValueError`` when the text is not a canonical event. The top-level ``prev_hash`` key is the
    last occurrence of ``,"prev_hash":"`` (only the record string, the seq and the ts follow it,
    and a JSON string cannot contain an unescaped quote).
    """
    if not canonical.startswith(_HEAD):
        raise ValueError("not a canonical event")
    action, end = _scan(canonical, 11)
    if not canonical.startswith(',"actor":"', end):
        raise ValueError("not a canonical event")
    actor, _ = _scan(canonical, end + 10)
    at = canonical.rfind(_PREV)
    if at < 0 or not canonical.startswith(_RECORD, at + 78):
        raise ValueError("not a canonical event")
    record, _ = _scan(canonical, at + 90)
    return action, actor, record


def after_offset(canonical: str) -> int:
    """Where the ``after`` value starts in a canonical event."""
    _, end = _scan(canonical, 11)
    _, end = _scan(canonical, end + 10)
    return end + 9  # ,"after":


def after_is(canonical: str, expected_json: str) -> bool:
    """Whether the event's ``after`` is exactly the canonical JSON ``expected_json`` (no parsing).

    A complete JSON value followed by ``,"before":`` cannot be a prefix of a different value.
    """
    start = after_offset(canonical)
    return canonical.startswith(expected_json, start) and canonical.startswith(',"before":', start + len(expected_json))


def parse_event(seq: int, canonical: str, digest: str) -> TrailEvent:
    """The event a stored canonical form holds (before/after as canonical JSON text)."""
    data = json.loads(canonical)
    return TrailEvent(
        seq,
        data["ts"],
        data["actor"],
        data["action"],
        data["record"],
        canonical_json(data["before"]),
        canonical_json(data["after"]),
        data["prev_hash"],
        digest,
    )


@dataclass
class Replay:
    """What the trail says the record tables hold: the last state event per ref, and every signature.

    Values are the canonical forms of the events (their ``after`` is extracted only when compared).
    """

    states: dict[str, str] = field(default_factory=dict)
    signatures: dict[int, str] = field(default_factory=dict)


def _broken(count: int, prev: str, replay: Replay, seq: int, problem: str, detail: str) -> tuple[ChainReport, Replay]:
    return ChainReport(count, seq - 1, prev, ChainBreak(seq, problem, detail)), replay


def verify_chain(rows: Iterable[Stored]) -> tuple[ChainReport, Replay]:
    """Recompute the chain over stored events ordered by seq; stop at the first break.

    Each stored canonical form is hashed as stored; its seq and prev_hash are read from the
    canonical form itself (so no other column needs to be trusted) and checked against the
    position in the chain. On the way, the last state event of every tracked ref and every
    signature event are kept for the state check (``Replay``).

    This loop is the hot path of ``qms verify`` over millions of events: plain tuples, C helpers
    (``scanstring``, ``sha256``), a per-action cache of the event's kind.
    """
    sha256 = hashlib.sha256
    scan = _scan
    kinds: dict[str, int] = {}
    replay = Replay()
    states, signatures = replay.states, replay.signatures
    expected_seq = 1
    prev = GENESIS
    count = 0

    for seq, canonical, stored_hash in rows:
        if seq != expected_seq:
            if seq > expected_seq:
                return _broken(
                    count,
                    prev,
                    replay,
                    expected_seq,
                    "gap",
                    f"expected seq {expected_seq}, next stored event is seq {seq}: events are missing",
                )
            return _broken(
                count,
                prev,
                replay,
                expected_seq,
                "gap",
                f"seq {seq} appears again or out of order after seq {expected_seq - 1}",
            )
        digest = sha256(canonical.encode("utf-8")).hexdigest()
        if digest != stored_hash:
            return _broken(
                count,
                prev,
                replay,
                seq,
                "content changed",
                f"stored hash {stored_hash[:16]}… but the content hashes to {digest[:16]}…",
            )
        at = canonical.rfind(_PREV)
        linked = canonical[at + 14 : at + 78] if at > 0 else ""
        if linked != prev:
            return _broken(
                count,
                prev,
                replay,
                seq,
                "link broken",
                f"prev_hash {linked[:16]}… does not match the hash {prev[:16]}… of seq {seq - 1}",
            )
        try:
            if not (canonical.startswith(_HEAD) and canonical.startswith(_RECORD, at + 78)):
                raise ValueError("its keys are not where the canonical form puts them")
            record, end = scan(canonical, at + 90)
            if canonical[end : end + 7] != ',"seq":' or canonical[end + 7 : -36] != str(seq):
                raise ValueError(f"the event holds another seq than its position {seq}")
            action, _ = scan(canonical, 11)
        except (ValueError, IndexError) as exc:
            return _broken(count, prev, replay, seq, "malformed", f"not a canonical event ({exc})")
        kind = kinds.get(action)
        if kind is None:
            kind = kinds[action] = action_kind(action)
        if kind == STATE:
            states[record] = canonical  # refs of no record table too: the state check skips them
        elif kind == SIGNATURE:
            signatures[seq] = canonical
        elif kind == DEPENDS and not is_note(action, record.partition(":")[0]):
            states[record] = canonical
        prev = stored_hash
        expected_seq += 1
        count += 1
    return ChainReport(count, expected_seq - 1, prev), replay


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
