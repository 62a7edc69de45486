"""The baseline of bench/approval.py: a flow that only suspends for input and ends when resumed.

python bench/bare_flow.py            # serve the deployment bare-suspend/bench (PREFECT_API_URL set)
python bench/bare_flow.py --start    # create one run of it, print its id
"""

from __future__ import annotations

import sys

from prefect import flow
from prefect.flow_runs import suspend_flow_run
from pydantic import BaseModel


class Decided(BaseModel):
    request_id: str
    status: str


@flow(name="bare-suspend", persist_result=True)
def bare_suspend() -> str:
    decided = suspend_flow_run(wait_for_input=Decided, timeout=None, key="bare-approval")
    return decided.status


if __name__ == "__main__":
    if "--start" in sys.argv:
        from prefect.deployments import run_deployment

        print(run_deployment("bare-suspend/bench", timeout=0, as_subflow=False).id)
    else:
        bare_suspend.serve(name="bench", print_starting_message=False)
