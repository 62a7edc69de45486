"""Demo data for ``make demo``: documents with effective versions of various ages, a due scan."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from ..context import QmsContext
from ..domain.documents import DocStatus, add_months
from ..services.documents import scan_due_reviews, transition_version
from ..services.status import record_run
from ..services.sync import sync_config
from ..store.tables import DocumentVersionRow
from ..store.uow import UnitOfWork

DEMO_ACTOR = "demo-seed"

# months since the version became effective, by position in the register: a mix of current,
# due-soon (within 30 days) and overdue documents; None leaves the document a draft
AGES = [3, 11.5, 13, 6, None, 2, 12.2, 8, 1, 11.8]


def seed(ctx: QmsContext, today: date | None = None) -> str:
    today = today or datetime.now(UTC).date()
    with UnitOfWork(ctx.db, DEMO_ACTOR) as uow:
        sync_config(uow, ctx.config, ctx.root)
        uow.commit()
        made = 0
        for index, doc in enumerate(ctx.config.documents):
            age = AGES[index % len(AGES)]
            row = (
                uow.session.query(DocumentVersionRow)
                .filter_by(document_id=doc.id)
                .order_by(DocumentVersionRow.id)
                .first()
            )
            if age is None or row is None or row.status != DocStatus.DRAFT.value:
                continue
            effective = add_months(today, -int(age)) - timedelta(days=int((age % 1) * 30))
            transition_version(uow, row, DocStatus.IN_REVIEW)
            transition_version(
                uow,
                row,
                DocStatus.EFFECTIVE,
                on=effective,
                interval_months=doc.review_interval_months,
                comment="approved before qmsflow was introduced (demo data)",
            )
            made += 1
        uow.commit()
        due = scan_due_reviews(uow, today, process="document-control")
        now = datetime.now(UTC)
        record_run(
            uow,
            "document-control",
            "document-review-due-scan",
            f"demo-{now:%Y%m%d%H%M%S%f}",
            "COMPLETED",
            now,
            now,
            {"overdue": sum(d.state == "overdue" for d in due), "due_soon": sum(d.state == "due-soon" for d in due)},
        )
        uow.commit()
    overdue = sum(d.state == "overdue" for d in due)
    users = _demo_users(ctx)
    return (
        f"demo data in {ctx.db.safe_url}: {made} document(s) made effective, "
        f"{len(due)} review(s) due ({overdue} overdue)\n" + users
    )


DEMO_USERS = (
    ("ana", "ana", "admin"),
    ("ben", "ben", "approver"),
    ("chloe", "chloe", "approver"),
    ("viewer", "dev", "viewer"),
)


def _demo_users(ctx: QmsContext) -> str:
    """Dashboard accounts for the demo: password = 'demo-' + user name + '-password' (demo only!)."""
    from ..services.accounts import add_user
    from ..store.tables import UserRow

    lines = []
    people = {p.id for p in ctx.config.people}
    for username, person, role in DEMO_USERS:
        if person not in people:
            continue
        with UnitOfWork(ctx.db, DEMO_ACTOR) as uow:
            if uow.session.get(UserRow, username) is None:
                # demo accounts sign at once: their (printed, demo-only) passwords count as their people's own
                add_user(
                    uow, username, person, role, f"demo-{username}-password", must_change=False, password_set_by=person
                )
        lines.append(f"  dashboard user {username!r} ({role}), password 'demo-{username}-password'")
    lines.append(
        "  trusted single-user mode is on (security.trusted_single_user): '--as PERSON' works on the command "
        "line; or sign in with 'qms login'"
    )
    return "demo sign-ins (change or remove them for real use):\n" + "\n".join(lines)
