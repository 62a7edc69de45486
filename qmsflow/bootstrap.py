"""The composition root: import the QMS procedures so that their reactions are registered."""

from __future__ import annotations

_done = False


def procedures() -> None:
    global _done
    if _done:
        return
    from .services import audit, capa, release, review  # noqa: F401 - importing registers their reactions

    _done = True
