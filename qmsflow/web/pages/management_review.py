"""Management reviews: the list of quarters with their open actions, each review's minutes form (inputs
addressed, decisions per §9.3.3 output kind with their actions, "none, because …", submission for the
signatures of top management) and the minutes as they stand."""

from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from ...domain import limits
from ...domain.errors import DomainError
from ...domain.management_review import OUTPUT_KINDS, gaps
from ...services import management_review as mr
from ...services import queries
from ...store.uow import UnitOfWork
from ..site import Site

ACTION_ROWS = 3  # action rows of the decision form (what_N, owner_N, due_N); for more, record a further decision


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
    def review_page(request: Request, review_id: str, user: User, error: str | None = None) -> HTMLResponse:
        try:
            with db.read() as session:
                shown = mr.show(session, review_id)
                people = queries.names(session)
                events = queries.history(session, f"record:{review_id}")
        except DomainError as exc:
            raise HTTPException(404, str(exc)) from None
        data = shown["data"]
        minutes = data.get("minutes") or {}
        editable = shown["status"] == "minutes" and not data.get("pending")
        return site.page(
            request,
            "management_review.html",
            user,
            review=shown,
            data=data,
            inputs=shown["pack"]["inputs"],
            addressed=minutes.get("addressed") or {},
            outputs=minutes.get("outputs") or {},
            output_kinds=OUTPUT_KINDS,
            gaps=gaps(data.get("inputs", ()), minutes),
            people=people,
            may_record=editable and user.may("approver"),
            action_rows=ACTION_ROWS,
            today=mr.today_in(site.ctx.config, datetime.now(UTC)).isoformat(),
            events=sorted(events, key=lambda e: e.seq),
            error=error,
        )

    @router.get("/management-reviews/{review_id}/minutes", response_class=HTMLResponse)
    def minutes_page(review_id: str, user: User) -> HTMLResponse:
        try:
            with db.read() as session:
                return HTMLResponse(mr.minutes_html(session, site.ctx.config, review_id))
        except DomainError as exc:
            raise HTTPException(404, str(exc)) from None

    def _change(request: Request, review_id: str, user, csrf: str, what: str, change, anchor: str) -> Response:  # noqa: ANN001
        return site.change_from_form(
            user,
            csrf,
            f"{what} in {review_id}",
            change,
            lambda reason: review_page(request, review_id, user, error=reason),
            f"/management-reviews/{quote(review_id)}#{anchor}",
        )

    @router.post("/management-reviews/{review_id}/inputs")
    def address_input(
        request: Request,
        review_id: str,
        user: User,
        input_key: Annotated[str, Form(max_length=60)],
        note: Annotated[str, Form(max_length=limits.TEXT)] = "",
        csrf: Annotated[str, Form(max_length=200)] = "",
    ) -> Response:
        return _change(
            request,
            review_id,
            user,
            csrf,
            f"address {input_key}",
            lambda uow: mr.address(uow, site.ctx.config, review_id, input_key, note),
            f"input-{input_key}",
        )

    @router.post("/management-reviews/{review_id}/decisions")
    def record_decision(
        request: Request,
        review_id: str,
        user: User,
        kind: Annotated[str, Form(max_length=40)],
        decision: Annotated[str, Form(max_length=limits.TEXT)] = "",
        what_1: Annotated[str, Form(max_length=limits.TEXT)] = "",
        owner_1: Annotated[str, Form(max_length=100)] = "",
        due_1: Annotated[str, Form(max_length=20)] = "",
        what_2: Annotated[str, Form(max_length=limits.TEXT)] = "",
        owner_2: Annotated[str, Form(max_length=100)] = "",
        due_2: Annotated[str, Form(max_length=20)] = "",
        what_3: Annotated[str, Form(max_length=limits.TEXT)] = "",
        owner_3: Annotated[str, Form(max_length=100)] = "",
        due_3: Annotated[str, Form(max_length=20)] = "",
        csrf: Annotated[str, Form(max_length=200)] = "",
    ) -> Response:
        rows = [(what_1, owner_1, due_1), (what_2, owner_2, due_2), (what_3, owner_3, due_3)]

        def change(uow: UnitOfWork) -> None:
            mr.decide(uow, site.ctx.config, review_id, kind, decision, _actions(review_id, rows))

        return _change(request, review_id, user, csrf, f"decide {kind}", change, f"output-{kind}")

    @router.post("/management-reviews/{review_id}/none")
    def record_none(
        request: Request,
        review_id: str,
        user: User,
        kind: Annotated[str, Form(max_length=40)],
        reason: Annotated[str, Form(max_length=limits.TEXT)] = "",
        csrf: Annotated[str, Form(max_length=200)] = "",
    ) -> Response:
        return _change(
            request,
            review_id,
            user,
            csrf,
            f"none for {kind}",
            lambda uow: mr.none_because(uow, site.ctx.config, review_id, kind, reason),
            f"output-{kind}",
        )

    @router.post("/management-reviews/{review_id}/submit")
    def submit(
        request: Request, review_id: str, user: User, csrf: Annotated[str, Form(max_length=200)] = ""
    ) -> Response:
        return _change(
            request,
            review_id,
            user,
            csrf,
            "submit the minutes",
            lambda uow: mr.submit(uow, site.ctx.config, review_id),
            "submit",
        )

    return router


def _actions(review_id: str, rows: list[tuple[str, str, str]]) -> list[dict[str, str]]:
    """The action rows of the decision form: a row left empty is no action; a row half filled is refused,
    naming its number, rather than dropped."""
    out = []
    for n, row in enumerate(rows, 1):
        cells = [cell.strip() for cell in row]
        if not any(cells):
            continue
        if not all(cells):
            raise DomainError(f"{review_id}: action {n} needs what, owner and due date (or leave the row empty)")
        out.append({"what": cells[0], "owner": cells[1], "due": cells[2]})
    return out
