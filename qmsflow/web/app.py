"""The qmsflow web app. ``create_app(ctx)``; served by ``qms web`` and by ``qms up``."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated
from urllib.parse import quote

from fastapi import BackgroundTasks, FastAPI, Header, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from slack_sdk.signature import SignatureVerifier
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..adapters import slack
from ..context import QmsContext
from ..domain.approvals import AlreadyDecided, Decision, Method, NotAuthorized
from ..paths import templates_dir
from ..services import approvals, tokens
from ..services.delivery import deliver
from ..services.records import NotFound
from ..store.uow import UnitOfWork
from .dashboard import LoginRequired, build_router
from .dashboard import _env as _error_env
from .slack_interactions import BadPayload, SlackInteractions, load_payload, parse

log = logging.getLogger("qmsflow.web")


class DecisionIn(BaseModel):
    decision: Decision
    comment: str | None = Field(default=None, max_length=5000)


class DecisionOut(BaseModel):
    request_id: str
    status: str
    decided: bool
    signer: str
    at: str


def create_app(ctx: QmsContext) -> FastAPI:
    interactions = SlackInteractions(ctx)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        receiver = None
        settings = slack.settings(ctx.config)
        if settings is not None and settings.socket_mode:
            from .socket_mode import SocketModeReceiver

            receiver = SocketModeReceiver(settings, interactions)
            receiver.start()
        try:
            yield
        finally:
            if receiver is not None:
                receiver.close()

    app = FastAPI(
        lifespan=lifespan,
        title="qmsflow",
        version="0.1.0",
        description="qmsflow web app: Slack interactivity and the approvals API.",
    )
    secret = slack.signing_secret(ctx.config)
    verifier = SignatureVerifier(secret) if secret else None  # 5-minute window is its default
    app.state.ctx = ctx
    app.state.interactions = interactions
    import prefect.flow_runs  # noqa: F401 - imported once at start, not on the first click

    prefect_ui = os.environ.get("QMS_PREFECT_UI_URL")
    app.include_router(build_router(ctx, prefect_ui))
    app.mount("/static", StaticFiles(directory=str(templates_dir() / "web" / "static")), name="static")

    @app.exception_handler(LoginRequired)
    async def _to_login(request: Request, exc: LoginRequired) -> Response:
        return RedirectResponse(f"{exc.page}?next={quote(exc.next_url, safe='')}", status_code=303)

    @app.exception_handler(StarletteHTTPException)
    async def _errors(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith(("/api/", "/slack/")) or "text/html" not in request.headers.get("accept", ""):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        html = (
            _error_env()
            .get_template("error.html")
            .render(
                status=exc.status_code, detail=exc.detail, user=None, org=ctx.config.organisation.name, prefect_ui=None
            )
        )
        return HTMLResponse(html, status_code=exc.status_code)

    @app.middleware("http")
    async def _security_headers(request: Request, call_next) -> Response:  # noqa: ANN001
        response = await call_next(request)
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
            "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        )
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        if request.url.scheme == "https":
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/slack/interactions", include_in_schema=False)
    async def slack_interactions(request: Request, background: BackgroundTasks) -> Response:
        body = await request.body()  # the raw body: the signature covers exactly these bytes
        if verifier is None:
            return JSONResponse({"error": "Slack is not configured (no signing secret)"}, status_code=503)
        if not verifier.is_valid(
            body, request.headers.get("X-Slack-Request-Timestamp", ""), request.headers.get("X-Slack-Signature", "")
        ):
            return JSONResponse({"error": "invalid Slack signature"}, status_code=401)
        try:
            interaction = parse(load_payload(body))
        except BadPayload as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        background.add_task(interactions.handle, interaction)  # ack now; Slack wants an answer within 3 s
        return Response(status_code=200)

    @app.post("/jira/webhook", include_in_schema=False)
    async def jira_webhook(request: Request) -> Response:
        """Jira webhooks: X-Hub-Signature verified on the raw body; repeats of one delivery ignored."""
        import json

        from ..adapters import jira
        from ..services import jira_sync

        body = await request.body()
        settings = jira.settings(ctx.config)
        if settings is None or not settings.webhook_secret:
            return JSONResponse({"error": "Jira is not configured (no webhook secret)"}, status_code=503)
        if not jira_sync.verify_signature(settings.webhook_secret, body, request.headers.get("X-Hub-Signature")):
            return JSONResponse({"error": "invalid webhook signature"}, status_code=401)
        try:
            payload = json.loads(body)
            if not isinstance(payload, dict):
                raise ValueError("not a JSON object")
            outcome = await run_in_threadpool(
                jira_sync.handle_webhook, ctx, request.headers.get("X-Atlassian-Webhook-Identifier"), payload
            )
        except (ValueError, jira_sync.BadWebhook) as exc:
            return JSONResponse({"error": f"malformed webhook: {exc}"}, status_code=400)
        await run_in_threadpool(deliver, ctx.db, ctx.config)
        return JSONResponse({"outcome": outcome})

    @app.post(
        "/api/approvals/{request_id}/decision",
        response_model=DecisionOut,
        responses={
            401: {"description": "missing, unknown, revoked or expired token"},
            403: {"description": "refused"},
            404: {"description": "no such request"},
            409: {"description": "already decided"},
        },
    )
    def api_decide(
        request_id: str, body: DecisionIn, request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> DecisionOut:
        """Sign an approval request with a personal API token (``Authorization: Bearer qms_…``)."""
        token = authorization.removeprefix("Bearer ").strip() if authorization else None
        if not token:
            raise HTTPException(401, "no API token: send 'Authorization: Bearer qms_…'", {"WWW-Authenticate": "Bearer"})
        try:
            identity = tokens.authenticate(
                ctx.db, token, source=f"api:{request.client.host if request.client else 'unknown'}"
            )
        except NotAuthorized as exc:
            raise HTTPException(401, str(exc), {"WWW-Authenticate": "Bearer"}) from None
        person = identity.person
        try:
            with UnitOfWork(ctx.db, person) as uow:
                result = approvals.decide(
                    uow,
                    ctx.config,
                    request_id,
                    person,
                    body.decision,
                    body.comment,
                    Method.WEB,
                    claimed=f"token:{identity.token_id}",
                )
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from None
        except AlreadyDecided as exc:
            raise HTTPException(409, str(exc)) from None
        except NotAuthorized as exc:
            raise HTTPException(403, str(exc)) from None
        approvals.after_decision(ctx, result)
        return DecisionOut(
            request_id=result.request_id,
            status=result.status.value,
            decided=result.decided,
            signer=result.signature.printed_name,
            at=result.signature.at.isoformat(),
        )

    return app
