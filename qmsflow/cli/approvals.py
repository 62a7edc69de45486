"""Approvals and e-signatures: qms approvals, qms approve."""

from __future__ import annotations

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
    _ctx,
    _table,
    _who,
    app,
    err,
    out,
)

approvals_app = typer.Typer(help="Approval requests.", no_args_is_help=True)
app.add_typer(approvals_app, name="approvals")


@approvals_app.command("list")
def approvals_list(
    config: ConfigOpt = None,
    person: Annotated[Optional[str], typer.Option("--for", help="Only what waits for this person.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Include decided requests.")] = False,
) -> None:
    """Approval requests: pending ones (or all), with who may still sign."""
    from ..services import queries
    from ..services.approvals import load, pending_for
    from ..store.uow import UnitOfWork

    ctx = _ctx(config)
    table = _table("id", "status", "title", "due", "waiting for", "signatures")
    with UnitOfWork(ctx.db, "cli") as uow:
        if person:
            rows = pending_for(uow, person)
        else:
            rows = queries.approval_requests(uow.session, include_decided=all_)
        for row in rows:
            _, request = load(uow, row.id)
            signed = ", ".join(f"{s.printed_name} ({s.decision.label})" for s in request.signatures)
            waiting = ", ".join(request.pending_approvers()) if not request.decided else ""
            table.add_row(row.id, row.status, row.title, row.due_date.isoformat(), waiting, signed)
    out.print(table)


@approvals_app.command("show")
def approvals_show(request_id: str, config: ConfigOpt = None) -> None:
    """One approval request: who may sign, the signatures, and the content to be signed, from the store."""
    from ..services import contents
    from ..services.approvals import load
    from ..store.uow import UnitOfWork

    ctx = _ctx(config)
    with UnitOfWork(ctx.db, "cli") as uow:  # print inside: the rows are read until the block ends
        row, request = load(uow, request_id)
        stored = contents.load(uow.session, row.content_sha256)
        out.print(f"[bold]{row.id}[/] {escape(row.title)} — {row.status.replace('_', ' ')}")
        out.print(f"subject {row.subject} · due {row.due_date} · needs {row.required} approval(s)")
        out.print(
            f"approvers: {', '.join(row.approvers)}; waiting for: {', '.join(request.pending_approvers()) or '—'}"
        )
        out.print(f"submitted by: {row.author or '—'}; authors (may not sign): {', '.join(request.all_authors) or '—'}")
        if row.data.get("unmapped_authors"):
            out.print(
                f"[yellow]git authors with no person in qms.yaml:[/] {escape(', '.join(row.data['unmapped_authors']))}"
            )
        if row.data.get("unverified_authors"):
            out.print(
                "[yellow]git authorship not verified by a commit signature:[/] "
                + escape("; ".join(row.data["unverified_authors"]))
            )
        out.print(f"an approval means: {escape(row.meaning)}")
        for s in request.signatures:
            out.print(
                f"  signed by {s.printed_name} at {s.at:%Y-%m-%d %H:%M:%S} UTC via {s.method.value}"
                + (f" (account {s.account}, {s.auth})" if s.account else "")
                + f": {s.decision.label} ({escape(s.meaning)})"
                + (f" — {escape(s.comment)}" if s.comment else "")
            )
        out.print(f"content SHA-256 {row.content_sha256}:")
        if stored is None:
            err.print("[red]the content of this request is not in the records store[/]")
            raise typer.Exit(1)
        out.print(escape(contents.as_text(stored)))


@app.command()
def approve(
    request_id: str,
    decision: Annotated[str, typer.Option(help="approve, reject or changes.")],
    comment: Annotated[
        Optional[str],
        typer.Option(help="Required for reject and changes.", callback=_bounded(limits.COMMENT, multiline=True)),
    ] = None,
    token_file: TokenFileOpt = None,
    actor: ActorOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Sign an approval request from the command line as the signed-in person ('qms login', QMS_TOKEN)."""
    from ..domain.approvals import Decision, Method
    from ..services.approvals import after_decision, decide
    from ..services.signers import Credential
    from ..store.uow import UnitOfWork
    from .identity import os_user

    try:
        choice = Decision(decision)
    except ValueError:
        raise CliError(f"--decision {decision!r} is not allowed (allowed: approve, reject, changes)", code=2) from None
    ctx = _ctx(config)
    who = _who(ctx, actor, token_file)
    if who.token_id is not None:
        credential = Credential.token(Method.CLI, who.username, who.token_id)
    else:  # trusted single-user mode (--as): the person's own account still signs, and must be allowed to
        credential = Credential.trusted(who.id, os_user())
    with UnitOfWork(ctx.db, who.id) as uow:
        result = decide(uow, ctx.config, request_id, credential, choice, comment)
    out.print(
        f"{request_id}: signed by {result.signature.printed_name} at {result.signature.at:%Y-%m-%d %H:%M:%S} UTC "
        f"({choice.label}; meaning: {result.signature.meaning}); request {result.status.value.replace('_', ' ')}"
    )
    with err.status("resuming the flow run that waits for this decision …"):
        after_decision(ctx, result, inline=True)
