"""Internal audit: the programme (process x quarter), an audit with its workpapers, and the auditor's form."""

from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response

from ...domain import limits
from ...domain.audit import RESULTS
from ...services import audit, queries
from ..site import Site


def router(site: Site) -> APIRouter:
    router = APIRouter(tags=["dashboard"])
    db = site.db
    User = site.User

    @router.get("/audits", response_class=HTMLResponse)
    def programme_page(
        request: Request, user: User, year: Annotated[int | None, Query(ge=2000, le=2100)] = None
    ) -> HTMLResponse:
        today = datetime.now(UTC).date()
        year = year or today.year
        with db.read() as session:
            lines = queries.audit_programme(session, site.ctx.config, year, today)
            rows = queries.audits(session, limit=100)
            people = queries.names(session)
        return site.page(request, "audits.html", user, year=year, lines=lines, audits=rows, people=people)

    @router.get("/audits/{audit_id}", response_class=HTMLResponse)
    def audit_page(request: Request, audit_id: str, user: User, error: str | None = None) -> HTMLResponse:
        with db.read() as session:
            row = queries.audit(session, audit_id)
            if row is None:
                raise HTTPException(404, f"no audit {audit_id}")
            people = queries.names(session)
            events = queries.history(session, f"record:{audit_id}") + queries.history(session, f"audit:{audit_id}")
        may_record = row.status == "in_progress" and user.person == row.owner
        return site.page(
            request,
            "audit.html",
            user,
            row=row,
            data=row.data,
            people=people,
            results=RESULTS,
            may_record=may_record,
            events=sorted(events, key=lambda e: e.seq),
            error=error,
        )

    @router.post("/audits/{audit_id}/items")
    def record_item(
        request: Request,
        audit_id: str,
        user: User,
        item: Annotated[int, Form(ge=1, le=1000)],
        result: Annotated[str, Form(max_length=20)],
        evidence: Annotated[str, Form(max_length=limits.COMMENT)] = "",
        note: Annotated[str, Form(max_length=limits.TEXT)] = "",
        csrf: Annotated[str, Form(max_length=200)] = "",
    ) -> Response:
        refs = [r for r in evidence.replace(",", " ").split() if r]
        return site.change_from_form(
            user,
            csrf,
            f"record {audit_id} item {item}",
            lambda uow: audit.record(uow, site.ctx.config, audit_id, item, result, refs, note, user.person),
            lambda reason: audit_page(request, audit_id, user, error=reason),
            f"/audits/{quote(audit_id)}#item-{item}",
        )

    return router
