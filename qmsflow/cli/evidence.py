"""Evidence: qms verify, qms anchor, qms trail."""

from __future__ import annotations

import time
from typing import Annotated, Optional

import typer
from rich.markup import escape

from ..domain import limits
from ..domain.seals import KEYS_FILE
from .common import (
    CliError,
    ConfigOpt,
    _count,
    _ctx,
    _progress,
    _say_anchored,
    _table,
    app,
    err,
    out,
)

trail_app = typer.Typer(help="The audit trail.", no_args_is_help=True)
app.add_typer(trail_app, name="trail")


@app.command()
def verify(config: ConfigOpt = None) -> None:
    """Verify the audit trail and every record table against it; exit 1 if anything is wrong.

    Checks the append-only triggers, the hash chain, every anchor (the anchors file and every version
    of it in git history) and every head earlier verifications saw (events removed from the tail),
    that each record table holds exactly the state the trail implies, each signature's content, and
    each signature's seal (a signing key the database does not hold, registered in the trail and in git).
    """
    from ..services.queries import trail_size
    from ..services.verify import verify as run_verify

    ctx = _ctx(config)
    with ctx.db.read() as session:
        total = trail_size(session)
    started = time.perf_counter()
    result = run_verify(ctx.db, ctx.anchors_file, progress=_progress(total, "verifying"), root=ctx.root)
    elapsed = time.perf_counter() - started
    report = result.report
    for problem in result.guard_problems:
        err.print(f"[red]TRIGGER[/] {escape(problem)} (run 'qms db upgrade' to reinstall it)")
    if report.broken:
        err.print(f"[red]BROKEN[/] at seq {report.broken.seq}: {report.broken.problem}: {escape(report.broken.detail)}")
        err.print(f"the first {report.count} events verify (head seq {report.head_seq}, hash {report.head_hash})")
    for problem in result.head_problems:
        err.print(f"[red]TRUNCATED[/] {escape(problem)}")
    for problem in result.anchor_problems:
        err.print(f"[red]ANCHOR MISMATCH[/] {escape(problem)}")
    if result.state is not None:
        for problem in result.state.problems:
            err.print(f"[red]STATE[/] {escape(problem)}")
        if result.state.total > len(result.state.problems):
            err.print(f"… and {result.state.total - len(result.state.problems)} more record state difference(s)")
    for problem in result.signature_problems:
        err.print(f"[red]SIGNATURE[/] {escape(problem)}")
    for problem in result.seal_problems:
        err.print(f"[red]SEAL[/] {escape(problem)}")
    for note in result.notes:
        err.print(f"note: {escape(note)}")
    if not result.ok:
        raise typer.Exit(1)
    out.print(
        f"OK: {report.count} events verified in {elapsed:.2f} s, head seq {report.head_seq} hash {report.head_hash}"
    )
    if result.state is not None:
        out.print(f"record states: {result.state.rows} rows in {len(result.state.by_table)} tables match the trail")
    out.print(f"signatures checked: {result.signatures_checked}")
    if result.seals is not None:
        out.print(f"signatures sealed: {result.seals.sealed} (keys in {KEYS_FILE} and the trail)")
    anchors_file = ctx.config.retention.anchors_file
    if result.anchors_checked:
        pending = f", {result.anchors_uncommitted} not committed to git yet" if result.anchors_uncommitted else ""
        out.print(f"anchors checked: {result.anchors_checked}{pending}")
    else:
        out.print(f"anchors checked: 0 (none yet: run 'qms anchor', which commits {anchors_file} in a git repo)")


@app.command()
def anchor(config: ConfigOpt = None) -> None:
    """Append the trail head (seq, hash, time) to the anchors file and commit it when the repo is a git repo."""
    from ..services.verify import anchor as run_anchor

    ctx = _ctx(config)
    try:
        done = run_anchor(ctx.db, ctx.anchors_file, ctx.root)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    _say_anchored(ctx, done)


@trail_app.command("show")
def trail_show(
    config: ConfigOpt = None,
    record: Annotated[
        Optional[str], typer.Option(help="Only events of this record, e.g. record:CAPA-2026-0001.")
    ] = None,
    actor: Annotated[Optional[str], typer.Option(help="Only events by this actor.")] = None,
    limit: Annotated[int, typer.Option(help="The last N events.", **_count(limits.LIST_MAX))] = 20,
) -> None:
    """The last events of the audit trail."""
    from ..services import queries

    ctx = _ctx(config)
    table = _table("seq", "time (UTC)", "actor", "action", "record", "hash")
    with ctx.db.read() as session:
        for e in queries.trail_tail(session, record, actor, limit):
            table.add_row(str(e.seq), e.ts[:19].replace("T", " "), e.actor, e.action, e.record, e.hash[:12] + "…")
    out.print(table)
