"""QMS procedures as Prefect flows: one module per procedure. Flows orchestrate; services decide."""

import os as _os

if _os.environ.get("QMS_RUNNER_PID", "") not in ("", str(_os.getpid())):
    # a flow-run process of the runner of `qms up`: it dies with the runner, never outlives the stack
    from qmsflow.stack import die_with_runner

    die_with_runner(int(_os.environ["QMS_RUNNER_PID"]))
