"""The overview, its charts, and the baseline page of bench/dashboard.py."""

from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from ...services import outbox, queries
from ...services.status import process_status
from .. import charts
from ..site import Site


def router(site: Site) -> APIRouter:
    router = APIRouter(tags=["dashboard"])
    db = site.db
    User = site.User

    @router.get("/", response_class=HTMLResponse)
    def overview(request: Request, user: User) -> HTMLResponse:
        with db.read() as session:  # one session for every read model of the page
            verification = queries.last_verification(session)
            pending = queries.pending_count(session)
            mine = len(queries.inbox(session, user.person))
            processes = process_status(db, session=session)
            backlog = outbox.backlog(db, session=session)
        return site.page(
            request,
            "overview.html",
            user,
            processes=processes,
            verification=verification,
            pending=pending,
            mine=mine,
            backlog=backlog,
        )

    @router.get("/charts/{name}.svg")
    def chart(name: str, user: User) -> Response:
        now = datetime.now(UTC)
        with db.read() as session:
            if name == "capa-ageing":
                svg = charts.cached(
                    name,
                    lambda: charts.bar(
                        "Open CAPAs by age", "open CAPAs", queries.capa_ageing(session, now), "open CAPAs"
                    ),
                )
            elif name == "overdue":
                svg = charts.cached(
                    name,
                    lambda: charts.bar(
                        "Items not done by their due date, by due month",
                        "overdue",
                        queries.overdue_by_month(session, now.date()),
                        "items",
                    ),
                )
            elif name == "approval-lead-time":
                svg = charts.cached(
                    name,
                    lambda: charts.histogram(
                        "Approval lead time, last 12 months", queries.approval_lead_times(session, now), "days"
                    ),
                )
            else:
                raise HTTPException(404, f"no chart {name}")
        return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "private, max-age=60"})

    @router.get("/ping", response_class=HTMLResponse)
    def ping(request: Request, user: User) -> HTMLResponse:
        """A trivial signed-in page: the baseline of bench/dashboard.py."""
        return HTMLResponse(f"<!doctype html><title>ok</title><p>{user.username}")

    return router
