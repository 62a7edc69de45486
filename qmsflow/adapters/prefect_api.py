"""Talking to the Prefect API from outside a flow: start runs, resume suspended runs, read states.

The endpoint (URL and credential) is ``PREFECT_API_URL`` when set, else the one the running ``qms up``
recorded in ``.qms/stack.json`` (see ``locate``).
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID


class PrefectUnavailable(Exception):
    """The Prefect API cannot be reached; the message says how to start it."""


class PrefectBusy(PrefectUnavailable):
    """The Prefect API still answered "busy" (5xx, 429, timeout) when the time to try ran out."""


STACK_DOWN = "the stack is not running (start it with 'qms up')"


@dataclass(frozen=True)
class Endpoint:
    """Where the Prefect API is and how to authenticate to it.

    ``auth_string`` is the ``user:password`` of HTTP basic auth that the server of ``qms up`` requires
    (``PREFECT_SERVER_API_AUTH_STRING``); ``None`` means "whatever Prefect's own settings say"
    (``PREFECT_API_AUTH_STRING`` or ``PREFECT_API_KEY`` of an external server).
    """

    url: str
    auth_string: str | None = field(default=None, repr=False)

    def headers(self) -> dict[str, str]:
        if self.auth_string:
            return {"Authorization": "Basic " + base64.b64encode(self.auth_string.encode("utf-8")).decode("ascii")}
        return _auth_headers()

    def settings(self):  # noqa: ANN201
        """Prefect client settings for this endpoint (a context manager)."""
        from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

        updates: dict[Any, Any] = {PREFECT_API_URL: self.url}
        if self.auth_string:
            updates[PREFECT_API_AUTH_STRING] = self.auth_string
        return temporary_settings(updates)


def read_stack_state(state_dir: Path) -> dict[str, Any] | None:
    """The state file of the running ``qms up`` of this repo, or None when no stack runs."""
    path = state_dir / "stack.json"
    try:
        state = json.loads(path.read_text())
        pid = int(state["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(state, dict):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None  # left behind by a stack that was killed
    except PermissionError:
        pass  # alive, another user's
    return state


def locate(state_dir: Path | None) -> Endpoint:
    """The Prefect API to talk to, with its credential.

    ``PREFECT_API_URL`` when set (production: an external server; inside the stack's own children it is
    the embedded server, with ``PREFECT_API_AUTH_STRING``); otherwise what the running ``qms up`` of this
    repo wrote into ``.qms/stack.json``. Never a guessed default port: with no stack running this raises
    ``PrefectUnavailable`` saying so.
    """
    state = read_stack_state(state_dir) if state_dir is not None else None
    env_url = os.environ.get("PREFECT_API_URL")
    if env_url:
        auth = os.environ.get("PREFECT_API_AUTH_STRING") or None
        if auth is None and state and state.get("api_url") == env_url:
            auth = state.get("auth_string") or None
        return Endpoint(env_url, auth)
    if state is None or not state.get("api_url"):
        raise PrefectUnavailable(STACK_DOWN)
    return Endpoint(state["api_url"], state.get("auth_string") or None)


def _as_endpoint(where: Endpoint | str) -> Endpoint:
    return where if isinstance(where, Endpoint) else Endpoint(where)


def start_run(
    where: Endpoint | str, deployment: str, parameters: dict[str, Any], idempotency_key: str | None = None
) -> str:
    """Create a flow run of ``flow/deployment`` and return its id (does not wait)."""
    from prefect.deployments import run_deployment

    endpoint = _as_endpoint(where)
    url = endpoint.url
    try:
        with endpoint.settings():
            run = run_deployment(
                deployment, parameters=parameters, timeout=0, idempotency_key=idempotency_key, as_subflow=False
            )
    except Exception as exc:  # noqa: BLE001 - connection errors come in many types
        raise PrefectUnavailable(
            f"cannot start {deployment} through the Prefect API at {url}: {exc} (is the stack up? run 'qms up')"
        ) from None
    return str(run.id)


def _auth_headers() -> dict[str, str]:
    """The Authorization header Prefect's own client sends: basic auth string if set, else the API key."""

    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_KEY

    def plain(value: Any) -> str | None:
        return value.get_secret_value() if hasattr(value, "get_secret_value") else value

    auth, key = plain(PREFECT_API_AUTH_STRING.value()), plain(PREFECT_API_KEY.value())
    if auth:
        return {"Authorization": "Basic " + base64.b64encode(auth.encode("utf-8")).decode("ascii")}
    return {"Authorization": f"Bearer {key}"} if key else {}


