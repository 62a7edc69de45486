"""Sign-in, password change, sign-out."""

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import AfterValidator

from ...domain import limits
from ...domain.errors import DomainError
from ...services import accounts, throttle
from ...store.uow import UnitOfWork
from ..site import COOKIE, LOGIN_FORM_COOKIE, PASSWORD_PAGE, Site, client_address, safe_next


def router(site: Site) -> APIRouter:
    router = APIRouter(tags=["dashboard"])
    db = site.db
    AnyUser = site.AnyUser

    def login_page(request: Request, next_url: str, error: str | None, status: int = 200, **headers: str) -> Response:
        """The sign-in form with a fresh signed double-submit token (cookie + hidden field)."""
        token = accounts.new_login_form_token(site.form_key)
        response = site.page(
            request, "login.html", None, status=status, next=safe_next(next_url), error=error, csrf=token
        )
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
        if not accounts.login_form_token_ok(site.form_key, request.cookies.get(LOGIN_FORM_COOKIE), csrf):
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
        target = safe_next(next)
        if user.must_change_password:
            target = f"{PASSWORD_PAGE}?next={quote(target, safe='')}"
        response = set_session(request, RedirectResponse(target, status_code=303), cookie)
        response.delete_cookie(LOGIN_FORM_COOKIE, path="/login")
        return response

    @router.get(PASSWORD_PAGE, response_class=HTMLResponse)
    def password_form(request: Request, user: AnyUser, next: str = "/") -> HTMLResponse:  # noqa: A002
        return site.page(request, "password.html", user, next=safe_next(next), error=None)

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
        site.check_csrf(user, csrf)

        def again(error: str, status: int, **headers: str) -> HTMLResponse:
            response = site.page(request, "password.html", user, status=status, next=safe_next(next), error=error)
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
        return set_session(request, RedirectResponse(safe_next(next), status_code=303), cookie)

    @router.post("/logout")
    def logout(request: Request, user: AnyUser, csrf: Annotated[str, Form()] = "") -> Response:
        site.check_csrf(user, csrf)
        accounts.end_session(db, request.cookies.get(COOKIE))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    return router
