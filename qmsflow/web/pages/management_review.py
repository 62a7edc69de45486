"""Management reviews: the list of quarters with their open actions, and each review's minutes."""

from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse

from ...domain.errors import DomainError
from ...services import management_review as mr
from ..site import Site


def router(site: Site) -> APIRouter:
    router = APIRouter(tags=["dashboard"])
    db = site.db
    User = site.User

    @router.get("/management-reviews", response_class=HTMLResponse)
    def reviews_page(request: Request, user: User):
        today = mr.today_in(site.ctx.config, datetime.now(UTC)).isoformat()
        with db.read() as session:
            reviews = mr.reviews(session)
            actions = mr.open_actions(session)
        return site.page(request, "management_reviews.html", user, reviews=reviews, actions=actions, today=today)

    @router.get("/management-reviews/{review_id}", response_class=HTMLResponse)
    def minutes_page(review_id: str, user: User):
        try:
            with db.read() as session:
                return HTMLResponse(mr.minutes_html(session, site.ctx.config, review_id))
        except DomainError as exc:
            raise HTTPException(404, str(exc)) from None

    return router
