"""The qmsflow web app. ``create_app(ctx)``; served by ``qms web`` and by ``qms up``."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated
from urllib.parse import quote

from fastapi import BackgroundTasks, FastAPI, Header, HTTPException, Path, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from slack_sdk.signature import SignatureVerifier
from sqlalchemy.exc import DataError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..adapters import slack
from ..context import QmsContext
from ..domain import limits
from ..domain.approvals import AlreadyDecided, Decision, Method, NotAuthorized
from ..domain.errors import DomainError
from ..paths import templates_dir
from ..services import approvals, tokens
from ..services.delivery import deliver
from ..services.records import NotFound
from ..services.signers import Credential
from ..services.status import store_reachable
from ..store.uow import UnitOfWork
from .dashboard import LoginRequired, build_router
from .guard import Guard, security_headers
from .site import environment as _error_env
from .slack_interactions import BadPayload, SlackInteractions, load_payload, parse

log = logging.getLogger("qmsflow.web")


class DecisionIn(BaseModel):
    decision: Decision
    comment: limits.Text(limits.COMMENT, multiline=True) | None = None


class SubmissionIn(BaseModel):
    major: bool = False
    still_valid: bool = False
    comment: limits.Text(limits.COMMENT, multiline=True) | None = None


class SubmissionOut(BaseModel):
    submission_id: str
    document_id: str
    flow_run_id: str | None
    authors: list[str]
    unmapped_authors: list[str]
    unverified_authors: list[str]


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
        docs_url=None,  # served below with Swagger UI's files from this server: no CDN, our CSP holds
        redoc_url=None,
    )
    secret = slack.signing_secret(ctx.config)
    verifier = SignatureVerifier(secret) if secret else None  # 5-minute window is its default
    app.state.ctx = ctx
    app.state.interactions = interactions
    import prefect.flow_runs  # noqa: F401 - imported once at start, not on the first click

    prefect_ui = os.environ.get("QMS_PREFECT_UI_URL")
    app.include_router(build_router(ctx, prefect_ui))
    app.mount("/static/swagger-ui", StaticFiles(directory=str(_swagger_ui_files())), name="swagger-ui")
    app.mount("/static", StaticFiles(directory=str(templates_dir() / "web" / "static")), name="static")
    app.add_middleware(Guard, max_body=ctx.config.web.max_request_kib * 1024)

    def error_response(request: Request, status: int, detail: str, headers: dict | None = None) -> Response:
        """JSON for API clients and machines, the error page for browsers."""
        if request.url.path.startswith(("/api/", "/slack/", "/jira/")) or "text/html" not in request.headers.get(
            "accept", ""
        ):
            return JSONResponse({"detail": detail}, status_code=status, headers=headers)
        html = (
            _error_env()
            .get_template("error.html")
            .render(status=status, detail=detail, user=None, org=ctx.config.organisation.name, prefect_ui=None)
        )
        return HTMLResponse(html, status_code=status, headers=headers)

    @app.exception_handler(LoginRequired)
    async def _to_login(request: Request, exc: LoginRequired) -> Response:
        return RedirectResponse(f"{exc.page}?next={quote(exc.next_url, safe='')}", status_code=303)

    @app.exception_handler(StarletteHTTPException)
    async def _errors(request: Request, exc: StarletteHTTPException) -> Response:
        return error_response(request, exc.status_code, exc.detail, exc.headers)

    @app.exception_handler(DomainError)
    async def _refused(request: Request, exc: DomainError) -> Response:
        """A rule or an input limit said no (e.g. limits.InvalidInput): the message is for the user."""
        return error_response(request, 400, str(exc))

    @app.exception_handler(DataError)
    async def _unstorable(request: Request, exc: DataError) -> Response:
        """A value the database cannot hold that no edge check caught: a bad request, logged to be fixed."""
        log.warning("%s %s: the records store refused a value: %s", request.method, request.url.path, exc.orig)
        return error_response(request, 400, "a value of this request cannot be stored (too long or not text)")

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> Response:
        """The last resort: a plain error with the security headers (this answer skips the Guard); trace logged."""
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        response = error_response(request, 500, "internal error: the server logged it; please report it")
        response.headers.update(security_headers(request.url.scheme == "https"))
        return response

    @app.get("/docs", include_in_schema=False)
    def api_docs() -> HTMLResponse:
        """Swagger UI from this server's own files (the fastapi-offline package); no inline script."""
        return HTMLResponse(_error_env().get_template("api-docs.html").render(openapi_url=app.openapi_url))

    @app.get("/health")
    def health() -> dict[str, str]:
        """Liveness: the process answers (no dependency is checked)."""
        return {"status": "ok"}

    @app.get("/ready")
    def ready() -> JSONResponse:
        """Readiness: the records store answers; 503 while it does not (take the replica out of rotation)."""
        if store_reachable(ctx.db):
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "unavailable", "reason": "the records store does not answer"}, status_code=503)

    @app.post("/slack/interactions", include_in_schema=False)
    async def slack_interactions(request: Request, background: BackgroundTasks) -> Response:
        body = await request.body()  # the raw body (at most the Guard's limit): the signature covers these bytes
        if verifier is None:
            return JSONResponse({"error": "Slack is not configured (no signing secret)"}, status_code=503)
        timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
        signature = request.headers.get("X-Slack-Signature", "")
        if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
            return JSONResponse({"error": "missing or malformed X-Slack-Request-Timestamp"}, status_code=401)
        if not signature.isascii():
            return JSONResponse({"error": "invalid Slack signature"}, status_code=401)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return JSONResponse({"error": "the body is not UTF-8, so Slack did not send it"}, status_code=400)
        if not verifier.is_valid(text, timestamp, signature):
            return JSONResponse({"error": "invalid Slack signature"}, status_code=401)
        try:
            interaction = parse(load_payload(text))
        except BadPayload as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        background.add_task(interactions.handle, interaction)  # ack now; Slack wants an answer within 3 s
        return Response(status_code=200)

    @app.post("/jira/webhook", include_in_schema=False)
    async def jira_webhook(request: Request) -> Response:
        """Jira webhooks: X-Hub-Signature verified on the raw body; a delivery applies once, within its window."""
        from ..adapters import jira
        from ..services import jira_sync

        body = await request.body()  # at most the Guard's limit, read before the signature is checked
        settings = jira.settings(ctx.config)
        if settings is None or not settings.webhook_secret:
            return JSONResponse({"error": "Jira is not configured (no webhook secret)"}, status_code=503)
        if not jira_sync.verify_signature(settings.webhook_secret, body, request.headers.get("X-Hub-Signature")):
            return JSONResponse({"error": "invalid webhook signature"}, status_code=401)
        try:
            payload = limits.parse_json(body, "webhook body", depth=32)
            if not isinstance(payload, dict):
                raise jira_sync.BadWebhook("not a JSON object")
            outcome = await run_in_threadpool(
                jira_sync.handle_webhook, ctx, body, payload, request.headers.get("X-Atlassian-Webhook-Identifier")
            )
        except (limits.InvalidInput, jira_sync.BadWebhook) as exc:
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
        request_id: Annotated[str, Path(max_length=limits.RECORD_ID)],
        body: DecisionIn,
        request: Request,
        background: BackgroundTasks,
        authorization: Annotated[str | None, Header(max_length=1000)] = None,
    ) -> DecisionOut:
        """Sign an approval request with a personal API token (``Authorization: Bearer qms_…``).

        Answers as soon as the decision is committed; resuming the flow run and delivering the Slack and
        Jira updates follow after the answer (a client gone by then still has its decision recorded).
        """
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
                credential = Credential.token(Method.API, identity.username, identity.token_id)
                result = approvals.decide(uow, ctx.config, request_id, credential, body.decision, body.comment)
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from None
        except AlreadyDecided as exc:
            raise HTTPException(409, str(exc)) from None
        except NotAuthorized as exc:
            raise HTTPException(403, str(exc)) from None
        background.add_task(approvals.after_decision, ctx, result)
        return DecisionOut(
            request_id=result.request_id,
            status=result.status.value,
            decided=result.decided,
            signer=result.signature.printed_name,
            at=result.signature.at.isoformat(),
        )

    @app.post(
        "/api/documents/{document_id}/submissions",
        response_model=SubmissionOut,
        status_code=201,
        responses={401: {"description": "missing or unknown token"}, 409: {"description": "cannot be reviewed now"}},
    )
    def api_submit(
        document_id: Annotated[str, Path(max_length=limits.ID)],
        body: SubmissionIn,
        request: Request,
        authorization: Annotated[str | None, Header(max_length=1000)] = None,
    ) -> SubmissionOut:
        """Submit a document for review in the name of the token's person (e.g. from CI after a merge).

        The text kept for the approvers is the file as it is in this deployment's compliance repo now.
        """
        from ..adapters import prefect_api
        from ..domain.errors import DomainError
        from ..services import review

        token = authorization.removeprefix("Bearer ").strip() if authorization else None
        if not token:
            raise HTTPException(401, "no API token: send 'Authorization: Bearer qms_…'", {"WWW-Authenticate": "Bearer"})
        try:
            person = tokens.authenticate(
                ctx.db, token, source=f"api:{request.client.host if request.client else 'unknown'}"
            ).person
        except NotAuthorized as exc:
            raise HTTPException(401, str(exc), {"WWW-Authenticate": "Bearer"}) from None
        try:
            with UnitOfWork(ctx.db, person) as uow:
                row = review.submit_document(
                    uow,
                    ctx.config,
                    ctx.root,
                    document_id=document_id,
                    submitted_by=person,
                    major=body.major,
                    still_valid=body.still_valid,
                    comment=body.comment,
                )
                uow.commit()
                submission_id, data = row.id, dict(row.data)
        except DomainError as exc:
            raise HTTPException(409, str(exc)) from None
        try:
            run_id = prefect_api.start_run(
                prefect_api.locate(ctx.loaded.state_dir),
                "document-review/on-demand",
                {"submission_id": submission_id},
                idempotency_key=f"submission:{submission_id}",
            )
        except prefect_api.PrefectUnavailable as exc:
            log.warning("%s recorded; its review starts later: %s", submission_id, exc)
            run_id = None
        return SubmissionOut(
            submission_id=submission_id,
            document_id=document_id,
            flow_run_id=run_id,
            authors=list(dict.fromkeys([person, *data.get("authors", [])])),
            unmapped_authors=list(data.get("unmapped_authors", [])),
            unverified_authors=list(data.get("unverified_authors", [])),
        )

    return app


def _swagger_ui_files():  # noqa: ANN202
    """Swagger UI's JavaScript and CSS as the fastapi-offline package ships them."""
    from pathlib import Path as FilePath

    import fastapi_offline

    return FilePath(fastapi_offline.__file__).parent / "static"
