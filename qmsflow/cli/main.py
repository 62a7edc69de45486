"""The ``qms`` command line. Every command has --help; errors are one clear message, never a trace."""

from __future__ import annotations

import getpass
import os
import signal
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..domain.errors import DomainError
from ..settings import ConfigError

app = typer.Typer(
    name="qms",
    help="qmsflow: the quality management system of a team that builds high-risk AI, run as code.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Records store schema.", no_args_is_help=True)
records_app = typer.Typer(help="Generic QMS records (CAPA, review due, ...).", no_args_is_help=True)
document_app = typer.Typer(help="Controlled documents and their versions.", no_args_is_help=True)
trail_app = typer.Typer(help="The audit trail.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(records_app, name="records")
app.add_typer(document_app, name="document")
app.add_typer(trail_app, name="trail")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="qms.yaml to use (else QMS_CONFIG, else ./qms.yaml or a parent's).")]
ActorOpt = Annotated[Optional[str], typer.Option("--as", help="Who acts (person id); default QMS_ACTOR or cli:<os user>.")]


class CliError(Exception):
    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def _actor(value: str | None) -> str:
    return value or os.environ.get("QMS_ACTOR") or f"cli:{getpass.getuser()}"


def _ctx(config: Path | None, migrate: bool = False):  # noqa: ANN202
    from ..context import open_context

    return open_context(config, migrate=migrate)


# ------------------------------------------------------------------ scaffold and check


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Folder of the new compliance repo.")] = Path("."),
    org: Annotated[str, typer.Option(help="Organisation name.")] = "Example AI GmbH",
    force: Annotated[bool, typer.Option(help="Overwrite an existing qms.yaml and documents.")] = False,
    git: Annotated[bool, typer.Option(help="git init and commit, unless already in a git repo.")] = True,
) -> None:
    """Scaffold a compliance repo: qms.yaml, the ten procedures of a minimum QMS, docs/adr."""
    from ..services.scaffold import ScaffoldError, scaffold

    try:
        report = scaffold(directory, org_name=org, force=force, git=git)
    except ScaffoldError as exc:
        raise CliError(str(exc)) from None
    out.print(f"Scaffolded {len(report.written)} files in {report.root}")
    for path in report.written:
        out.print(f"  {path.relative_to(report.root)}")
    if report.git_initialised:
        out.print("Initialised a git repo with a first commit.")
    out.print(f"Next: cd {directory} && qms check && qms up")


@app.command()
def check(config: ConfigOpt = None) -> None:
    """Validate qms.yaml and the compliance repo: documents exist, Art. 17(1) aspects covered."""
    from ..settings import check_repo, load_config

    loaded = load_config(config)
    errors, warnings = check_repo(loaded)
    for warning in warnings:
        err.print(f"[yellow]warning:[/] {escape(warning)}")
    if errors:
        raise ConfigError(errors)
    c = loaded.config
    out.print(f"{loaded.path}: OK — {len(c.people)} people, {len(c.systems)} AI systems, "
              f"{len(c.processes)} processes, {len(c.documents)} documents; "
              f"Art. 17(1) aspects covered: {len(c.covered_aspects())}/13")


# ------------------------------------------------------------------ store


@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt = None) -> None:
    """Migrate the records store to the newest schema (SQLite file or QMS_DATABASE_URL)."""
    from ..settings import load_config
    from ..store.db import Database, resolve_url

    loaded = load_config(config)
    db = Database(resolve_url(loaded.state_dir))
    before, after = db.upgrade()
    out.print(f"{db.safe_url}: schema {before or 'none'} → {after}" if before != after
              else f"{db.safe_url}: schema already at {after}")


@app.command()
def sync(config: ConfigOpt = None, actor: ActorOpt = None) -> None:
    """Bring people, processes and documents in the store in line with qms.yaml."""
    from ..services.sync import sync_config
    from ..store.uow import UnitOfWork

    ctx = _ctx(config, migrate=True)
    with UnitOfWork(ctx.db, _actor(actor)) as uow:
        report = sync_config(uow, ctx.config, ctx.root)
        uow.commit()
    for change in report.changes:
        out.print(f"  {change}")
    out.print(f"{len(report.changes)} change(s) recorded" if report else "already in sync")


