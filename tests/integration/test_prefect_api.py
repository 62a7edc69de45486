"""Resuming a suspended run through Prefect's REST endpoint: what is tried again, what fails at once.

A scripted stand-in for the Prefect server answers over real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from fakes.base import LocalHTTPFake

from qmsflow.adapters import prefect_api

RUN = "0191f3f0-0000-7000-8000-000000000001"
ACCEPT = (201, {"status": "ACCEPT", "details": {}, "state": {"type": "SCHEDULED", "name": "Resuming"}})
NOT_PAUSED = (200, {"status": "ABORT", "details": {"reason": "Cannot resume a flow run that is not paused."}})
LOCKED = (503, {"exception_message": "Service Unavailable"})


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        fake = self.server.fake  # type: ignore[attr-defined]
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        fake.seen.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        status, answer = fake.script.pop(0) if fake.script else ACCEPT
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


class ScriptedPrefect(LocalHTTPFake):
    """Answers POST /api/flow_runs/{id}/resume with the scripted (status, body) pairs, then ACCEPT."""

    def __init__(self) -> None:
        super().__init__(_Handler)
        self.script: list[tuple[int, Any]] = []
        self.seen: list[dict] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"


@pytest.fixture
def prefect() -> Iterator[ScriptedPrefect]:
    with ScriptedPrefect() as fake:
        yield fake


def test_resume_posts_the_run_input_to_the_resume_endpoint(prefect: ScriptedPrefect) -> None:
    assert prefect_api.resume(prefect.url, RUN, {"request_id": "APR-1", "status": "approved"}) is True
    [call] = prefect.seen
    assert call["path"] == f"/api/flow_runs/{RUN}/resume"
    assert call["body"] == {"run_input": {"request_id": "APR-1", "status": "approved"}}
    assert call["auth"] is None


def test_a_busy_server_is_tried_again_at_once_not_after_seconds(prefect: ScriptedPrefect) -> None:
    prefect.script = [LOCKED, LOCKED, (500, {"detail": "database is locked"})]
    start = time.monotonic()
    assert prefect_api.resume(prefect.url, RUN, {"request_id": "APR-1", "status": "approved"}) is True
    assert len(prefect.seen) == 4
    # 0.1 + 0.15 + 0.225 s of waiting; Prefect's own client would sleep 2 + 4 + 8 s
    assert time.monotonic() - start < 1.5


def test_a_run_that_is_no_longer_suspended_is_not_an_error(prefect: ScriptedPrefect) -> None:
    prefect.script = [NOT_PAUSED]
    assert prefect_api.resume(prefect.url, RUN, {}) is False
    assert len(prefect.seen) == 1


@pytest.mark.parametrize(
    "answer, shown",
    [
        (
            (200, {"status": "REJECT", "details": {"reason": "Run input validation failed: 'status' is required"}}),
            "REJECT: Run input validation failed",
        ),
        ((404, {"detail": "Flow run not found"}), "HTTP 404"),
        ((401, {"detail": "Unauthorized"}), "HTTP 401"),
    ],
    ids=["input-rejected", "unknown-run", "unauthorised"],
)
def test_answers_that_waiting_does_not_cure_fail_at_once(
    prefect: ScriptedPrefect, answer: tuple[int, dict], shown: str
) -> None:
    prefect.script = [answer, answer, answer]
    with pytest.raises(prefect_api.PrefectUnavailable, match=f"cannot resume flow run {RUN} at .*: {shown}"):
        prefect_api.resume(prefect.url, RUN, {})
    assert len(prefect.seen) == 1


def test_a_server_that_is_not_listening_fails_at_once(prefect: ScriptedPrefect) -> None:
    url = prefect.url
    prefect.stop()
    start = time.monotonic()
    with pytest.raises(prefect_api.PrefectUnavailable, match="ConnectError"):
        prefect_api.resume(url, RUN, {})
    assert time.monotonic() - start < 1.0


def test_a_server_busy_for_longer_than_the_window_is_given_up(prefect: ScriptedPrefect) -> None:
    prefect.script = [LOCKED] * 100
    start = time.monotonic()
    with pytest.raises(prefect_api.PrefectUnavailable, match="HTTP 503"):
        prefect_api.resume(prefect.url, RUN, {}, within=1.0)
    assert 0.5 < time.monotonic() - start <= 1.3
    assert 3 <= len(prefect.seen) < 10


def test_the_api_key_or_auth_string_of_the_prefect_settings_is_sent(prefect: ScriptedPrefect) -> None:
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_KEY, temporary_settings

    with temporary_settings({PREFECT_API_KEY: "pnu_secret"}):
        assert prefect_api.resume(prefect.url, RUN, {}) is True
        with temporary_settings({PREFECT_API_AUTH_STRING: "admin:pass"}):
            assert prefect_api.resume(prefect.url, RUN, {}) is True
    assert [c["auth"] for c in prefect.seen] == ["Bearer pnu_secret", "Basic YWRtaW46cGFzcw=="]


def test_a_server_that_wants_a_csrf_token_is_resumed_through_prefects_own_client(
    prefect: ScriptedPrefect, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect import flow_runs
    from prefect.settings import PREFECT_API_URL

    resumed = []
    monkeypatch.setattr(
        flow_runs,
        "resume_flow_run",
        lambda run_id, run_input=None: resumed.append((str(run_id), run_input, PREFECT_API_URL.value())),
    )
    prefect.script = [(403, {"detail": "Missing CSRF token."})]  # what the server answers without one
    assert prefect_api.resume(prefect.url, RUN, {"request_id": "APR-1", "status": "approved"}) is True
    assert resumed == [(RUN, {"request_id": "APR-1", "status": "approved"}, prefect.url)]


def test_a_success_status_that_is_not_prefects_json_is_an_error_not_a_crash(prefect: ScriptedPrefect) -> None:
    prefect.script = [(200, ["a proxy's answer"])]
    with pytest.raises(prefect_api.PrefectUnavailable, match="not Prefect's JSON"):
        prefect_api.resume(prefect.url, RUN, {})


def test_https_uses_prefects_tls_settings() -> None:
    import ssl

    import certifi
    from prefect.settings import PREFECT_API_SSL_CERT_FILE, PREFECT_API_TLS_INSECURE_SKIP_VERIFY, temporary_settings

    assert prefect_api._tls_verify("http://127.0.0.1:4200/api") is True
    assert prefect_api._tls_verify("https://prefect.example/api").verify_mode == ssl.CERT_REQUIRED
    with temporary_settings({PREFECT_API_SSL_CERT_FILE: certifi.where()}):
        assert prefect_api._tls_verify("https://prefect.example/api").verify_mode == ssl.CERT_REQUIRED
    with temporary_settings({PREFECT_API_SSL_CERT_FILE: "/nonexistent/ca.pem"}):
        with pytest.raises(OSError):  # the CA file named in the settings is really used
            prefect_api._tls_verify("https://prefect.example/api")
        with pytest.raises(prefect_api.PrefectUnavailable, match="PREFECT_API_SSL_CERT_FILE cannot be used"):
            prefect_api.resume("https://prefect.example/api", RUN, {})
    with temporary_settings({PREFECT_API_TLS_INSECURE_SKIP_VERIFY: True}):
        context = prefect_api._tls_verify("https://prefect.example/api")
        assert context.verify_mode == ssl.CERT_NONE and context.check_hostname is False


def test_the_stacks_credential_is_sent_with_its_endpoint(prefect: ScriptedPrefect) -> None:
    endpoint = prefect_api.Endpoint(prefect.url, "qmsflow:s3cret")
    assert prefect_api.resume(endpoint, RUN, {}) is True
    assert prefect.seen[0]["auth"] == "Basic cW1zZmxvdzpzM2NyZXQ="
    assert "s3cret" not in repr(endpoint)


def test_after_a_decision_a_server_busy_for_longer_than_five_seconds_is_waited_for_in_the_background(
    prefect: ScriptedPrefect,
    ctx,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    """A burst of approvals kept the embedded Prefect server answering 503 for longer than the 5 s a
    resume used to try: the runs then waited for the hourly follow-up. Now the caller's thread (a
    request's background task) tries RESUME_INLINE seconds, and the process's own two threads go on for
    the rest of the minute, so retries never hold the threads that serve requests."""
    from types import SimpleNamespace

    from qmsflow.services.approvals import RESUME_INLINE, RESUME_WITHIN, after_decision

    monkeypatch.setenv("PREFECT_API_URL", prefect.url)
    result = SimpleNamespace(
        decided=True, flow_run_id=RUN, request_id="APR-1", status=SimpleNamespace(value="approved")
    )
    prefect.script = [LOCKED] * 11  # 0.1 s backing off to 1 s between tries: more than 5 s of 503
    start = time.monotonic()
    pending = after_decision(ctx, result)
    handed_over = time.monotonic() - start
    # the caller's thread gave up inside its window and handed the run over
    assert pending is not None and handed_over < RESUME_INLINE + 2
    pending.result(timeout=RESUME_WITHIN)
    assert len(prefect.seen) == 12 and prefect.script == []  # the twelfth try, in the background, was accepted

    prefect.seen.clear()
    prefect.script = [LOCKED] * 11
    assert after_decision(ctx, result, inline=True) is None  # the CLI: the whole minute in its own thread
    assert len(prefect.seen) == 12

    prefect.seen.clear()
    prefect.script = [(400, {"detail": "bad input"})]  # not busy: given up at once, logged, nothing pending
    assert after_decision(ctx, result) is None
    assert len(prefect.seen) == 1


def _state(tmp_path, **fields) -> None:  # noqa: ANN001, ANN003
    (tmp_path / "stack.json").write_text(json.dumps(fields))


def test_locate_finds_the_running_stack_from_its_state_file(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    import os

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("PREFECT_API_AUTH_STRING", raising=False)
    _state(tmp_path, api_url="http://127.0.0.1:4711/api", pid=os.getpid(), auth_string="qmsflow:x")
    assert prefect_api.locate(tmp_path) == prefect_api.Endpoint("http://127.0.0.1:4711/api", "qmsflow:x")
    # the same URL named by PREFECT_API_URL (as the stack's children have it) keeps the stack's credential
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4711/api")
    assert prefect_api.locate(tmp_path).auth_string == "qmsflow:x"
    # another server named by PREFECT_API_URL: Prefect's own settings authenticate, not our credential
    monkeypatch.setenv("PREFECT_API_URL", "https://prefect.example/api")
    assert prefect_api.locate(tmp_path) == prefect_api.Endpoint("https://prefect.example/api", None)


@pytest.mark.parametrize("state", ["absent", "dead pid", "garbage"])
def test_locate_says_the_stack_is_down_never_guesses_a_port(
    tmp_path, monkeypatch: pytest.MonkeyPatch, state: str
) -> None:  # noqa: ANN001
    import subprocess
    import sys

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    if state == "dead pid":
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait()
        _state(tmp_path, api_url="http://127.0.0.1:4711/api", pid=gone.pid, auth_string="qmsflow:x")
    elif state == "garbage":
        (tmp_path / "stack.json").write_text("{not json")
    with pytest.raises(prefect_api.PrefectUnavailable, match=r"the stack is not running \(start it with 'qms up'\)"):
        prefect_api.locate(tmp_path)
