"""The documents register, one document's version history, and its controlled copies."""

import mimetypes
import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse

from ...context import QmsContext
from ...services import dashboard, queries
from ..site import Site

_FILE_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # document ids and versions, as files are named


def router(site: Site) -> APIRouter:
    router = APIRouter(tags=["dashboard"])
    db = site.db
    User = site.User

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
        return site.page(request, "documents.html", user, rows=rows, pager=docs, people=people)

    @router.get("/documents/{doc_id}", response_class=HTMLResponse)
    def document_page(
        request: Request, doc_id: str, user: User, page_no: Annotated[int, Query(alias="page", ge=1, le=10_000)] = 1
    ) -> HTMLResponse:
        with db.read() as session:
            doc = queries.document(session, doc_id)
            if doc is None:
                raise HTTPException(404, f"no document {doc_id}")
            versions, signatures = dashboard.document_history(session, doc_id, page_no)
            people = dashboard.names(session)
            current = dashboard.effective(session, doc_id)
        rendered = {v[0].version: rendered_files(site.ctx, doc_id, v[0].version) for v in versions.rows}
        return site.page(
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
        path = rendered_files(site.ctx, doc_id, version).get(kind)
        if path is None:
            raise HTTPException(404, f"{doc_id} v{version} has no rendered {kind}")
        media = mimetypes.types_map.get(f".{kind}", "application/octet-stream")
        return FileResponse(path, media_type=media, filename=path.name)

    return router


def rendered_files(ctx: QmsContext, doc_id: str, version: str) -> dict[str, Path]:
    """The controlled copies of a version on disk, never a path outside the rendered folder."""
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
