"""The qmsflow web app. ``create_app(ctx)``; served by ``qms web`` and by ``qms up``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import BackgroundTasks, FastAPI, Header, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from slack_sdk.signature import SignatureVerifier

from ..adapters import prefect_api, slack
from ..context import QmsContext
from ..domain.approvals import AlreadyDecided, Decision, Method, NotAuthorized
from ..services import approvals, tokens
from ..services.delivery import deliver
from ..services.records import NotFound
from ..store.uow import UnitOfWork
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

    @app.post(
        "/api/approvals/{request_id}/decision",
        response_model=DecisionOut,
        responses={
            401: {"description": "missing or unknown token"},
            403: {"description": "refused"},
            404: {"description": "no such request"},
            409: {"description": "already decided"},
        },
    )
    def api_decide(
        request_id: str, body: DecisionIn, authorization: Annotated[str | None, Header()] = None
    ) -> DecisionOut:
        """Sign an approval request with a personal API token (``Authorization: Bearer qms_…``)."""
        token = authorization.removeprefix("Bearer ").strip() if authorization else None
        try:
            person = tokens.authenticate(ctx.db, token)
        except NotAuthorized as exc:
            raise HTTPException(401, str(exc)) from None
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
                    claimed=f"token:{person}",
                )
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from None
        except AlreadyDecided as exc:
            raise HTTPException(409, str(exc)) from None
        except NotAuthorized as exc:
            raise HTTPException(403, str(exc)) from None
        resume_if_decided(ctx, result)
        return DecisionOut(
            request_id=result.request_id,
            status=result.status.value,
            decided=result.decided,
            signer=result.signature.printed_name,
            at=result.signature.at.isoformat(),
        )

    return app


def resume_if_decided(ctx: QmsContext, result: approvals.DecisionResult) -> None:
    if result.decided and result.flow_run_id:
        try:
            prefect_api.resume(
                prefect_api.api_url(ctx.loaded.state_dir),
                result.flow_run_id,
                {"request_id": result.request_id, "status": result.status.value},
            )
        except prefect_api.PrefectUnavailable as exc:
            log.warning("%s (the hourly follow-up flow resumes it later)", exc)
    deliver(ctx.db, ctx.config)
