"""Declarative stages: every QMS procedure declares its stages as a table, and one engine checks a move.

A procedure lists its stages and the moves between them; each move names the fields it needs, whether
entering its target needs an approved signature, and optionally a rule of its own (a function that
checks and normalises the data, or raises). The engine refuses a move that is not in the table, names
the first missing field, and never knows a procedure by name.

    CAPA = StageMachine(
        kind="capa",
        stages=(Stage("opened", "Opened"), Stage("containment", "Containment"), …),
        moves=(Move("opened", "containment", needs=("correction",)), …),
    )
    data = CAPA.check("CAPA-2026-0001", current="opened", target="containment", fields={...}, record={...})
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import DomainError, InvalidTransition

Rule = Callable[[str, Mapping[str, Any], dict[str, Any]], dict[str, Any]]
"""(record id, the record's stage data so far, the fields given) -> the stage data to store; raises to refuse."""


class MissingField(DomainError):
    """A move lacks data; the message names the field."""


@dataclass(frozen=True)
class Stage:
    key: str
    title: str
    final: bool = False


@dataclass(frozen=True)
class Move:
    source: str
    target: str
    needs: tuple[str, ...] = ()
    signed: bool = False  # entering ``target`` by this move needs an approved signature
    rule: Rule | None = None
    label: str = ""  # how the move is named to people when it differs from entering the target


@dataclass(frozen=True)
class StageMachine:
    kind: str
    stages: tuple[Stage, ...]
    moves: tuple[Move, ...]
    _by_source: dict[str, list[Move]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        keys = [s.key for s in self.stages]
        if len(set(keys)) != len(keys):
            raise ValueError(f"{self.kind}: a stage is declared twice")
        for move in self.moves:
            for end in (move.source, move.target):
                if end not in keys:
                    raise ValueError(f"{self.kind}: move {move.source} -> {move.target} names no stage {end!r}")
            if self.stage(move.source).final:
                raise ValueError(f"{self.kind}: {move.source} is final, no move may leave it")
            self._by_source.setdefault(move.source, []).append(move)

    # ------------------------------------------------------------------ the table

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(s.key for s in self.stages)

    @property
    def titles(self) -> dict[str, str]:
        return {s.key: s.title for s in self.stages}

    @property
    def signed_targets(self) -> frozenset[str]:
        return frozenset(m.target for m in self.moves if m.signed)

    @property
    def final(self) -> frozenset[str]:
        return frozenset(s.key for s in self.stages if s.final)

    def stage(self, key: str) -> Stage:
        for stage in self.stages:
            if stage.key == key:
                return stage
        raise InvalidTransition(f"{key!r} is not a {self.kind} stage (stages: {', '.join(self.keys)})")

    def next_stages(self, current: str) -> list[str]:
        return [m.target for m in self._by_source.get(current, [])]

    def move(self, record_id: str, current: str, target: str) -> Move:
        """The declared move from ``current`` to ``target``, or ``InvalidTransition`` naming what is allowed."""
        self.stage(target)
        for move in self._by_source.get(current, []):
            if move.target == target:
                return move
        allowed = ", ".join(self.next_stages(current)) or "none (final stage)"
        raise InvalidTransition(f"{record_id} is in {current}: cannot move to {target} (allowed: {allowed})")

    # ------------------------------------------------------------------ the engine

    def check(
        self,
        record_id: str,
        current: str,
        target: str,
        fields: Mapping[str, Any],
        record: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Check a move and return the stage data to store (fields without empty values, normalised by the
        move's rule). Raises ``InvalidTransition`` or ``MissingField`` (which names the field)."""
        move = self.move(record_id, current, target)
        missing = [name for name in move.needs if not present(fields.get(name))]
        if missing:
            raise MissingField(f"{record_id}: moving to {target} needs {', '.join(missing)}")
        data = {k: v for k, v in fields.items() if v is not None}
        if move.rule is not None:
            data = move.rule(record_id, record or {}, data)
        return data


def present(value: Any) -> bool:
    """A field counts as given when it is not None, not blank, not an empty list or mapping."""
    if value is None:
        return False
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, (list, dict)):
        return bool(value)
    return True
