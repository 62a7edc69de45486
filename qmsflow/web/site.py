"""What every dashboard page shares: templates, the signed-in user, CSRF, recorded refusals.

Sign-in with local accounts (argon2), throttled per account and client address (429 with
Retry-After), a signed double-submit CSRF token on the sign-in form, a fresh opaque session cookie
(HttpOnly, SameSite=Lax) at every sign-in, a CSRF token in every form, a password change before
anything else when the account must change it, roles viewer < approver < admin, and the password
asked again to sign (21 CFR Part 11 §11.200 as the reference). Refusals are answered 403 and
recorded in the trail. Each area of the dashboard is one router in ``web/pages/`` built on a ``Site``.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from ..context import QmsContext
from ..domain.errors import DomainError
from ..paths import templates_dir
from ..services import accounts
from ..services.delivery import deliver
from ..store.uow import UnitOfWork

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


def safe_next(target: str) -> str:
    """Only local paths: never redirect to another site after sign-in."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


def environment() -> Environment:
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


def _target(request: Request) -> str:
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


class Site:
    """The dashboard's shared parts, built once per app."""

    def __init__(self, ctx: QmsContext, prefect_ui: str | None = None):
        self.ctx = ctx
        self.db = ctx.db
        self.prefect_ui = prefect_ui
        self.env = environment()
        self.form_key = accounts.login_form_key(ctx.db)

    def page(
        self, request: Request, name: str, user: accounts.SignedIn | None, status: int = 200, **context
    ) -> HTMLResponse:
        html = self.env.get_template(name).render(
            request=request, user=user, org=self.ctx.config.organisation.name, prefect_ui=self.prefect_ui, **context
        )
        return HTMLResponse(html, status_code=status)

    def any_user(self, request: Request) -> accounts.SignedIn:
        """Signed in, whether or not the password must be changed first."""
        user = accounts.session_user(self.db, request.cookies.get(COOKIE))
        if user is None:
            raise LoginRequired(_target(request))
        return user

    def current_user(self, request: Request) -> accounts.SignedIn:
        user = self.any_user(request)
        if user.must_change_password:
            raise PasswordChangeRequired(_target(request))
        return user

    def check_csrf(self, user: accounts.SignedIn, token: str) -> None:
        if not hmac.compare_digest(user.csrf_token.encode(), (token or "").encode("utf-8", "replace")):
            raise HTTPException(403, "the form has expired or did not come from this site (CSRF check failed)")

    def refuse(self, user: accounts.SignedIn, what: str, reason: str) -> None:
        """Record the refusal in the trail and answer 403."""
        with UnitOfWork(self.db, user.person) as uow:
            uow.record("web.refused", f"user:{user.username}", None, {"attempted": what, "reason": reason})
            uow.commit()
        raise HTTPException(403, reason)

    def change_from_form(
        self,
        user: accounts.SignedIn,
        csrf: str,
        what: str,
        change: Callable[[UnitOfWork], object],
        on_refusal: Callable[[str], HTMLResponse],
        done: str,
    ) -> Response:
        """A change of a QMS record from a dashboard form, in the signed-in person's name: the form's CSRF token
        checked, a viewer refused (recorded), a refusal of the service shown on the form's page
        (``on_refusal(reason)``, answered 400, nothing written), else the outbox delivered and the browser sent
        to ``done`` (303)."""
        self.check_csrf(user, csrf)
        if not user.may("approver"):
            self.refuse(user, what, f"{user.username} is a viewer: viewers record nothing")
        try:
            with UnitOfWork(self.db, user.person) as uow:  # the services record their own refusals
                change(uow)
        except DomainError as exc:
            page = on_refusal(str(exc))
            page.status_code = 400
            return page
        deliver(self.db, self.ctx.config)
        return RedirectResponse(done, status_code=303)

    @property
    def User(self):  # noqa: ANN201, N802 - a dependency type, used as an annotation
        return Annotated[accounts.SignedIn, Depends(self.current_user)]

    @property
    def AnyUser(self):  # noqa: ANN201, N802
        return Annotated[accounts.SignedIn, Depends(self.any_user)]
