"""Management review and regulatory watch: qms management-review, qms watch."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from ..domain import limits
from .common import ActorOpt, CliError, ConfigOpt, TokenFileOpt, _bounded, _ctx, _who, app, out

review_app = typer.Typer(
    help="Management review (QMS-001 4.6): quarterly, signed by top management.", no_args_is_help=True
)
app.add_typer(review_app, name="management-review")
watch_app = typer.Typer(help="Regulatory watch: dated notes on changes in external issues.", no_args_is_help=True)
app.add_typer(watch_app, name="watch")


def _period(value: str | None):  # noqa: ANN202
    from ..domain.management_review import Period

    return Period.parse(value) if value else None


@review_app.command("start")
def review_start(
    period: Annotated[
        Optional[str], typer.Option(help="The quarter reviewed, like 2027Q1 (default: the last one).")
    ] = None,
    config: ConfigOpt = None,
    actor: ActorOpt = None,
    token_file: TokenFileOpt = None,
) -> None:
    """Start the review of a quarter: gather its inputs into a frozen, hashed pack (refused twice)."""
    from ..services import management_review as mr
    from ..store.uow import UnitOfWork

    ctx = _ctx(config)
    with UnitOfWork(ctx.db, _who(ctx, actor, token_file).id) as uow:
        row = mr.start(uow, ctx.config, _period(period))
        review_id, sha, data = row.id, row.data["pack"], row.data
    out.print(f"{review_id} started for {data['period']}; input pack sha256 {sha}")
    if data["rolled_in"]:
        out.print(f"open actions rolled in: {', '.join(data['rolled_in'])}")


@review_app.command("decide")
def review_decide(
    review_id: str,
    input_key: Annotated[
        Optional[str], typer.Option("--input", help="Address this input (e.g. c.capa) with --note.")
    ] = None,
    note: Annotated[
        str,
        typer.Option(help="What the review concluded on the input.", callback=_bounded(limits.TEXT, multiline=True)),
    ] = "",
    output: Annotated[Optional[str], typer.Option(help="Output kind: improvement, qms-changes or resources.")] = None,
    decision: Annotated[
        str, typer.Option(help="The decision on that output kind.", callback=_bounded(limits.TEXT, multiline=True))
    ] = "",
    action: Annotated[
        Optional[list[str]], typer.Option(help="An action of the decision: 'WHAT|OWNER|YYYY-MM-DD' (repeatable).")
    ] = None,
    none_because: Annotated[str, typer.Option("--none-because", help="No decision of this kind, because …")] = "",
    config: ConfigOpt = None,
    actor: ActorOpt = None,
    token_file: TokenFileOpt = None,
) -> None:
    """Record the minutes: address an input, or record a decision (with actions) or 'none, because …'."""
    from ..services import management_review as mr
    from ..store.uow import UnitOfWork

    if bool(input_key) == bool(output):
        raise CliError("give either --input KEY --note … or --output KIND with --decision or --none-because", 2)
    ctx = _ctx(config)
    with UnitOfWork(ctx.db, _who(ctx, actor, token_file).id) as uow:
        if input_key:
            mr.address(uow, ctx.config, review_id, input_key, note)
            out.print(f"{review_id}: {input_key} addressed")
            return
        if none_because and (decision or action):
            raise CliError("--none-because cannot go with --decision or --action", 2)
        if none_because:
            mr.none_because(uow, ctx.config, review_id, output, none_because)
            out.print(f"{review_id}: {output}: none, because {escape(none_because)}")
            return
        actions = []
        for entry in action or []:
            parts = entry.split("|")
            if len(parts) != 3:
                raise CliError(f"--action {entry!r}: write WHAT|OWNER|YYYY-MM-DD", 2)
            actions.append({"what": parts[0].strip(), "owner": parts[1].strip(), "due": parts[2].strip()})
        ids = mr.decide(uow, ctx.config, review_id, output, decision, actions)
    out.print(f"{review_id}: decision on {output} recorded" + (f"; actions {', '.join(ids)}" if ids else ""))


@review_app.command("submit")
def review_submit(
    review_id: str, config: ConfigOpt = None, actor: ActorOpt = None, token_file: TokenFileOpt = None
) -> None:
    """Submit the minutes for the signatures of top management (refused until complete, naming what is missing)."""
    from ..services import management_review as mr
    from ..services.delivery import deliver
    from ..store.uow import UnitOfWork

    ctx = _ctx(config)
    with UnitOfWork(ctx.db, _who(ctx, actor, token_file).id) as uow:
        result = mr.submit(uow, ctx.config, review_id)
    deliver(ctx.db, ctx.config)
    out.print(f"{review_id} submitted: {result['awaiting']} waits for {', '.join(result['approvers'])}")


@review_app.command("show")
def review_show(
    review_id: Optional[str] = typer.Argument(None),
    period: Annotated[Optional[str], typer.Option()] = None,
    html: Annotated[Optional[Path], typer.Option(help="Write the minutes as HTML to this file.")] = None,
    pdf: Annotated[Optional[Path], typer.Option(help="Write the minutes as PDF to this file (WeasyPrint).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Show a review: its inputs with figures and records, the minutes, and what is still missing."""
    from ..services import management_review as mr

    ctx = _ctx(config)
    with ctx.db.read() as session:
        if review_id is None:
            if period is None:
                raise CliError("name a review id or --period 2027Q1", 2)
            row = mr.find(session, _period(period))
            if row is None:
                raise CliError(f"no management review of {period}", 1)
            review_id = row.id
        shown = mr.show(session, review_id)
        page = mr.minutes_html(session, ctx.config, review_id) if (html or pdf) else None
    if page is not None:
        from ..adapters.render import RenderError, html_to_pdf

        if html:
            html.write_text(page, encoding="utf-8")
            out.print(f"minutes written to {html}")
        if pdf:
            try:
                pdf.write_bytes(html_to_pdf(page, str(ctx.root)))
            except RenderError as exc:
                raise CliError(str(exc), 1) from None
            out.print(f"minutes written to {pdf}")
    data, pack = shown["data"], shown["pack"]
    out.print(f"{review_id} {escape(shown['title'])}: {shown['status']} (pack {data['pack']})")
    addressed = data.get("minutes", {}).get("addressed", {})
    for entry in pack["inputs"]:
        out.print(f"\n[bold]{entry['key']}[/] {escape(entry['title'])}")
        if entry["statement"]:
            out.print(f"  {escape(entry['statement'])}")
        for figure in entry["figures"]:
            ids = figure["records"]
            more = f" ({', '.join(ids[:8])}{', …' if len(ids) > 8 else ''})" if ids else ""
            out.print(f"  {escape(figure['label'])}: {figure['value']}{escape(more)}")
        if entry["key"] in addressed:
            out.print(f"  [green]addressed:[/] {escape(addressed[entry['key']])}")
    outputs = data.get("minutes", {}).get("outputs", {})
    out.print("")
    for kind, title in shown["output_kinds"].items():
        given = outputs.get(kind) or {}
        for d in given.get("decisions") or []:
            out.print(
                f"{title}: {escape(d['text'])}" + (f" (actions {', '.join(d['actions'])})" if d["actions"] else "")
            )
        if given.get("none_because"):
            out.print(f"{title}: none, because {escape(given['none_because'])}")
    for gap in shown["gaps"]:
        out.print(f"[yellow]missing:[/] {escape(gap)}")


