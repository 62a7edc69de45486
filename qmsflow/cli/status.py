"""Where things stand: qms status, qms records."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from ..domain import limits
from .common import (
    ActorOpt,
    ConfigOpt,
    TokenFileOpt,
    _count,
    _ctx,
    _table,
    _who,
    app,
    err,
    out,
)

records_app = typer.Typer(help="Generic QMS records (CAPA, review due, ...).", no_args_is_help=True)
app.add_typer(records_app, name="records")


@app.command()
def readiness(
    config: ConfigOpt = None,
    on: Annotated[
        Optional[str], typer.Option("--date", help="Judge as of this date (YYYY-MM-DD; default today).")
    ] = None,
) -> None:
    """Readiness per Art. 17(1) aspect (a)-(m), on evidence: an approved procedure in date, a named
    owner, records in the last 12 months, an internal audit this year; exit 1 while any aspect has a gap."""
    from ..services import readiness as service

    today = _date_option(on) if on else datetime.now(UTC).date()
    ctx = _ctx(config)
    with ctx.db.read() as session:
        aspects = service.gather(session, ctx.config, today)
    table = _table("aspect", "processes", "status", "procedure", "owner", "records", "audited")
    for a in aspects:
        colour = {"ready": "green", "partial": "yellow"}.get(a.status.value, "red")
        table.add_row(
            f"({a.letter}) {a.title if len(a.title) <= 40 else a.title[:39] + '…'}",
            ", ".join(a.processes) or "—",
            f"[{colour}]{a.status.value}[/]",
            *("yes" if a.checks[c] else "no" for c in ("procedure", "owner", "records", "audit")),
        )
    out.print(table)
    ready = sum(a.status.value == "ready" for a in aspects)
    out.print(f"{ready}/{len(aspects)} aspects ready on {today.isoformat()}")
    by_gap: dict[str, list[str]] = {}
    for a in aspects:
        for gap in a.gaps:
            by_gap.setdefault(gap, []).append(a.letter)
    if by_gap:
        out.print("what to do (the aspects each step serves):")
    for gap, letters in by_gap.items():
        out.print(f"  ({', '.join(letters)}) {escape(gap)}")
    if ready < len(aspects):
        raise typer.Exit(1)


def _date_option(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        from .common import CliError

        raise CliError(f"--date {value!r} is not a date (YYYY-MM-DD)", code=2) from None


@app.command()
def status(config: ConfigOpt = None) -> None:
    """Table of QMS processes: owner, last run, next due, open items, overdue items."""
    from ..services.status import process_status

    ctx = _ctx(config)
    rows = process_status(ctx.db)
    table = _table(
        "process",
        "owner",
        "last run",
        "next due",
        "open",
        "overdue",
        title=f"QMS processes — {ctx.config.organisation.name}",
        right=("open", "overdue"),
    )
    for r in rows:
        last = f"{r.last_run:%Y-%m-%d %H:%M} {r.last_state.lower()}" if r.last_run and r.last_state else "never"
        table.add_row(
            r.key,
            r.owner,
            last,
            f"{r.next_due:%Y-%m-%d %H:%M} UTC" if r.next_due else "on demand",
            str(r.open_items),
            f"[red]{r.overdue_items}[/]" if r.overdue_items else "0",
        )
    out.print(table)
    _print_stack_state(ctx.loaded.state_dir)
    from ..services.outbox import backlog

    for target, info in backlog(ctx.db).items():
        line = f"{target}: {info['pending']} message(s) not sent since {info['oldest']:%Y-%m-%d %H:%M} UTC"
        trouble = info["failing"] or info["parked"]
        if trouble:
            line += f", {info['failing']} failing, {info['parked']} parked; last error: {info['last_error']}"
            line += " (see 'qms outbox list')"
        err.print(("[yellow]" if trouble else "") + escape(line) + ("[/]" if trouble else ""))


def _print_stack_state(state_dir: Path) -> None:
    """One line on the stack of `qms up` (from its state file): up or not, and how each child does."""
    from ..adapters.prefect_api import read_stack_state

    state = read_stack_state(state_dir)
    if state is None:
        out.print("stack: not running (start it with 'qms up')")
        return
    parts = []
    for name, child in (state.get("children") or {}).items():
        part = f"{name} {child.get('status')}"
        if child.get("restarts"):
            part += f" (restarted {child['restarts']}x, last exit code {child.get('last_exit')})"
        elif child.get("status") != "running" and child.get("last_exit") is not None:
            part += f" (exit code {child['last_exit']})"
        parts.append(part)
    out.print(
        f"stack: {state.get('status', 'up')} (pid {state.get('pid')}, {state.get('web_url')}); " + ", ".join(parts)
    )


@records_app.command("list")
def records_list(
    config: ConfigOpt = None,
    kind: Annotated[Optional[str], typer.Option(help="Only this kind, e.g. capa.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Include closed records.")] = False,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.", **_count(limits.LIST_MAX))] = 50,
) -> None:
    """List QMS records, newest first."""
    from ..services import queries

    ctx = _ctx(config)
    table = _table("id", "kind", "status", "owner", "due", "title")
    today = date.today()
    with ctx.db.read() as session:
        for r in queries.records(session, kind, all_, limit):
            due = r.due_date.isoformat() if r.due_date else ""
            if queries.record_overdue(r, today):
                due = f"[red]{due}[/]"
            table.add_row(r.id, r.kind, r.status, r.owner or "", due, r.title)
    out.print(table)


@records_app.command("delete")
def records_delete(
    record_id: str, config: ConfigOpt = None, actor: ActorOpt = None, token_file: TokenFileOpt = None
) -> None:
    """Delete a record: refused (and the attempt recorded) before its retention end (Art. 18)."""
    from ..services.records import delete_record
    from ..store.uow import UnitOfWork

    ctx = _ctx(config)
    with UnitOfWork(ctx.db, _who(ctx, actor, token_file).id) as uow:
        delete_record(uow, ctx.config, record_id, datetime.now(UTC).date())
    out.print(f"deleted {record_id} (recorded in the trail)")
