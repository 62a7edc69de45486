"""Seals: a signing key's proof over a signature's trail event, and the registry of signing keys (ADR 0018).

Whoever holds the records store's database credential can append a well-formed, correctly chained
event at the head of the trail, a forged ``approval.signed`` included. A seal is what that credential
alone cannot produce: the qmsflow process that makes a signature (the web app, ``qms approve``) holds
an Ed25519 key outside the store and signs the signature's event as it would be without the proof
(``message``): its seq, time, actor, ref, the signature and the hash of the event before it. The proof
is then part of the event (``after.proof``) and of the signature row.

Which keys count is witnessed outside the database: each key is registered in the trail
(``signing.key-added``) *and* in ``records/signing-keys.jsonl``, committed to git; a key retired
(``signing.key-retired``) seals nothing after the head at its retirement. ``qms verify`` trusts a key
only when the trail and the committed file agree on it.

Pure: the cryptography itself is in ``adapters/keys.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .trail import TrailEvent, canonical_event, canonical_json

PREFIX = b"qmsflow signature seal v1\n"
KEYS_FILE = "records/signing-keys.jsonl"
REF = "store:signing-keys"
KEY_ADDED = "signing.key-added"
KEY_RETIRED = "signing.key-retired"
ALG = "ed25519"


def message(event: TrailEvent) -> bytes:
    """The bytes a seal signs: a fixed prefix and the canonical form of the event without its proof."""
    return PREFIX + event.canonical()


def unsealed(canonical: str) -> tuple[bytes, dict[str, Any] | None]:
    """From a stored (sealed) event: the bytes its seal signed, and the proof (None when it has none)."""
    data = json.loads(canonical)
    after = data.get("after")
    proof = after.pop("proof", None) if isinstance(after, dict) else None
    text = canonical_event(
        data["seq"],
        data["ts"],
        data["actor"],
        data["action"],
        data["record"],
        canonical_json(data["before"]),
        canonical_json(after),
        data["prev_hash"],
    )
    return PREFIX + text, proof if isinstance(proof, dict) else (None if proof is None else {"malformed": proof})


# ------------------------------------------------------------------ the registry of keys


@dataclass
class KeyInfo:
    """A signing key as registered: seals events after ``from_seq`` and, once retired, up to ``until_seq``."""

    key: str
    public: str
    from_seq: int
    until_seq: int | None = None
    sources: list[str] = field(default_factory=list)

    def covers(self, seq: int) -> bool:
        return seq > self.from_seq and (self.until_seq is None or seq <= self.until_seq)


def added_line(key: str, public: str, seq: int, at: str) -> str:
    return canonical_json({"event": "added", "key": key, "alg": ALG, "public": public, "from_seq": seq, "at": at})


def retired_line(key: str, seq: int, at: str) -> str:
    return canonical_json({"event": "retired", "key": key, "until_seq": seq, "at": at})


def parse_keys(lines: list[str], source: str) -> tuple[dict[str, KeyInfo], list[str]]:
    """Keys from the lines of a keys file; problems named by line (malformed, contradictory)."""
    keys: dict[str, KeyInfo] = {}
    problems: list[str] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            kind, key = entry["event"], entry["key"]
            if kind == "added":
                info = KeyInfo(key, str(entry["public"]), int(entry["from_seq"]), sources=[f"{source} line {number}"])
                if key in keys and (keys[key].public, keys[key].from_seq) != (info.public, info.from_seq):
                    problems.append(f"{source} line {number}: key {key} is added again with other values")
                keys.setdefault(key, info)
            elif kind == "retired":
                if key not in keys:
                    problems.append(f"{source} line {number}: key {key} is retired before it is added")
                else:
                    keys[key].until_seq = int(entry["until_seq"])
            else:
                problems.append(f"{source} line {number}: unknown entry {kind!r}")
        except (ValueError, KeyError, TypeError):
            problems.append(f"{source} line {number}: not a signing-key entry")
    return keys, problems


def compare_registries(trail: dict[str, KeyInfo], committed: dict[str, KeyInfo], file: str) -> list[str]:
    """Problems where the trail and the committed keys file disagree: each key must be in both, alike."""
    problems = []
    for key, info in trail.items():
        other = committed.get(key)
        if other is None:
            problems.append(
                f"signing key {key} was registered in the trail (seq {info.from_seq}) but is not in {file}: "
                "a key the git-witnessed file does not name seals nothing"
            )
        elif (other.public, other.from_seq) != (info.public, info.from_seq):
            problems.append(f"signing key {key}: the trail and {file} disagree on its public key or first seq")
        elif other.until_seq != info.until_seq:
            problems.append(
                f"signing key {key}: retired at seq {info.until_seq} in the trail, at {other.until_seq} in {file}"
            )
    for key in committed.keys() - trail.keys():
        problems.append(f"signing key {key} is in {file} but was never registered in the trail")
    return problems
