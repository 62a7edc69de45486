"""Document control: qms document."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Optional

import typer
from rich.markup import escape

from ..domain import limits
from .common import (
    ActorOpt,
    CliError,
    ConfigOpt,
    TokenFileOpt,
    _bounded,
    _count,
    _ctx,
    _table,
    _who,
    app,
    err,
    out,
)

document_app = typer.Typer(help="Controlled documents and their versions.", no_args_is_help=True)
app.add_typer(document_app, name="document")


@document_app.command("list")
def document_list(config: ConfigOpt = None) -> None:
    """Registered documents with their current version, status and next review date."""
    from ..services import queries

    ctx = _ctx(config)
    table = _table("id", "title", "owner", "version", "status", "next review")
    with ctx.db.read() as session:
        for line in queries.document_register(session, date.today()):
            shown = line.next_review.isoformat() if line.next_review else "never approved"
            if line.state:
                shown = f"[red]{shown}[/]" if line.state == "overdue" else f"[yellow]{shown}[/]"
            current = line.current
            table.add_row(
                line.document.id,
                line.document.title,
                line.document.owner,
                current.version if current else "-",
                current.status if current else "-",
                shown,
            )
    out.print(table)


@document_app.command("scan")
def document_scan(
    config: ConfigOpt = None,
    window: Annotated[
        int, typer.Option(help="Days ahead that count as due soon.", **_count(limits.DAYS_MAX, minimum=0))
    ] = 30,
) -> None:
    """Run the review-due scan now, without Prefect (the deployment runs it daily)."""
    from ..services.documents import scan_due_reviews
    from ..store.uow import UnitOfWork

    ctx = _ctx(config)
    with UnitOfWork(ctx.db, "qmsflow") as uow:
        found = scan_due_reviews(uow, datetime.now(UTC).date(), process="document-control", window_days=window)
        uow.commit()
    for item in found:
        mark = "new" if item.created else "known"
        out.print(f"{item.record_id} {item.document_id}: {item.state} (due {item.due}) [{mark}]")
    out.print(f"{len(found)} document(s) due for review")


@document_app.command("render")
def document_render(
    doc_id: str,
    config: ConfigOpt = None,
    version: Annotated[Optional[str], typer.Option(help="The version to render (default: the effective one).")] = None,
) -> None:
    """Render the controlled copy (HTML + PDF) of an approved version again, e.g. after a failed rendering."""
    from ..adapters.render import RenderError
    from ..services.review import render_document_copy
    from ..store.uow import UnitOfWork

    ctx = _ctx(config)
    try:
        with UnitOfWork(ctx.db, "qmsflow") as uow:
            rendered = render_document_copy(
                uow, ctx.config, ctx.root, ctx.loaded.state_dir / "rendered", doc_id, version
            )
    except RenderError as exc:
        raise CliError(str(exc)) from None
    out.print(f"rendered {rendered['pdf']}")
    out.print(f"rendered {rendered['html']}")


@document_app.command("delete-version")
def document_delete_version(
    doc_id: str, version: str, config: ConfigOpt = None, actor: ActorOpt = None, token_file: TokenFileOpt = None
) -> None:
    """Delete a document version: refused (and recorded) before its retention end."""
    from ..services.records import delete_document_version
    from ..store.uow import UnitOfWork

    ctx = _ctx(config)
    with UnitOfWork(ctx.db, _who(ctx, actor, token_file).id) as uow:
        delete_document_version(uow, ctx.config, doc_id, version, datetime.now(UTC).date())
    out.print(f"deleted {doc_id} version {version} (recorded in the trail)")


@document_app.command("submit")
def document_submit(
    doc_id: str,
    config: ConfigOpt = None,
    actor: ActorOpt = None,
    major: Annotated[bool, typer.Option(help="A major change: next version N+1.0 (else N.M+1).")] = False,
    still_valid: Annotated[bool, typer.Option(help="Periodic review of the effective version, no change.")] = False,
    comment: Annotated[
        Optional[str],
        typer.Option(
            help="What changed and why (shown to approvers).", callback=_bounded(limits.COMMENT, multiline=True)
        ),
    ] = None,
    token_file: TokenFileOpt = None,
) -> None:
    """Start a document review: keep DOC_ID's text as submitted, request signed approval, wait (Slack, web or CLI).

    The submitter is the signed-in person ('qms login', QMS_TOKEN). The approvers see the text kept now,
    whatever happens to the file afterwards. Nobody who authored the change (you, and the git authors of
    the commits since the last approved version) may approve it.
    """
    from ..adapters import prefect_api
    from ..services.review import submit_document
    from ..store.uow import UnitOfWork

    ctx = _ctx(config)
    who = _who(ctx, actor, token_file).id
    with UnitOfWork(ctx.db, who) as uow:  # refused now, before any run starts
        submission = submit_document(
            uow,
            ctx.config,
            ctx.root,
            document_id=doc_id,
            submitted_by=who,
            major=major,
            still_valid=still_valid,
            comment=comment,
        )
        uow.commit()
        submission_id, data = submission.id, dict(submission.data)
    try:
        endpoint = prefect_api.locate(ctx.loaded.state_dir)
        url = endpoint.url
        run_id = prefect_api.start_run(
            endpoint,
            "document-review/on-demand",
            {"submission_id": submission_id},
            idempotency_key=f"submission:{submission_id}",
        )
    except prefect_api.PrefectUnavailable as exc:
        raise CliError(
            f"{submission_id} recorded, but its review did not start: {exc}; "
            "the stack starts it once it runs (follow-up flow)"
        ) from None
    out.print(
        f"{submission_id}: review of {doc_id} started (flow run {run_id}); approvers are notified; "
        f"see 'qms approvals list' and {url.removesuffix('/api')}/runs/flow-run/{run_id}"
    )
    if data.get("authors"):
        out.print(
            f"authors of this change (none of them may approve it): {', '.join(dict.fromkeys([who, *data['authors']]))}"
        )
    if data.get("unmapped_authors"):
        err.print(
            "[yellow]warning:[/] git authors with no person in qms.yaml (shown to the approvers): "
            + escape(", ".join(data["unmapped_authors"]))
        )
    if data.get("unverified_authors"):
        err.print(
            "[yellow]warning:[/] git authorship not verified by a commit signature (shown to the approvers): "
            + escape("; ".join(data["unverified_authors"]))
        )
