"""QMS procedures as Prefect flows: one module per procedure. Flows orchestrate; services decide."""

import tasks as _tasks  # noqa: F401 - a flow-run process of `qms up` dies with its runner (tasks/__init__.py)
