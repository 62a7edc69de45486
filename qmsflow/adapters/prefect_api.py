"""Talking to the Prefect API from outside a flow: start runs, resume suspended runs, read states.

The API URL is ``PREFECT_API_URL`` when set, else the one ``qms up`` recorded in ``.qms/stack.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from uuid import UUID

DEFAULT_API = "http://127.0.0.1:4200/api"


class PrefectUnavailable(Exception):
    """The Prefect API cannot be reached; the message says how to start it."""


def api_url(state_dir: Path | None) -> str:
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    if state_dir is not None:
        stack = state_dir / "stack.json"
        if stack.is_file():
            return json.loads(stack.read_text()).get("api_url", DEFAULT_API)
    return DEFAULT_API


def _settings(url: str, extra: dict | None = None):  # noqa: ANN202
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings({PREFECT_API_URL: url, **(extra or {})})


def start_run(url: str, deployment: str, parameters: dict[str, Any], idempotency_key: str | None = None) -> str:
    """Create a flow run of ``flow/deployment`` and return its id (does not wait)."""
    from prefect.deployments import run_deployment

    try:
        with _settings(url):
            run = run_deployment(
                deployment, parameters=parameters, timeout=0, idempotency_key=idempotency_key, as_subflow=False
            )
    except Exception as exc:  # noqa: BLE001 - connection errors come in many types
        raise PrefectUnavailable(
            f"cannot start {deployment} through the Prefect API at {url}: {exc} (is the stack up? run 'qms up')"
        ) from None
    return str(run.id)


def resume(url: str, flow_run_id: str, run_input: dict[str, Any], within: float = 5.0) -> bool:
    """Resume a suspended run with input. False when it was not suspended (already resumed).

    A busy Prefect server on SQLite answers 503 ("database is locked") for a moment, e.g. while the
    run is still writing its own suspension. Prefect's client would wait 2, 4, 8… s between tries;
    here a 5xx or a timeout is tried again after 0.1 s, backing off to 1 s, for ``within`` seconds.
    A server that is not listening fails at once. Either way the decision is already recorded, and
    the hourly follow-up flow resumes runs whose resume failed.
    """
    import time

    import httpx
    from prefect.exceptions import NotPausedError
    from prefect.flow_runs import resume_flow_run
    from prefect.settings import PREFECT_CLIENT_MAX_RETRIES

    deadline = time.monotonic() + within
    delay = 0.1
    while True:
        try:
            with _settings(url, {PREFECT_CLIENT_MAX_RETRIES: 0}):
                resume_flow_run(UUID(flow_run_id), run_input=run_input)
            return True
        except NotPausedError:
            return False
        except Exception as exc:  # noqa: BLE001 - connection errors and 5xx come in many types
            busy = isinstance(exc, httpx.TimeoutException) or (
                isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code in (408, 429, 500, 502, 503, 504)
            )
            if not busy or time.monotonic() + delay > deadline:
                raise PrefectUnavailable(f"cannot resume flow run {flow_run_id} at {url}: {exc}") from None
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)


def state_of(url: str, flow_run_id: str) -> str | None:
    from prefect.client.orchestration import get_client

    with _settings(url), get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(flow_run_id))
        return run.state.type.value if run.state else None
