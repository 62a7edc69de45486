"""Schemathesis fuzzes every operation of the web app's OpenAPI: no input may cause a 5xx.

Run signed in (a session cookie, with its CSRF token) and anonymous, and with an API token.
"""

from __future__ import annotations

import re

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from identityutil import password_of, token

from qmsflow.services import approvals, contents
from qmsflow.services.sync import sync_config
from qmsflow.store import UnitOfWork
from qmsflow.web.app import create_app
from qmsflow.web.dashboard import COOKIE

state: dict = {}


def _build_app():  # noqa: ANN202
    """A scaffolded repo with a signed-in approver, an API token and a pending request (at import:
    schemathesis needs the app when it collects the tests)."""
    import os
    import tempfile
    from pathlib import Path

    from qmsflow.context import open_context
    from qmsflow.scaffold import scaffold

    os.environ.pop("QMS_DATABASE_URL", None)
    repo = Path(tempfile.mkdtemp(prefix="qms-fuzz-")) / "repo"
    scaffold(repo, git=False)
    ctx = open_context(repo / "qms.yaml", migrate=True)
    with UnitOfWork(ctx.db, "qmsflow") as uow:
        sync_config(uow, ctx.config, ctx.root)
        uow.commit()
    state["token"] = token(ctx.db, "ben")
    with UnitOfWork(ctx.db, "chloe") as uow:
        approvals.open_request(
            uow,
            ctx.config,
            key="fz",
            subject="test-step:T-1@1",
            required=1,
            title="t",
            content_sha256=contents.store(uow, b"# SOP-DES-001\n\nThe text under review.\n", contents.MARKDOWN),
            approvers=["ben"],
            meaning="m",
            author="chloe",
        )
        uow.commit()
    application = create_app(ctx)
    client = TestClient(application)
    form = client.get("/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
    client.post("/login", data={"username": "ben", "password": password_of("ben"), "next": "/", "csrf": csrf})
    state["cookie"] = client.cookies[COOKIE]
    return application


schema = schemathesis.openapi.from_asgi("/openapi.json", _build_app())


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_error_on_any_input(case) -> None:  # noqa: ANN001
    base_headers = dict(case.headers or {})
    for who in ("anonymous", "session", "token"):
        headers, cookies = dict(base_headers), {}
        if who == "session":
            cookies[COOKIE] = state["cookie"]
        elif who == "token":
            headers["Authorization"] = f"Bearer {state['token']}"
        case.headers = headers
        response = case.call(cookies=cookies)
        assert response.status_code < 500, (
            f"{who}: {case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
        )
