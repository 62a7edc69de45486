"""Waiting for a human decision inside a flow: shared by every procedure with a signed step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import get_run_logger
from prefect.flow_runs import suspend_flow_run
from pydantic import BaseModel


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
