"""Integrations: qms jira, qms outbox."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.markup import escape

from .common import (
    ActorOpt,
    CliError,
    ConfigOpt,
    TokenFileOpt,
    _ctx,
    _table,
    _who,
    app,
    err,
    out,
)

jira_app = typer.Typer(help="Jira synchronisation.", no_args_is_help=True)
app.add_typer(jira_app, name="jira")
outbox_app = typer.Typer(help="Messages queued for Slack and Jira: see, retry, drop.", no_args_is_help=True)
app.add_typer(outbox_app, name="outbox")


@jira_app.command("sync")
def jira_sync_now(config: ConfigOpt = None) -> None:
    """Deliver queued changes to Jira and reconcile changes made in Jira, now."""
    from ..adapters import jira
    from ..services import jira_sync
    from ..services.delivery import deliver

    ctx = _ctx(config)
    settings = jira.settings(ctx.config)
    if settings is None:
        raise CliError(
            "Jira is off: add integrations.jira to qms.yaml and set its credentials (JIRA_EMAIL, JIRA_API_TOKEN)"
        )
    before = deliver(ctx.db, ctx.config)
    report = jira_sync.reconcile(ctx, jira.JiraAdapter(jira.make_client(settings), settings))
    after = deliver(ctx.db, ctx.config)  # what reconciling queued (a refusal's comment and revert), now
    sent, failed = len(before.sent) + len(after.sent), after.failed
    out.print(
        f"delivered {sent}, failed {len(failed)}, waiting {after.waiting}, parked {len(before.parked + after.parked)}; "
        f"reconciled {report.seen} changed issue(s): {report.outcomes or 'no change'}"
    )
    if failed:
        err.print(f"[yellow]{escape(failed[0][0])}: {escape(failed[0][1])}[/] (see 'qms outbox list')")


@outbox_app.command("list")
def outbox_list(
    config: ConfigOpt = None,
    parked: Annotated[bool, typer.Option("--parked", help="Only parked messages.")] = False,
    all_: Annotated[bool, typer.Option("--all", help="The latest messages of every status, sent ones too.")] = False,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 100,
) -> None:
    """Messages not sent yet (queued, failing, waiting, parked), with their last error."""
    from ..services import outbox

    ctx = _ctx(config)
    rows = outbox.messages(ctx.db, parked_only=parked, everything=all_, limit=limit)
    if not rows:
        out.print("no parked message" if parked else "the outbox is empty" if all_ else "nothing waits to be sent")
        return
    table = _table("id", "target", "state", "tries", "message", "last error / sent", right=("tries",))
    colours = {"parked": "red", "failing": "yellow", "waiting": "cyan"}
    for m in rows:
        state = f"[{colours[m.state]}]{m.state}[/]" if m.state in colours else m.state
        detail = m.last_error or ""
        if m.status == outbox.SENT and m.sent_at:
            detail = f"sent {m.sent_at:%Y-%m-%d %H:%M} UTC"
        elif m.status == outbox.PENDING and m.last_error and m.state != "waiting":
            detail += f" (next try {m.next_attempt_at:%Y-%m-%d %H:%M} UTC)"
        table.add_row(str(m.id), m.target, state, str(m.attempts), escape(m.about), escape(detail))
    out.print(table)
    if any(m.state == "parked" for m in rows):
        out.print("parked: fix the cause (a changed qms.yaml retries them by itself), then 'qms outbox retry ID'")


@outbox_app.command("retry")
def outbox_retry(
    ids: Annotated[Optional[list[int]], typer.Argument(help="Message ids (see 'qms outbox list').")] = None,
    parked: Annotated[bool, typer.Option("--parked", help="Every parked message.")] = False,
    config: ConfigOpt = None,
    actor: ActorOpt = None,
    token_file: TokenFileOpt = None,
) -> None:
    """Send parked or failing messages again, now (recorded in the audit trail in your name)."""
    from ..services import outbox
    from ..services.delivery import deliver
    from ..store.uow import UnitOfWork

    ctx = _ctx(config)
    chosen = list(ids or [])
    if parked:
        chosen += [m.id for m in outbox.messages(ctx.db, parked_only=True, limit=10_000) if m.id not in chosen]
    if not chosen:
        if parked:
            out.print("no parked message")
            return
        raise CliError("name the message ids to retry, or --parked for every parked one", code=2)
    who = _who(ctx, actor, token_file).id
    keys = {}
    for message_id in chosen:
        with UnitOfWork(ctx.db, who) as uow:
            keys[outbox.retry(uow, message_id).key] = message_id
    report = deliver(ctx.db, ctx.config)
    failed = dict(report.failed)
    for key, message_id in keys.items():
        if key in report.sent:
            out.print(f"#{message_id} sent")
        elif key in failed:
            err.print(f"[yellow]#{message_id} failed again:[/] {escape(failed[key])}")
        else:
            out.print(f"#{message_id} queued (its target is off here, or it waits for an earlier message)")


@outbox_app.command("drop")
def outbox_drop(
    message_id: Annotated[int, typer.Argument(help="Message id (see 'qms outbox list').")],
    config: ConfigOpt = None,
    actor: ActorOpt = None,
    token_file: TokenFileOpt = None,
) -> None:
    """Give up a queued or parked message: it is never sent (recorded in the audit trail in your name)."""
    from ..services import outbox
    from ..store.uow import UnitOfWork

    ctx = _ctx(config)
    with UnitOfWork(ctx.db, _who(ctx, actor, token_file).id) as uow:
        message = outbox.drop(uow, message_id)
    out.print(f"#{message_id} dropped: {escape(message.about)}")
