"""Readiness per Art. 17(1) aspect, on evidence (``services.readiness``)."""

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from ...services import readiness
from ..site import Site


def router(site: Site) -> APIRouter:
    router = APIRouter(tags=["dashboard"])
    User = site.User

    @router.get("/readiness", response_class=HTMLResponse)
    def readiness_page(request: Request, user: User) -> HTMLResponse:
        with site.db.read() as session:
            aspects = readiness.gather(session, site.ctx.config, datetime.now(UTC).date())
        return site.page(request, "readiness.html", user, aspects=aspects)

    return router
