"""The CAPA board and the overdue CAPAs."""

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from ...domain.capa import STAGE_TITLES
from ...services import dashboard
from ..site import Site


def router(site: Site) -> APIRouter:
    router = APIRouter(tags=["dashboard"])
    db = site.db
    User = site.User

    @router.get("/capas", response_class=HTMLResponse)
    def capas_page(request: Request, user: User, page_no: Annotated[int, Query(alias="page", ge=1, le=10_000)] = 1):
        today = datetime.now(UTC).date()
        with db.read() as session:
            board = dashboard.capa_board(session)
            late = dashboard.overdue(session, today, page_no, kind="capa")
            people = dashboard.names(session)
        return site.page(request, "capas.html", user, board=board, titles=STAGE_TITLES, late=late, people=people)

    return router