def _tls_verify(url: str) -> Any:
    """The TLS verification Prefect's own client uses (its CA file or skip-verify settings) for https."""
    if not url.startswith("https:"):
        return True
    import ssl

    from prefect.settings import PREFECT_API_SSL_CERT_FILE, PREFECT_API_TLS_INSECURE_SKIP_VERIFY

    if PREFECT_API_TLS_INSECURE_SKIP_VERIFY.value():
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    import certifi

    return ssl.create_default_context(cafile=PREFECT_API_SSL_CERT_FILE.value() or certifi.where())


BUSY = (408, 429, 500, 502, 503, 504)


def resume(where: Endpoint | str, flow_run_id: str, run_input: dict[str, Any], within: float = 5.0) -> bool:
    """Resume a suspended run with input (``POST /flow_runs/{id}/resume``). False if it was not suspended.

    A Prefect server on SQLite answers 503 ("database is locked") for a moment, e.g. while the run
    that has just suspended is still writing. Prefect's client then sleeps 2, 4, 8… s (and 2 s even
    with retries off), so this calls the REST endpoint itself: a 5xx, 429 or timeout is tried again
    after 0.1 s, backing off to 1 s, for ``within`` seconds; a server that is not listening, or that
    rejects the input, fails at once. Authorization and TLS verification follow Prefect's settings
    (``PREFECT_API_KEY`` / ``PREFECT_API_AUTH_STRING``, ``PREFECT_API_SSL_CERT_FILE`` /
    ``PREFECT_API_TLS_INSECURE_SKIP_VERIFY``). Either way the decision is already recorded, and the
    hourly follow-up flow resumes runs whose resume failed.
    """
    import time

    import httpx

    api = _as_endpoint(where)
    url = api.url
    endpoint = f"{url.rstrip('/')}/flow_runs/{flow_run_id}/resume"
    deadline = time.monotonic() + within
    delay = 0.1
    try:
        verify = _tls_verify(url)
    except OSError as exc:  # includes ssl.SSLError: an unreadable or invalid CA file
        raise PrefectUnavailable(
            f"cannot resume flow run {flow_run_id} at {url}: the CA file of PREFECT_API_SSL_CERT_FILE "
            f"cannot be used: {exc}"
        ) from None
    with httpx.Client(timeout=10, headers=api.headers(), verify=verify) as client:
        while True:
            try:
                response = client.post(endpoint, json={"run_input": run_input})
            except httpx.TransportError as exc:
                busy, problem = isinstance(exc, httpx.TimeoutException), f"{exc.__class__.__name__}: {exc}"
            else:
                if response.status_code in (200, 201):
                    try:
                        result = response.json()
                        if not isinstance(result, dict):
                            raise ValueError("not an object")
                    except ValueError:  # not Prefect answering (a proxy page?)
                        raise PrefectUnavailable(
                            f"cannot resume flow run {flow_run_id} at {url}: HTTP {response.status_code} "
                            f"that is not Prefect's JSON: {response.text[:200]!r}"
                        ) from None
                    reason = (result.get("details") or {}).get("reason") or ""
                    if result.get("status") == "ACCEPT":
                        return True
                    if result.get("status") == "ABORT" and "not paused" in reason:
                        return False
                    busy, problem = result.get("status") == "WAIT", f"{result.get('status')}: {reason}"
                elif response.status_code == 403 and "csrf" in response.text.lower():
                    return _resume_with_prefect_client(api, flow_run_id, run_input)
                else:
                    busy, problem = response.status_code in BUSY, f"HTTP {response.status_code}: {response.text[:300]}"
            if not busy or time.monotonic() + delay > deadline:
                raise (PrefectBusy if busy else PrefectUnavailable)(
                    f"cannot resume flow run {flow_run_id} at {url}: {problem}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)


def _resume_with_prefect_client(api: Endpoint, flow_run_id: str, run_input: dict[str, Any]) -> bool:
    """For a Prefect server with CSRF protection on: its own client fetches and sends the token."""
    from prefect.exceptions import NotPausedError
    from prefect.flow_runs import resume_flow_run

    try:
        with api.settings():
            resume_flow_run(UUID(flow_run_id), run_input=run_input)
    except NotPausedError:
        return False
    except Exception as exc:  # noqa: BLE001 - connection errors and HTTP errors come in many types
        raise PrefectUnavailable(f"cannot resume flow run {flow_run_id} at {api.url}: {exc}") from None
    return True


def state_of(where: Endpoint | str, flow_run_id: str) -> str | None:
    from prefect.client.orchestration import get_client

    with _as_endpoint(where).settings(), get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(flow_run_id))
        return run.state.type.value if run.state else None
