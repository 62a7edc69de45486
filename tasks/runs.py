"""What every QMS flow does when a run is refused before its first step."""

from __future__ import annotations

from typing import Any

from qmsflow.context import open_context
from qmsflow.store.uow import UnitOfWork

PARAMETERS_REFUSED = "Validation of flow parameters failed"


def record_refused_run(flow: Any, flow_run: Any, state: Any) -> None:
    """``on_failure`` hook of every flow: a run started with parameters the flow does not take (for example a
    foreign ``config`` path, or an identity) fails before its first step and is recorded in the trail.

    Prefect's API may be reachable by others; flows take only identifiers, so anything else is an attempt
    to steer a QMS procedure from outside, and it is written down, in qmsflow's name, with the parameter
    names (values are not trusted and are cut short).
    """
    if not str(getattr(state, "message", "") or "").startswith(PARAMETERS_REFUSED):
        return
    parameters = dict(getattr(flow_run, "parameters", None) or {})
    with open_context() as ctx, UnitOfWork(ctx.db, "qmsflow") as uow:
        uow.record(
            "flow.refused",
            f"flow-run:{flow_run.id}",
            None,
            {
                "flow": flow.name,
                "flow_run_id": str(flow_run.id),
                "parameters": {str(k)[:100]: repr(v)[:200] for k, v in list(parameters.items())[:20]},
                "reason": str(state.message)[:500],
            },
        )
        uow.commit()