@app.command()
def verify(config: ConfigOpt = None) -> None:
    """Recompute the hash chain of the audit trail and check every anchor; exit 1 if broken."""
    from ..services.verify import verify as run_verify
    from ..store import trail

    ctx = _ctx(config)
    with ctx.db.read() as session:
        total = trail.count(session)
    started = time.perf_counter()
    result = run_verify(ctx.db, ctx.anchors_file, progress=_progress(total, "verifying"))
    elapsed = time.perf_counter() - started
    report = result.report
    if report.broken:
        err.print(f"[red]BROKEN[/] at seq {report.broken.seq}: {report.broken.problem}: {escape(report.broken.detail)}")
        err.print(f"the first {report.count} events verify (head seq {report.head_seq}, hash {report.head_hash})")
    for problem in result.anchor_problems:
        err.print(f"[red]ANCHOR MISMATCH[/] {escape(problem)}")
    if not result.ok:
        raise typer.Exit(1)
    out.print(f"OK: {report.count} events verified in {elapsed:.2f} s, head seq {report.head_seq} hash {report.head_hash}")
    out.print(f"anchors checked: {result.anchors_checked}" + ("" if result.anchors_checked else
              f" (none yet: run 'qms anchor' and commit {ctx.config.retention.anchors_file})"))


@app.command()
def anchor(config: ConfigOpt = None) -> None:
    """Append the trail head (seq, hash, time) to the anchors file; commit that file to git."""
    from ..services.verify import anchor as run_anchor

    ctx = _ctx(config)
    try:
        new, written = run_anchor(ctx.db, ctx.anchors_file)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    rel = ctx.anchors_file.relative_to(ctx.root) if ctx.anchors_file.is_relative_to(ctx.root) else ctx.anchors_file
    if written:
        out.print(f"anchored seq {new.seq} hash {new.hash} in {rel}")
        out.print(f"commit it: git -C {ctx.root} add {rel} && git -C {ctx.root} commit -m 'Anchor audit trail at seq {new.seq}'")
    else:
        out.print(f"head seq {new.seq} is already the last anchor in {rel}")


@app.command()
def status(config: ConfigOpt = None) -> None:
    """Table of QMS processes: owner, last run, next due, open items, overdue items."""
    from ..services.status import process_status

    ctx = _ctx(config)
    rows = process_status(ctx.db)
    table = Table(title=f"QMS processes — {ctx.config.organisation.name}")
    for column in ("process", "owner", "last run", "next due", "open", "overdue"):
        table.add_column(column, justify="right" if column in ("open", "overdue") else "left")
    for r in rows:
        last = f"{r.last_run:%Y-%m-%d %H:%M} {r.last_state.lower()}" if r.last_run and r.last_state else "never"
        table.add_row(r.key, r.owner, last,
                      f"{r.next_due:%Y-%m-%d %H:%M} UTC" if r.next_due else "on demand",
                      str(r.open_items), f"[red]{r.overdue_items}[/]" if r.overdue_items else "0")
    out.print(table)


# ------------------------------------------------------------------ records and documents


@records_app.command("list")
def records_list(
    config: ConfigOpt = None,
    kind: Annotated[Optional[str], typer.Option(help="Only this kind, e.g. capa.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Include closed records.")] = False,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
) -> None:
    """List QMS records, newest first."""
    from sqlalchemy import select

    from ..domain.records import CLOSED_STATUSES
    from ..store.tables import RecordRow

    ctx = _ctx(config)
    query = select(RecordRow).order_by(RecordRow.created_at.desc(), RecordRow.id.desc()).limit(limit)
    if kind:
        query = query.where(RecordRow.kind == kind)
    if not all_:
        query = query.where(RecordRow.status.not_in(CLOSED_STATUSES))
    table = Table()
    for column in ("id", "kind", "status", "owner", "due", "title"):
        table.add_column(column)
    today = date.today()
    with ctx.db.read() as session:
        for r in session.scalars(query):
            due = r.due_date.isoformat() if r.due_date else ""
            if r.due_date and r.due_date < today and r.status not in CLOSED_STATUSES:
                due = f"[red]{due}[/]"
            table.add_row(r.id, r.kind, r.status, r.owner or "", due, r.title)
    out.print(table)


