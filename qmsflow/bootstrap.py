"""The composition root: import the QMS procedures so that their reactions are registered."""

from __future__ import annotations

_done = False


def procedures() -> None:
    global _done
    if _done:
        return
    from .services import (  # noqa: F401 - importing registers their reactions and review-input providers
        audit,
        capa,
        documents,
        management_review,
        release,
        review,
        sync,
    )

    _done = True
