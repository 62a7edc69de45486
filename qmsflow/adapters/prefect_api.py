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


def _settings(url: str):  # noqa: ANN202
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings({PREFECT_API_URL: url})


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


def resume(url: str, flow_run_id: str, run_input: dict[str, Any], attempts: int = 5) -> bool:
    """Resume a suspended run with input. False when it was not suspended (already resumed).

    A busy Prefect server (SQLite) may answer 503 for a moment: retried with a short backoff before
    giving up (the decision is recorded either way; the follow-up flow resumes later).
    """
    import time

    from prefect.exceptions import NotPausedError
    from prefect.flow_runs import resume_flow_run

    for attempt in range(attempts):
        try:
            with _settings(url):
                resume_flow_run(UUID(flow_run_id), run_input=run_input)
            return True
        except NotPausedError:
            return False
        except Exception as exc:  # noqa: BLE001 - connection errors and 5xx come in many types
            if attempt == attempts - 1:
                raise PrefectUnavailable(f"cannot resume flow run {flow_run_id} at {url}: {exc}") from None
            time.sleep(0.2 * 2**attempt)
    return False


async def aresume(url: str, flow_run_id: str, run_input: dict[str, Any]) -> bool:
    from prefect.exceptions import NotPausedError
    from prefect.flow_runs import aresume_flow_run

    try:
        with _settings(url):
            await aresume_flow_run(UUID(flow_run_id), run_input=run_input)
    except NotPausedError:
        return False
    except Exception as exc:  # noqa: BLE001
        raise PrefectUnavailable(f"cannot resume flow run {flow_run_id} at {url}: {exc}") from None
    return True


def state_of(url: str, flow_run_id: str) -> str | None:
    from prefect.client.orchestration import get_client

    with _settings(url), get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(flow_run_id))
        return run.state.type.value if run.state else None