@review_app.command("action")
def review_action(
    action_id: str,
    to: Annotated[str, typer.Option("--to", help="in_progress, done or cancelled.")],
    outcome: Annotated[str, typer.Option(help="What was done.")] = "",
    reason: Annotated[str, typer.Option(help="Why it is cancelled.")] = "",
    config: ConfigOpt = None,
    actor: ActorOpt = None,
    token_file: TokenFileOpt = None,
) -> None:
    """Move a management review action (MRA-…)."""
    from ..services import management_review as mr
    from ..store.uow import UnitOfWork

    ctx = _ctx(config)
    fields = {k: v for k, v in (("outcome", outcome), ("reason", reason)) if v}
    with UnitOfWork(ctx.db, _who(ctx, actor, token_file).id) as uow:
        mr.advance_action(uow, ctx.config, action_id, to, fields)
    out.print(f"{action_id} now {to}")


@watch_app.command("add")
def watch_add(
    note: Annotated[str, typer.Option(help="What changed.", callback=_bounded(limits.TEXT, multiline=True))],
    source: Annotated[str, typer.Option(help="Link to the source (https://…).")],
    process: Annotated[list[str], typer.Option(help="An affected QMS process (repeatable).")],
    on: Annotated[Optional[str], typer.Option(help="The date of the change, YYYY-MM-DD (default: today).")] = None,
    config: ConfigOpt = None,
    actor: ActorOpt = None,
    token_file: TokenFileOpt = None,
) -> None:
    """Record a regulatory-watch entry: an input (b) of the next management review."""
    from ..services import management_review as mr
    from ..store.uow import UnitOfWork

    try:
        noted_on = date.fromisoformat(on) if on else None
    except ValueError:
        raise CliError(f"--on {on!r} is not a date (YYYY-MM-DD)", 2) from None
    ctx = _ctx(config)
    with UnitOfWork(ctx.db, _who(ctx, actor, token_file).id) as uow:
        entry = mr.watch_add(uow, ctx.config, note=note, source=source, processes=process, noted_on=noted_on).id
    out.print(f"{entry} recorded")
