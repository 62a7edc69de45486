"""The audit trail, searchable and keyset-paged, with its head and the last verification."""

from datetime import UTC, date, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from ...domain import limits
from ...services import dashboard
from ..site import Site


def router(site: Site) -> APIRouter:
    router = APIRouter(tags=["dashboard"])
    db = site.db
    User = site.User

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
        return site.page(
            request,
            "trail.html",
            user,
            events=events,
            head=head,
            verification=verification,
            filters={"record": record or "", "actor": actor or "", "since": since, "until": until},
        )

    return router
