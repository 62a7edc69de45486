"""The dashboard: signed-in, server-rendered pages over the records store.

Sign-in with local accounts (argon2), throttled per account and client address (429 with
Retry-After), a signed double-submit CSRF token on the sign-in form, a fresh opaque session cookie
(HttpOnly, SameSite=Lax) at every sign-in, a CSRF token in every form, a password change before
anything else when the account must change it, roles viewer < approver < admin, and the password
asked again to sign (21 CFR Part 11 §11.200 as the reference). Refusals are answered 403 and
recorded in the trail.
"""

import mimetypes
import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, BackgroundTasks, Depends, Form, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import AfterValidator
from sqlalchemy import select

from ..context import QmsContext
from ..domain import limits
from ..domain.approvals import AlreadyDecided, Decision, Method, NotAuthorized
from ..domain.capa import STAGE_TITLES
from ..domain.errors import DomainError
from ..paths import templates_dir
from ..services import accounts, approvals, dashboard, outbox, throttle
from ..services.delivery import deliver
from ..services.records import NotFound
from ..services.status import process_status
from ..store.tables import ApprovalRequestRow, DocumentRow, SignatureRow
from ..store.uow import UnitOfWork
from . import charts

COOKIE = "qms_session"
LOGIN_FORM_COOKIE = "qms_login_form"
PASSWORD_PAGE = "/account/password"


class LoginRequired(Exception):
    """Raised by the auth dependency; the app answers with a redirect to /login."""

    page = "/login"

    def __init__(self, next_url: str):
        self.next_url = next_url


class PasswordChangeRequired(LoginRequired):
    """Signed in, but the account must change its password before anything else."""

    page = PASSWORD_PAGE


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _env() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(templates_dir() / "web")),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["dt"] = lambda d: f"{d:%Y-%m-%d %H:%M}" if d else ""
    env.filters["d"] = lambda d: d.isoformat() if d else ""
    env.filters["quote"] = lambda s: quote(str(s), safe="")
    return env


