"""Resuming a suspended run through the Prefect API: what is tried again, and what fails at once."""

from __future__ import annotations

import time

import httpx
import prefect.flow_runs
import pytest
from prefect.exceptions import NotPausedError

from qmsflow.adapters import prefect_api

RUN = "0191f3f0-0000-7000-8000-000000000001"
URL = "http://127.0.0.1:9/api"


def status_error(code: int) -> httpx.HTTPStatusError:
    request = httpx.Request("POST", f"{URL}/flow_runs/{RUN}/resume")
    return httpx.HTTPStatusError(f"HTTP {code}", request=request, response=httpx.Response(code, request=request))


class Script:
    """Stands in for prefect.flow_runs.resume_flow_run: raises the scripted errors, then succeeds."""

    def __init__(self, *errors: Exception):
        self.errors = list(errors)
        self.calls: list[tuple[float, dict]] = []
        self.max_retries: list[int] = []

    def __call__(self, flow_run_id, run_input=None) -> None:  # noqa: ANN001
        from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES

        assert str(flow_run_id) == RUN and PREFECT_API_URL.value() == URL
        self.max_retries.append(PREFECT_CLIENT_MAX_RETRIES.value())
        self.calls.append((time.monotonic(), run_input))
        if self.errors:
            raise self.errors.pop(0)


def test_a_busy_server_is_tried_again_quickly(monkeypatch: pytest.MonkeyPatch) -> None:
    script = Script(status_error(503), status_error(503), httpx.ReadTimeout("slow"))
    monkeypatch.setattr(prefect.flow_runs, "resume_flow_run", script)
    start = time.monotonic()
    assert prefect_api.resume(URL, RUN, {"request_id": "APR-1", "status": "approved"}) is True
    assert len(script.calls) == 4
    assert script.calls[-1][1] == {"request_id": "APR-1", "status": "approved"}
    # 0.1 + 0.15 + 0.225 s of waiting, not Prefect's own 2 + 4 + 8 s: its client retries are off
    assert time.monotonic() - start < 1.5
    assert script.max_retries == [0, 0, 0, 0]


def test_a_run_that_is_no_longer_suspended_is_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    script = Script(NotPausedError("Cannot resume a run that isn't paused!"))
    monkeypatch.setattr(prefect.flow_runs, "resume_flow_run", script)
    assert prefect_api.resume(URL, RUN, {}) is False
    assert len(script.calls) == 1


@pytest.mark.parametrize(
    "error",
    [httpx.ConnectError("connection refused"), status_error(422), RuntimeError("Cannot resume this run: rejected")],
    ids=["not-listening", "bad-input", "rejected"],
)
def test_errors_that_waiting_does_not_cure_fail_at_once(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    script = Script(error, error, error)
    monkeypatch.setattr(prefect.flow_runs, "resume_flow_run", script)
    with pytest.raises(prefect_api.PrefectUnavailable, match=f"cannot resume flow run {RUN} at {URL}"):
        prefect_api.resume(URL, RUN, {})
    assert len(script.calls) == 1


def test_a_server_busy_for_longer_than_the_window_is_given_up(monkeypatch: pytest.MonkeyPatch) -> None:
    script = Script(*[status_error(503)] * 100)
    monkeypatch.setattr(prefect.flow_runs, "resume_flow_run", script)
    start = time.monotonic()
    with pytest.raises(prefect_api.PrefectUnavailable, match="503"):
        prefect_api.resume(URL, RUN, {}, within=1.0)
    assert 0.5 < time.monotonic() - start <= 1.2
    assert 3 <= len(script.calls) < 10