@records_app.command("delete")
def records_delete(record_id: str, config: ConfigOpt = None, actor: ActorOpt = None) -> None:
    """Delete a record: refused (and the attempt recorded) before its retention end (Art. 18)."""
    from ..services.records import delete_record
    from ..store.uow import UnitOfWork

    ctx = _ctx(config)
    with UnitOfWork(ctx.db, _actor(actor)) as uow:
        delete_record(uow, ctx.config, record_id, datetime.now(UTC).date())
    out.print(f"deleted {record_id} (recorded in the trail)")


@document_app.command("list")
def document_list(config: ConfigOpt = None) -> None:
    """Registered documents with their current version, status and next review date."""
    from sqlalchemy import select

    from ..domain.documents import review_state
    from ..store.tables import DocumentRow, DocumentVersionRow

    ctx = _ctx(config)
    table = Table()
    for column in ("id", "title", "owner", "version", "status", "next review"):
        table.add_column(column)
    today = date.today()
    with ctx.db.read() as session:
        for doc in session.scalars(select(DocumentRow).where(DocumentRow.active.is_(True)).order_by(DocumentRow.id)):
            versions = session.scalars(select(DocumentVersionRow).where(DocumentVersionRow.document_id == doc.id)
                                       .order_by(DocumentVersionRow.id.desc())).all()
            current = next((v for v in versions if v.status == "effective"), versions[0] if versions else None)
            nxt = current.next_review_date if current and current.status == "effective" else None
            state = review_state(nxt, today)
            shown = nxt.isoformat() if nxt else "never approved"
            shown = f"[red]{shown}[/]" if state == "overdue" else f"[yellow]{shown}[/]" if state else shown
            table.add_row(doc.id, doc.title, doc.owner, current.version if current else "-",
                          current.status if current else "-", shown)
    out.print(table)