def build_router(ctx: QmsContext, prefect_ui: str | None = None) -> APIRouter:
    router = APIRouter(tags=["dashboard"])
    env = _env()
    db = ctx.db

    def page(request: Request, name: str, user: accounts.SignedIn | None, status: int = 200, **context) -> HTMLResponse:
        html = env.get_template(name).render(
            request=request, user=user, org=ctx.config.organisation.name, prefect_ui=prefect_ui, **context
        )
        return HTMLResponse(html, status_code=status)

    def any_user(request: Request) -> accounts.SignedIn:
        """Signed in, whether or not the password must be changed first."""
        user = accounts.session_user(db, request.cookies.get(COOKIE))
        if user is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise LoginRequired(target)
        return user

    def current_user(request: Request) -> accounts.SignedIn:
        user = any_user(request)
        if user.must_change_password:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise PasswordChangeRequired(target)
        return user

    User = Annotated[accounts.SignedIn, Depends(current_user)]
    AnyUser = Annotated[accounts.SignedIn, Depends(any_user)]
    form_key = accounts.login_form_key(db)

    def check_csrf(user: accounts.SignedIn, token: str) -> None:
        import hmac

        if not hmac.compare_digest(user.csrf_token.encode(), (token or "").encode("utf-8", "replace")):
            raise HTTPException(403, "the form has expired or did not come from this site (CSRF check failed)")

    def refuse(user: accounts.SignedIn, what: str, reason: str) -> None:
        with UnitOfWork(db, user.person) as uow:
            uow.record("web.refused", f"user:{user.username}", None, {"attempted": what, "reason": reason})
            uow.commit()
        raise HTTPException(403, reason)

    # ------------------------------------------------------------------ sign-in

    def login_page(request: Request, next_url: str, error: str | None, status: int = 200, **headers: str) -> Response:
        """The sign-in form with a fresh signed double-submit token (cookie + hidden field)."""
        token = accounts.new_login_form_token(form_key)
        response = page(request, "login.html", None, status=status, next=_safe_next(next_url), error=error, csrf=token)
        response.set_cookie(
            LOGIN_FORM_COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            max_age=int(accounts.LOGIN_FORM_MAX_AGE.total_seconds()),
            path="/login",
        )
        for name, value in headers.items():
            response.headers[name.replace("_", "-")] = value
        return response

    def set_session(request: Request, response: Response, cookie: str) -> Response:
        response.set_cookie(
            COOKIE,
            cookie,
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
            max_age=accounts.SESSION_HOURS * 3600,
            path="/",
        )
        return response

    @router.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = "/") -> Response:  # noqa: A002
        return login_page(request, next, None)

    @router.post("/login")
    def login(
        request: Request,
        username: Annotated[str, Form(max_length=limits.ID), AfterValidator(limits.validator(limits.ID))],
        password: Annotated[str, Form(max_length=accounts.MAX_PASSWORD)],
        next: Annotated[str, Form(max_length=2000)] = "/",  # noqa: A002
        csrf: Annotated[str, Form(max_length=200)] = "",
    ) -> Response:
        address = client_address(request)
        if not accounts.login_form_token_ok(form_key, request.cookies.get(LOGIN_FORM_COOKIE), csrf):
            throttle.note(
                db,
                f"login-form:{address}",
                actor=f"web:{address}",
                action="sign-in.form-refused",
                ref=f"security:address:{address}",
                detail={"address": address, "username": username[:64], "reason": "no valid sign-in form token"},
            )
            return login_page(
                request,
                next,
                "The sign-in form has expired or did not come from this site. Please sign in again.",
                status=403,
            )
        try:
            user = accounts.sign_in(db, username, password, address=address, channel="web")
        except accounts.TooManyAttempts as exc:
            return login_page(request, next, f"Not signed in: {exc}.", status=429, retry_after=str(exc.retry_after))
        except accounts.Busy as exc:
            return login_page(request, next, f"Not signed in: {exc}.", status=503, retry_after=str(exc.retry_after))
        except accounts.SignInFailed:
            return login_page(request, next, "Unknown user or wrong password.", status=401)
        # a fresh session id at every sign-in; the session this browser presented (if any) ends
        cookie = accounts.start_session(db, user.username, replaces=request.cookies.get(COOKIE))
        target = _safe_next(next)
        if user.must_change_password:
            target = f"{PASSWORD_PAGE}?next={quote(target, safe='')}"
        response = set_session(request, RedirectResponse(target, status_code=303), cookie)
        response.delete_cookie(LOGIN_FORM_COOKIE, path="/login")
        return response

    @router.get(PASSWORD_PAGE, response_class=HTMLResponse)
    def password_form(request: Request, user: AnyUser, next: str = "/") -> HTMLResponse:  # noqa: A002
        return page(request, "password.html", user, next=_safe_next(next), error=None)

    @router.post(PASSWORD_PAGE)
    def password_change(
        request: Request,
        user: AnyUser,
        current: Annotated[str, Form(max_length=accounts.MAX_PASSWORD)],
        new: Annotated[str, Form(max_length=accounts.MAX_PASSWORD)],
        confirm: Annotated[str, Form(max_length=accounts.MAX_PASSWORD)],
        csrf: Annotated[str, Form(max_length=200)] = "",
        next: Annotated[str, Form(max_length=2000)] = "/",  # noqa: A002
    ) -> Response:
        check_csrf(user, csrf)

        def again(error: str, status: int, **headers: str) -> HTMLResponse:
            response = page(request, "password.html", user, status=status, next=_safe_next(next), error=error)
            for name, value in headers.items():
                response.headers[name.replace("_", "-")] = value
            return response

        if new != confirm:
            return again("The new password and its confirmation differ.", 400)
        try:
            accounts.sign_in(db, user.username, current, address=client_address(request), channel="web")
        except accounts.TooManyAttempts as exc:
            return again(f"Not changed: {exc}.", 429, retry_after=str(exc.retry_after))
        except accounts.Busy as exc:
            return again(f"Not changed: {exc}.", 503, retry_after=str(exc.retry_after))
        except accounts.SignInFailed:
            return again("The current password is wrong.", 401)
        try:
            with UnitOfWork(db, user.person) as uow:
                accounts.change_password(uow, user.username, new)
        except DomainError as exc:
            return again(f"Not changed: {exc}.", 400)
        # every other session of the user ends; this one continues under a fresh id
        accounts.end_other_sessions(db, user.username, request.cookies.get(COOKIE))
        cookie = accounts.start_session(db, user.username, replaces=request.cookies.get(COOKIE))
        return set_session(request, RedirectResponse(_safe_next(next), status_code=303), cookie)

    @router.post("/logout")
    def logout(request: Request, user: AnyUser, csrf: Annotated[str, Form()] = "") -> Response:
        check_csrf(user, csrf)
        accounts.end_session(db, request.cookies.get(COOKIE))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    # ------------------------------------------------------------------ pages

    @router.get("/", response_class=HTMLResponse)
    def overview(request: Request, user: User) -> HTMLResponse:
        with db.read() as session:
            verification = dashboard.last_verification(session)
            pending = dashboard.pending_count(session)
            mine = len(dashboard.inbox(session, user.person))
        processes = process_status(db)
        return page(
            request,
            "overview.html",
            user,
            processes=processes,
            verification=verification,
            pending=pending,
            mine=mine,
            backlog=outbox.backlog(db),
        )

    @router.get("/approvals", response_class=HTMLResponse)
    def approvals_inbox(request: Request, user: User) -> HTMLResponse:
        with db.read() as session:
            rows = dashboard.inbox(session, user.person)
            recent = session.scalars(
                select(ApprovalRequestRow).order_by(ApprovalRequestRow.created_at.desc()).limit(20)
            ).all()
        return page(request, "approvals.html", user, rows=rows, recent=recent)

    @router.get("/approvals/{request_id}", response_class=HTMLResponse)
    def approval_detail(request: Request, request_id: str, user: User) -> HTMLResponse:
        with db.read() as session:
            row = session.get(ApprovalRequestRow, request_id)
            if row is None:
                raise HTTPException(404, f"no approval request {request_id}")
            signatures = session.scalars(
                select(SignatureRow).where(SignatureRow.request_id == request_id).order_by(SignatureRow.id)
            ).all()
            may_sign = row.status == "pending" and any(r.id == row.id for r in dashboard.inbox(session, user.person))
            content = signed_content(session, row)
        return page(
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
        check_csrf(user, csrf)
        if not user.may("approver"):
            refuse(user, f"sign {request_id}", f"{user.username} is a viewer: viewers cannot sign approvals")
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
            refuse(user, f"sign {request_id}", "the password given to sign was wrong; nothing was signed")
        try:
            with UnitOfWork(db, user.person) as uow:
                result = approvals.decide(
                    uow,
                    ctx.config,
                    request_id,
                    user.person,
                    choice,
                    comment or None,
                    Method.WEB,
                    claimed=f"web:{user.username}",
                )
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from None
        except (NotAuthorized, AlreadyDecided) as exc:
            raise HTTPException(403 if isinstance(exc, NotAuthorized) else 409, str(exc)) from None

        background.add_task(approvals.after_decision, ctx, result)  # after the answer: resume, Slack, Jira
        return RedirectResponse(f"/approvals/{quote(request_id)}", status_code=303)

    @router.get("/documents", response_class=HTMLResponse)
    def documents_page(request: Request, user: User, page_no: Annotated[int, Query(alias="page", ge=1, le=10_000)] = 1):
        today = datetime.now(UTC).date()
        with db.read() as session:
            docs, current = dashboard.documents(session, today, page_no)
            people = dashboard.names(session)
            registered = dashboard.registered_on(session, [d[0].id for d in docs.rows])
        rows = [
            (d[0], current.get(d[0].id), dashboard.review_flag(current.get(d[0].id), registered.get(d[0].id), today))
            for d in docs.rows
        ]
        return page(request, "documents.html", user, rows=rows, pager=docs, people=people)

    @router.get("/documents/{doc_id}", response_class=HTMLResponse)
    def document_page(
        request: Request, doc_id: str, user: User, page_no: Annotated[int, Query(alias="page", ge=1, le=10_000)] = 1
    ) -> HTMLResponse:
        with db.read() as session:
            doc = session.get(DocumentRow, doc_id)
            if doc is None:
                raise HTTPException(404, f"no document {doc_id}")
            versions, signatures = dashboard.document_history(session, doc_id, page_no)
            people = dashboard.names(session)
            current = dashboard.effective(session, doc_id)
        rendered = {v[0].version: _rendered(ctx, doc_id, v[0].version) for v in versions.rows}
        return page(
            request,
            "document.html",
            user,
            doc=doc,
            versions=versions,
            signatures=signatures,
            people=people,
            rendered=rendered,
            current=current,
            today=date.today(),
        )

    @router.get("/documents/{doc_id}/current/{kind}")
    def current_file(doc_id: str, kind: str, user: User) -> FileResponse:
        """The controlled copy of the effective version: what 'current' means, always."""
        with db.read() as session:
            current = dashboard.effective(session, doc_id)
        if current is None:
            raise HTTPException(404, f"{doc_id} has no effective version")
        return document_file(doc_id, current.version, kind, user)

    @router.get("/documents/{doc_id}/{version}/{kind}")
    def document_file(doc_id: str, version: str, kind: str, user: User) -> FileResponse:
        if kind not in ("pdf", "html"):
            raise HTTPException(404, "only pdf and html renderings exist")
        if not (_FILE_PART.fullmatch(doc_id) and _FILE_PART.fullmatch(version)):
            raise HTTPException(404, "no such document version")
        path = _rendered(ctx, doc_id, version).get(kind)
        if path is None:
            raise HTTPException(404, f"{doc_id} v{version} has no rendered {kind}")
        media = mimetypes.types_map.get(f".{kind}", "application/octet-stream")
        return FileResponse(path, media_type=media, filename=path.name)

    @router.get("/capas", response_class=HTMLResponse)
    def capas_page(request: Request, user: User, page_no: Annotated[int, Query(alias="page", ge=1, le=10_000)] = 1):
        today = datetime.now(UTC).date()
        with db.read() as session:
            board = dashboard.capa_board(session)
            late = dashboard.overdue(session, today, page_no, kind="capa")
            people = dashboard.names(session)
        return page(request, "capas.html", user, board=board, titles=STAGE_TITLES, late=late, people=people)

    @router.get("/trail", response_class=HTMLResponse)
    def trail_page(
        request: Request,
        user: User,
        record: Annotated[str | None, Query(max_length=200)] = None,
        actor: Annotated[str | None, Query(max_length=200)] = None,
        since: Annotated[date | None, Query()] = None,
        until: Annotated[date | None, Query()] = None,
        before: Annotated[int | None, Query(ge=1, le=limits.INT_MAX)] = None,
    ) -> HTMLResponse:
        with db.read() as session:
            events = dashboard.trail_search(
                session,
                record or None,
                actor or None,
                datetime.combine(since, datetime.min.time(), UTC) if since else None,
                datetime.combine(until, datetime.min.time(), UTC) if until else None,
                before,
            )
            head = dashboard.trail_head(session)
            verification = dashboard.last_verification(session)
        return page(
            request,
            "trail.html",
            user,
            events=events,
            head=head,
            verification=verification,
            filters={"record": record or "", "actor": actor or "", "since": since, "until": until},
        )

    @router.get("/charts/{name}.svg")
    def chart(name: str, user: User) -> Response:
        now = datetime.now(UTC)
        with db.read() as session:
            if name == "capa-ageing":
                svg = charts.cached(
                    name,
                    lambda: charts.bar(
                        "Open CAPAs by age", "open CAPAs", dashboard.capa_ageing(session, now), "open CAPAs"
                    ),
                )
            elif name == "overdue":
                svg = charts.cached(
                    name,
                    lambda: charts.bar(
                        "Items not done by their due date, by due month",
                        "overdue",
                        dashboard.overdue_by_month(session, now.date()),
                        "items",
                    ),
                )
            elif name == "approval-lead-time":
                svg = charts.cached(
                    name,
                    lambda: charts.histogram(
                        "Approval lead time, last 12 months", dashboard.approval_lead_times(session, now), "days"
                    ),
                )
            else:
                raise HTTPException(404, f"no chart {name}")
        return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "private, max-age=60"})

    # ------------------------------------------------------------------ outbox (messages to Slack and Jira)

    @router.get("/outbox", response_class=HTMLResponse)
    def outbox_page(request: Request, user: User) -> HTMLResponse:
        return page(request, "outbox.html", user, messages=outbox.messages(db), may_act=user.may("admin"))

    @router.post("/outbox/{message_id}/{act}")
    def outbox_act(
        message_id: int,
        act: str,
        user: User,
        background: BackgroundTasks,
        csrf: Annotated[str, Form(max_length=200)] = "",
    ) -> Response:
        check_csrf(user, csrf)
        if act not in ("retry", "drop"):
            raise HTTPException(404, f"no outbox action {act!r} (retry, drop)")
        if not user.may("admin"):
            refuse(
                user,
                f"{act} outbox message #{message_id}",
                f"{user.username} is not an admin: only admins may retry or drop outbox messages",
            )
        try:
            with UnitOfWork(db, user.person) as uow:
                (outbox.retry if act == "retry" else outbox.drop)(uow, message_id)
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from None
        except DomainError as exc:
            raise HTTPException(409, str(exc)) from None
        if act == "retry":
            background.add_task(deliver, db, ctx.config)
        return RedirectResponse("/outbox", status_code=303)

    @router.get("/ping", response_class=HTMLResponse)
    def ping(request: Request, user: User) -> HTMLResponse:
        """A trivial signed-in page: the baseline of bench/dashboard.py."""
        return HTMLResponse(f"<!doctype html><title>ok</title><p>{user.username}")

    return router


_FILE_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # document ids and versions, as files are named


def _safe_next(target: str) -> str:
    """Only local paths: never redirect to another site after sign-in."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


def _rendered(ctx: QmsContext, doc_id: str, version: str) -> dict[str, Path]:
    base = (ctx.loaded.state_dir / "rendered").resolve()
    folder = (base / doc_id / version).resolve()
    if not folder.is_relative_to(base) or not folder.is_dir():
        return {}
    out = {}
    for kind in ("pdf", "html"):
        path = folder / f"{doc_id}-v{version}.{kind}"
        if path.is_file():
            out[kind] = path
    return out


def signed_content(session, row: ApprovalRequestRow) -> dict | None:  # noqa: ANN001
    """What the request asks to sign, from the content store (never the working tree); None when the store
    does not hold it, and then nobody may sign (a signature covers only what the signer could see)."""
    from ..services import contents
    from ..services.render import markdown_to_html

    stored = contents.load(session, row.content_sha256)
    if stored is None:
        return None
    if stored.is_record:
        step = contents.signed_step(stored)
        return {"kind": "record", "title": step.title, "fields": step.fields, "record": step.record}
    return {"kind": "document", "html": markdown_to_html(stored.text), "text": stored.text, "size": len(stored.body)}
