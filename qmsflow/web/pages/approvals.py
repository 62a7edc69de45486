"""The approvals inbox, a request with what it asks to sign, and signing with the password again."""

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, BackgroundTasks, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ...adapters.render import markdown_to_html
from ...domain import limits
from ...domain.approvals import AlreadyDecided, Decision, NotAuthorized
from ...services import accounts, approvals, contents, queries
from ...services.records import NotFound
from ...services.signers import Credential
from ...store.uow import UnitOfWork
from ..site import Site, client_address


def router(site: Site) -> APIRouter:
    router = APIRouter(tags=["dashboard"])
    db = site.db
    User = site.User

    @router.get("/approvals", response_class=HTMLResponse)
    def approvals_inbox(request: Request, user: User) -> HTMLResponse:
        with db.read() as session:
            rows = queries.inbox(session, user.person)
            recent = queries.recent_requests(session, 20)
        return site.page(request, "approvals.html", user, rows=rows, recent=recent)

    @router.get("/approvals/{request_id}", response_class=HTMLResponse)
    def approval_detail(request: Request, request_id: str, user: User) -> HTMLResponse:
        with db.read() as session:
            row, signatures = queries.request_with_signatures(session, request_id)
            if row is None:
                raise HTTPException(404, f"no approval request {request_id}")
            may_sign = row.status == "pending" and any(r.id == row.id for r in queries.inbox(session, user.person))
            content = signed_content(session, row.content_sha256)
        return site.page(
            request,
            "approval.html",
            user,
            row=row,
            signatures=signatures,
            content=content,
            may_sign=may_sign and user.may("approver") and content is not None,
            error=None,
        )

    @router.post("/approvals/{request_id}")
    def approval_sign(
        request: Request,
        request_id: str,
        user: User,
        background: BackgroundTasks,
        decision: Annotated[str, Form(max_length=20)],
        password: Annotated[str, Form(max_length=1024)] = "",
        comment: Annotated[str, Form(max_length=limits.COMMENT)] = "",
        csrf: Annotated[str, Form(max_length=200)] = "",
    ) -> Response:
        site.check_csrf(user, csrf)
        try:
            choice = Decision(decision)
        except ValueError:
            raise HTTPException(400, f"decision {decision!r} is not allowed (approve, reject, changes)") from None
        try:  # both components again (§11.200), throttled like a sign-in
            confirmed = accounts.confirm_password(
                db, user.username, password, address=client_address(request), channel="web-sign"
            )
        except (accounts.TooManyAttempts, accounts.Busy) as exc:
            status = 429 if isinstance(exc, accounts.TooManyAttempts) else 503
            raise HTTPException(status, f"nothing was signed: {exc}", {"Retry-After": str(exc.retry_after)}) from None
        if not confirmed:
            site.refuse(user, f"sign {request_id}", "the password given to sign was wrong; nothing was signed")
        try:
            with UnitOfWork(db, user.person) as uow:
                result = approvals.decide(
                    uow, site.ctx.config, request_id, Credential.web(user.username), choice, comment or None
                )
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from None
        except (NotAuthorized, AlreadyDecided) as exc:
            raise HTTPException(403 if isinstance(exc, NotAuthorized) else 409, str(exc)) from None

        background.add_task(approvals.after_decision, site.ctx, result)  # after the answer: resume, Slack, Jira
        return RedirectResponse(f"/approvals/{quote(request_id)}", status_code=303)

    return router


def signed_content(session, content_sha256: str) -> dict | None:  # noqa: ANN001
    """What the request asks to sign, from the content store (never the working tree); None when the store
    does not hold it, and then nobody may sign (a signature covers only what the signer could see)."""
    stored = contents.load(session, content_sha256)
    if stored is None:
        return None
    if stored.is_record:
        step = contents.signed_step(stored)
        return {"kind": "record", "title": step.title, "fields": step.fields, "record": step.record}
    return {"kind": "document", "html": markdown_to_html(stored.text), "text": stored.text, "size": len(stored.body)}
