"""Waiting for a human decision inside a flow: shared by every procedure with a signed step.

- ``import_in_background``: a flow that waits for a person is resumed in a new process; there, the
  tasks' imports (records store, SQLAlchemy, config models: about 0.3 s) start while Prefect starts
  the run (docs/adr/0008-decision-before-rendering.md).
- ``wait_for_decision``: the suspend/resume loop around an approval request.

This module imports nothing of qmsflow, so a flow module can import it at once.
"""

from __future__ import annotations

import importlib
import multiprocessing
import sys
import threading
from collections.abc import Callable
from typing import Any

from prefect import get_run_logger
from prefect.flow_runs import suspend_flow_run
from pydantic import BaseModel


def import_in_background(module: str) -> threading.Thread | None:
    """Import ``module`` in a daemon thread when this is a process the runner started for a run (a resumed
    run), so the flow body's own import of it only waits for that one. Elsewhere (the runner itself, tests,
    tools) nothing is imported in the background and None is returned."""
    if multiprocessing.parent_process() is None or module in sys.modules:
        return None
    thread = threading.Thread(target=importlib.import_module, args=(module,), name="qms-import", daemon=True)
    thread.start()
    return thread


class ApprovalDecided(BaseModel):
    """Run input given on resume; the records store stays the source of truth."""

    request_id: str
    status: str


def wait_for_decision(request: dict[str, Any], read: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    """Suspend the run until the approval request is decided; ``read`` re-reads it after each resume.

    The run is suspended (no process, no worker slot) and resumed by whoever records the deciding
    signature (Slack, dashboard, API, CLI) or by the hourly follow-up flow. A resumed run starts the flow
    again from the top: every step before the wait is idempotent. The suspension key names the request,
    the signatures so far and the attempt, so a resume for an older state never satisfies a newer wait.
    """
    attempt = 0
    while request["status"] == "pending":
        get_run_logger().info("%s waits for approval of %s", request["id"], request["subject"])
        suspend_flow_run(
            wait_for_input=ApprovalDecided,
            timeout=None,
            key=f"approval-{request['id'].lower()}-{request['signatures']}-{attempt}",
        )
        attempt += 1
        request = read(request["id"])
    return request