@document_app.command("scan")
def document_scan(
    config: ConfigOpt = None,
    window: Annotated[int, typer.Option(help="Days ahead that count as due soon.")] = 30,
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


@document_app.command("delete-version")
def document_delete_version(doc_id: str, version: str, config: ConfigOpt = None, actor: ActorOpt = None) -> None:
    """Delete a document version: refused (and recorded) before its retention end."""
    from ..services.records import delete_document_version
    from ..store.uow import UnitOfWork

    ctx = _ctx(config)
    with UnitOfWork(ctx.db, _actor(actor)) as uow:
        delete_document_version(uow, ctx.config, doc_id, version, datetime.now(UTC).date())
    out.print(f"deleted {doc_id} version {version} (recorded in the trail)")


@trail_app.command("show")
def trail_show(
    config: ConfigOpt = None,
    record: Annotated[Optional[str], typer.Option(help="Only events of this record, e.g. record:CAPA-2026-0001.")] = None,
    actor: Annotated[Optional[str], typer.Option(help="Only events by this actor.")] = None,
    limit: Annotated[int, typer.Option(help="The last N events.")] = 20,
) -> None:
    """The last events of the audit trail."""
    from sqlalchemy import select

    from ..store.tables import TrailEventRow

    ctx = _ctx(config)
    query = select(TrailEventRow).order_by(TrailEventRow.seq.desc()).limit(limit)
    if record:
        query = query.where(TrailEventRow.record == record)
    if actor:
        query = query.where(TrailEventRow.actor == actor)
    table = Table()
    for column in ("seq", "time (UTC)", "actor", "action", "record", "hash"):
        table.add_column(column)
    with ctx.db.read() as session:
        for e in reversed(session.scalars(query).all()):
            table.add_row(str(e.seq), e.ts[:19].replace("T", " "), e.actor, e.action, e.record, e.hash[:12] + "…")
    out.print(table)


# ------------------------------------------------------------------ stack and demo


@app.command()
def up(
    config: ConfigOpt = None,
    port: Annotated[int, typer.Option(help="Port of the local Prefect server.")] = 4200,
    host: Annotated[str, typer.Option(help="Address to bind; keep 127.0.0.1 unless behind a proxy.")] = "127.0.0.1",
) -> None:
    """Start the embedded stack: migrate, sync qms.yaml, Prefect server, runner. Ctrl-C stops all.

    With PREFECT_API_URL set, no local server starts: the runner serves the deployments against
    that Prefect server (production).
    """
    from ..services.sync import sync_config
    from ..stack import Stack, StackError
    from ..store.uow import UnitOfWork

    ctx = _ctx(config, migrate=True)
    with UnitOfWork(ctx.db, "qmsflow") as uow:
        report = sync_config(uow, ctx.config, ctx.root)
        uow.commit()
    out.print(f"records store {ctx.db.safe_url}: schema current; qms.yaml synced ({len(report.changes)} change(s))")
    stack = Stack(ctx, host=host, port=port, external_api=os.environ.get("PREFECT_API_URL"), say=out.print)
    stopping = False

    def _stop(_sig, _frame):  # noqa: ANN001
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        stack.start()
        if stack.ui_url:
            out.print(f"Prefect UI:  {stack.ui_url}")
        out.print(f"Prefect API: {stack.api_url}")
        out.print("qmsflow is up. Ctrl-C stops it.")
        while not stopping:
            dead = stack.check()
            if dead:
                raise StackError(dead)
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        out.print("stopping …")
        stack.stop()
        out.print("qmsflow stopped")


@app.command()
def demo(
    directory: Annotated[Path, typer.Argument(help="Folder of the demo compliance repo.")] = Path("demo"),
) -> None:
    """Scaffold a demo compliance repo if absent, and fill its store with demo records."""
    from ..services.demo import seed

    if not (directory / "qms.yaml").exists():
        init(directory, org="Demo AI GmbH", force=False, git=True)
    ctx = _ctx(directory / "qms.yaml", migrate=True)
    summary = seed(ctx)
    out.print(summary)


# ------------------------------------------------------------------ plumbing


def _progress(total: int, label: str):  # noqa: ANN202
    """Wrap an iterator with a progress bar on a terminal for long work; plain otherwise."""
    if total < 100_000 or not err.is_terminal:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    def wrap(rows):  # noqa: ANN001, ANN202
        with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=err, transient=True) as bar:
            task = bar.add_task(label, total=total)
            for i, row in enumerate(rows, 1):
                if i % 50_000 == 0:
                    bar.update(task, completed=i)
                yield row
    return wrap


def run(argv: list[str] | None = None) -> int:
    """Entry point of the ``qms`` script: map every error to one message and an exit code."""
    from ..services.scaffold import ScaffoldError
    from ..stack import StackError
    from ..store.db import StoreError

    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="qms", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        err.print("aborted")
        return 130
    except typer.TyperException as exc:  # usage errors: bad option, missing argument
        exc.show()
        return getattr(exc, "exit_code", 2)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            err.print(f"[red]error:[/] {escape(line)}")
        return 2
    except (CliError,) as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        return exc.code
    except (DomainError, StoreError, StackError, ScaffoldError) as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence: no trace reaches a user
        if os.environ.get("QMS_DEBUG"):
            raise
        err.print(f"[red]internal error:[/] {exc.__class__.__name__}: {escape(str(exc))}")
        err.print("this is a bug in qmsflow; run again with QMS_DEBUG=1 to see the trace, and report it")
        return 70


if __name__ == "__main__":
    sys.exit(run())
