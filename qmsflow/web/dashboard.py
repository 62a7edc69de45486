"""The dashboard: signed-in, server-rendered pages over the records store, one router per area.

The shared parts (templates, the signed-in user, CSRF, recorded refusals) are in ``web.site``; each
area is a module of ``web.pages``. A new procedure adds its module here.
"""

from fastapi import APIRouter

from ..context import QmsContext
from .pages import (
    approvals,
    audit,
    auth,
    capa,
    documents,
    management_review,
    outbox,
    overview,
    readiness,
    release,
    trail,
)
from .site import COOKIE, LOGIN_FORM_COOKIE, PASSWORD_PAGE, LoginRequired, PasswordChangeRequired, Site  # noqa: F401

AREAS = (auth, overview, approvals, documents, capa, audit, release, management_review, readiness, trail, outbox)


def build_router(ctx: QmsContext, prefect_ui: str | None = None) -> APIRouter:
    site = Site(ctx, prefect_ui)
    router = APIRouter()
    for area in AREAS:
        router.include_router(area.router(site))
    return router
