"""Release validations and their verdicts."""

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from ...services import queries
from ...services.release import EXIT_CODES
from ..site import Site


def router(site: Site) -> APIRouter:
    router = APIRouter(tags=["dashboard"])
    db = site.db
    User = site.User

    @router.get("/releases", response_class=HTMLResponse)
    def releases_page(
        request: Request,
        user: User,
        page_no: Annotated[int, Query(alias="page", ge=1, le=10_000)] = 1,
        system: Annotated[str | None, Query(max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")] = None,
    ):
        with db.read() as session:
            rows = queries.releases(session, page_no, system)
            people = queries.names(session)
        return site.page(
            request, "releases.html", user, rows=rows, pager=rows, people=people, codes=EXIT_CODES, system=system
        )

    return router
