"""References to QMS records: ``kind:id`` or ``kind:id@version`` (``document-version:SOP-DOC-001@1.2``,
``capa:CAPA-2026-0001@closed``). One value object builds and parses them everywhere."""

from __future__ import annotations

import re
from dataclasses import dataclass

_KIND = re.compile(r"^[a-z][a-z0-9-]*$")


@dataclass(frozen=True, slots=True)
class Ref:
    kind: str
    id: str
    version: str | None = None

    def __post_init__(self) -> None:
        if not _KIND.match(self.kind):
            raise ValueError(f"{self.kind!r} is not a record kind (lowercase letters, digits, '-')")
        if not self.id or ":" in self.id or "@" in self.id:
            raise ValueError(f"{self.id!r} is not a record id (no ':' or '@')")
        if self.version is not None and (not self.version or "@" in self.version):
            raise ValueError(f"{self.version!r} is not a version")

    @classmethod
    def parse(cls, value: str) -> Ref:
        kind, sep, rest = value.partition(":")
        if not sep:
            raise ValueError(f"{value!r} is not a reference (kind:id or kind:id@version)")
        ident, at, version = rest.rpartition("@") if "@" in rest else (rest, "", "")
        return cls(kind, ident, version if at else None)

    def __str__(self) -> str:
        return f"{self.kind}:{self.id}" + (f"@{self.version}" if self.version is not None else "")

    def base(self) -> Ref:
        """The record itself, without the version or step."""
        return Ref(self.kind, self.id)


def document_version(doc_id: str, version: str) -> Ref:
    return Ref("document-version", doc_id, version)


def capa_step(capa_id: str, target: str) -> Ref:
    return Ref("capa", capa_id, target)
