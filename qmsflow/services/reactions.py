"""What happens when an approval request is decided, registered per subject kind.

A procedure registers the reaction to its own signed steps (the document review makes the version
effective, the CAPA enters its signed stage); the approvals service calls it in the same transaction
as the signature that decides the request, and never imports a procedure. ``qmsflow.bootstrap``
imports the procedures, so their reactions are registered in every process that opens a context.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..domain.errors import DomainError
from ..domain.refs import Ref

if TYPE_CHECKING:
    from ..domain.approvals import Signature
    from ..domain.organisation import QmsConfig
    from ..store.tables import ApprovalRequestRow
    from ..store.uow import UnitOfWork

Reaction = Callable[["UnitOfWork", "QmsConfig", "ApprovalRequestRow", "Signature"], None]
_REACTIONS: dict[str, Reaction] = {}


def on_decided(kind: str) -> Callable[[Reaction], Reaction]:
    """Decorator: ``@on_decided("capa")`` registers the reaction to decided requests on ``capa:…``."""

    def register(fn: Reaction) -> Reaction:
        _REACTIONS[kind] = fn
        return fn

    return register


def react(uow: UnitOfWork, config: QmsConfig, request: ApprovalRequestRow, signature: Signature) -> None:
    """Apply the consequences of a decided request; a subject kind nobody registered is an error."""
    kind = Ref.parse(request.subject).kind
    reaction = _REACTIONS.get(kind)
    if reaction is None:
        raise DomainError(f"{request.id}: no procedure reacts to decisions on {kind!r} subjects")
    reaction(uow, config, request, signature)


def registered() -> frozenset[str]:
    return frozenset(_REACTIONS)
