"""The QMS procedures whose records move through declared stages, by record kind.

Configuration that names stages (Jira status maps per kind, deadlines per stage) is checked against
these tables; a new procedure adds its machine here and nowhere else in the shared code.
"""

from __future__ import annotations

from . import audit, capa, management_review
from .stages import StageMachine

MACHINES: dict[str, StageMachine] = {
    machine.kind: machine
    for machine in (capa.MACHINE, audit.MACHINE, management_review.MACHINE, management_review.ACTION_MACHINE)
}
