"""Messages queued for Slack and Jira: admins retry or drop the parked ones."""

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ...domain.errors import DomainError
from ...services import outbox
from ...services.delivery import deliver
from ...services.records import NotFound
from ...store.uow import UnitOfWork
from ..site import Site


def router(site: Site) -> APIRouter:
    router = APIRouter(tags=["dashboard"])
    db = site.db
    User = site.User

    @router.get("/outbox", response_class=HTMLResponse)
    def outbox_page(request: Request, user: User) -> HTMLResponse:
        return site.page(request, "outbox.html", user, messages=outbox.messages(db), may_act=user.may("admin"))

    @router.post("/outbox/{message_id}/{act}")
    def outbox_act(
        message_id: int,
        act: str,
        user: User,
        background: BackgroundTasks,
        csrf: Annotated[str, Form(max_length=200)] = "",
    ) -> Response:
        site.check_csrf(user, csrf)
        if act not in ("retry", "drop"):
            raise HTTPException(404, f"no outbox action {act!r} (retry, drop)")
        if not user.may("admin"):
            site.refuse(
                user,
                f"{act} outbox message #{message_id}",
                f"{user.username} is not an admin: only admins may retry or drop outbox messages",
            )
        try:
            with UnitOfWork(db, user.person) as uow:
                (outbox.retry if act == "retry" else outbox.drop)(uow, message_id)
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from None
        except DomainError as exc:
            raise HTTPException(409, str(exc)) from None
        if act == "retry":
            background.add_task(deliver, db, site.ctx.config)
        return RedirectResponse("/outbox", status_code=303)

    return router
