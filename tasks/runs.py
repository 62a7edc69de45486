"""What every QMS flow does when a run is refused before its first step."""

from __future__ import annotations

import inspect
from typing import Any

from qmsflow.context import open_context
from qmsflow.store.uow import UnitOfWork

PARAMETERS_REFUSED = "Validation of flow parameters failed"


def record_refused_run(flow: Any, flow_run: Any, state: Any) -> None:
    """``on_failure`` and ``on_crashed`` hook of every flow: a run started with parameters the flow does not
    take (a foreign ``config`` path, an identity, …) never reaches its first step (Prefect refuses to bind
    them: the run fails, or its process exits and the runner reports it crashed), and is recorded here.

    Prefect's API may be reachable by others; flows take only identifiers, so anything else is an attempt
    to steer a QMS procedure from outside. It is written down in qmsflow's name, with the parameter names
    and a cut-short representation of the values (they are not trusted).
    """
    parameters = dict(getattr(flow_run, "parameters", None) or {})
    unknown = sorted(set(parameters) - set(inspect.signature(flow.fn).parameters))
    message = str(getattr(state, "message", "") or "")
    if not unknown and not message.startswith(PARAMETERS_REFUSED):
        return
    with open_context() as ctx, UnitOfWork(ctx.db, "qmsflow") as uow:
        uow.record(
            "flow.refused",
            f"flow-run:{flow_run.id}",
            None,
            {
                "flow": flow.name,
                "flow_run_id": str(flow_run.id),
                "parameters": {str(k)[:100]: repr(v)[:200] for k, v in list(parameters.items())[:20]},
                "reason": f"parameters the flow does not take: {', '.join(str(k)[:100] for k in unknown)}"
                if unknown
                else message[:500],
            },
        )
        uow.commit()
