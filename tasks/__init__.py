"""Prefect tasks shared by the QMS flows: thin wrappers over qmsflow's services.

Every task is idempotent (keyed by a stable id in the records store), because a flow may run
again from the top when a suspended run resumes (docs/adr/0002-flow-idempotency.md).
"""

import os as _os

if _os.environ.get("QMS_RUNNER_PID", "") not in ("", str(_os.getpid())):
    # a flow-run process of the runner of `qms up`: it dies with the runner, never outlives the stack
    from qmsflow.stack import die_with_runner

    die_with_runner(int(_os.environ["QMS_RUNNER_PID"]))
