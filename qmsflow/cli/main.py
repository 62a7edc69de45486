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
capa_app = typer.Typer(help="Corrective and preventive actions.", no_args_is_help=True)
jira_app = typer.Typer(help="Jira synchronisation.", no_args_is_help=True)
app.add_typer(capa_app, name="capa")
app.add_typer(jira_app, name="jira")
user_app = typer.Typer(help="Web app accounts (dashboard sign-in).", no_args_is_help=True)
app.add_typer(user_app, name="user")
token_app = typer.Typer(help="Personal API tokens (for qms approve and CI).", no_args_is_help=True)
approvals_app = typer.Typer(help="Approval requests.", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(approvals_app, name="approvals")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _table(*columns: str, title: str | None = None, right: tuple[str, ...] = ()) -> Table:
    """A table whose first column (the identifier to copy into the next command) is never cut short."""
    table = Table(title=title)
    for index, column in enumerate(columns):
        table.add_column(column, justify="right" if column in right else "left", no_wrap=index == 0)
    return table


ConfigOpt = Annotated[
    Optional[Path],
    typer.Option("--config", "-c", help="qms.yaml to use (else QMS_CONFIG, else ./qms.yaml or a parent's)."),
]
ActorOpt = Annotated[
    Optional[str], typer.Option("--as", help="Who acts (person id); default QMS_ACTOR or cli:<os user>.")
]


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
    _start_trail(report.root / "qms.yaml", org)
    out.print(f"Next: cd {directory} && qms check && qms up")


def _start_trail(config: Path, org: str) -> None:
    """Create the records store, open its trail and anchor it at once: git witnesses the trail from its start."""
    from .. import __version__
    from ..services.verify import anchor as run_anchor
    from ..store import trail
    from ..store.db import StoreError
    from ..store.uow import UnitOfWork

    try:
        ctx = _ctx(config, migrate=True)
    except StoreError as exc:
        raise CliError(f"scaffolded, but the records store cannot be created: {exc}") from None
    with ctx:
        schema = ctx.db.current_revision()
        with UnitOfWork(ctx.db, "qmsflow") as uow:
            if trail.count(uow.session) == 0:
                about = {"organisation": org, "schema": schema, "qmsflow": __version__}
                uow.record("store.initialised", "store:trail", None, about)
                uow.commit()
        out.print(f"records store {ctx.db.safe_url}: audit trail started")
        _say_anchored(ctx, run_anchor(ctx.db, ctx.anchors_file))


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
    out.print(
        f"{loaded.path}: OK — {len(c.people)} people, {len(c.systems)} AI systems, "
        f"{len(c.processes)} processes, {len(c.documents)} documents; "
        f"Art. 17(1) aspects covered: {len(c.covered_aspects())}/13"
    )


# ------------------------------------------------------------------ store


@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt = None) -> None:
    """Migrate the records store to the newest schema (SQLite file or QMS_DATABASE_URL)."""
    from ..settings import load_config
    from ..store.db import Database, resolve_url

    loaded = load_config(config)
    db = Database(resolve_url(loaded.state_dir))
    before, after = db.upgrade()
    out.print(
        f"{db.safe_url}: schema {before or 'none'} → {after}"
        if before != after
        else f"{db.safe_url}: schema already at {after}"
    )
    _say_repaired(db.repair_guards())


def _say_repaired(repaired: list[str]) -> None:
    for problem in repaired:
        err.print(
            f"[yellow]warning:[/] {escape(problem)}: reinstalled, and recorded in the audit trail; "
            "run 'qms verify' to see whether anything was changed meanwhile"
        )


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
    """Verify the audit trail and every record table against it; exit 1 if anything is wrong.

    Checks the append-only triggers, the hash chain, every anchor (the anchors file and every version
    of it in git history) and every head earlier verifications saw (events removed from the tail),
    that each record table holds exactly the state the trail implies, and each signature's content.
    """
    from ..services.verify import verify as run_verify
    from ..store import trail

    ctx = _ctx(config)
    with ctx.db.read() as session:
        total = trail.count(session)
    started = time.perf_counter()
    result = run_verify(ctx.db, ctx.anchors_file, progress=_progress(total, "verifying"))
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
        done = run_anchor(ctx.db, ctx.anchors_file)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    _say_anchored(ctx, done)


def _say_anchored(ctx, done) -> None:  # noqa: ANN001
    rel = ctx.anchors_file.relative_to(ctx.root) if ctx.anchors_file.is_relative_to(ctx.root) else ctx.anchors_file
    new = done.anchor
    if done.written:
        out.print(f"anchored seq {new.seq} hash {new.hash} in {rel}")
    else:
        out.print(f"head seq {new.seq} is already the last anchor in {rel}")
    if done.commit:
        out.print(f"committed to git: {done.commit[:10]} (push it to a remote you do not administer, as a witness)")
    elif done.git_repo:
        err.print(f"[yellow]warning:[/] could not commit {rel} to git; commit it yourself")
    else:
        out.print(f"{ctx.root} is not a git repo: keep {rel} somewhere the database administrator cannot rewrite")


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
    from ..services.outbox import backlog

    for target, info in backlog(ctx.db).items():
        line = f"{target}: {info['pending']} message(s) waiting since {info['oldest']:%Y-%m-%d %H:%M} UTC"
        if info["failing"]:
            line += f", {info['failing']} failing; last error: {info['last_error']}"
        err.print(("[yellow]" if info["failing"] else "") + escape(line) + ("[/]" if info["failing"] else ""))


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
    table = _table("id", "kind", "status", "owner", "due", "title")
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
    table = _table("id", "title", "owner", "version", "status", "next review")
    today = date.today()
    with ctx.db.read() as session:
        for doc in session.scalars(select(DocumentRow).where(DocumentRow.active.is_(True)).order_by(DocumentRow.id)):
            versions = session.scalars(
                select(DocumentVersionRow)
                .where(DocumentVersionRow.document_id == doc.id)
                .order_by(DocumentVersionRow.id.desc())
            ).all()
            current = next((v for v in versions if v.status == "effective"), versions[0] if versions else None)
            nxt = current.next_review_date if current and current.status == "effective" else None
            state = review_state(nxt, today)
            shown = nxt.isoformat() if nxt else "never approved"
            shown = f"[red]{shown}[/]" if state == "overdue" else f"[yellow]{shown}[/]" if state else shown
            table.add_row(
                doc.id,
                doc.title,
                doc.owner,
                current.version if current else "-",
                current.status if current else "-",
                shown,
            )
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


@document_app.command("render")
def document_render(
    doc_id: str,
    config: ConfigOpt = None,
    version: Annotated[Optional[str], typer.Option(help="The version to render (default: the effective one).")] = None,
) -> None:
    """Render the controlled copy (HTML + PDF) of an approved version again, e.g. after a failed rendering."""
    from ..services.render import RenderError
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
    record: Annotated[
        Optional[str], typer.Option(help="Only events of this record, e.g. record:CAPA-2026-0001.")
    ] = None,
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
    table = _table("seq", "time (UTC)", "actor", "action", "record", "hash")
    with ctx.db.read() as session:
        for e in reversed(session.scalars(query).all()):
            table.add_row(str(e.seq), e.ts[:19].replace("T", " "), e.actor, e.action, e.record, e.hash[:12] + "…")
    out.print(table)


# ------------------------------------------------------------------ approvals


@document_app.command("submit")
def document_submit(
    doc_id: str,
    config: ConfigOpt = None,
    actor: ActorOpt = None,
    major: Annotated[bool, typer.Option(help="A major change: next version N+1.0 (else N.M+1).")] = False,
    still_valid: Annotated[bool, typer.Option(help="Periodic review of the effective version, no change.")] = False,
    comment: Annotated[Optional[str], typer.Option(help="What changed and why (shown to approvers).")] = None,
) -> None:
    """Start a document review: snapshot DOC_ID, request signed approval, wait (Slack, web or CLI)."""
    from ..adapters import prefect_api
    from ..services.review import check_submission
    from ..store.uow import UnitOfWork

    ctx = _ctx(config)
    who = _actor(actor)
    if who not in {p.id for p in ctx.config.people}:
        raise CliError(f"--as {who!r} is not a person in qms.yaml: say who submits (e.g. --as ana or QMS_ACTOR=ana)")
    with UnitOfWork(ctx.db, who) as uow:  # refused now rather than in a failed run (the run checks again)
        check_submission(uow, ctx.config, ctx.root, doc_id, still_valid)
    url = prefect_api.api_url(ctx.loaded.state_dir)
    try:
        run_id = prefect_api.start_run(
            url,
            "document-review/on-demand",
            {
                "document_id": doc_id,
                "submitted_by": who,
                "major": major,
                "still_valid": still_valid,
                "comment": comment,
                "config": str(ctx.loaded.path),
            },
        )
    except prefect_api.PrefectUnavailable as exc:
        raise CliError(str(exc)) from None
    out.print(
        f"review of {doc_id} started (flow run {run_id}); approvers are notified; "
        f"see 'qms approvals list' and {url.removesuffix('/api')}/runs/flow-run/{run_id}"
    )


@approvals_app.command("list")
def approvals_list(
    config: ConfigOpt = None,
    person: Annotated[Optional[str], typer.Option("--for", help="Only what waits for this person.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Include decided requests.")] = False,
) -> None:
    """Approval requests: pending ones (or all), with who may still sign."""
    from sqlalchemy import select

    from ..services.approvals import load, pending_for
    from ..store.tables import ApprovalRequestRow
    from ..store.uow import UnitOfWork

    ctx = _ctx(config)
    table = _table("id", "status", "title", "due", "waiting for", "signatures")
    with UnitOfWork(ctx.db, "cli") as uow:
        if person:
            rows = pending_for(uow, person)
        else:
            query = select(ApprovalRequestRow).order_by(ApprovalRequestRow.created_at.desc()).limit(100)
            if not all_:
                query = query.where(ApprovalRequestRow.status == "pending")
            rows = list(uow.session.scalars(query))
        for row in rows:
            _, request = load(uow, row.id)
            signed = ", ".join(f"{s.printed_name} ({s.decision.label})" for s in request.signatures)
            waiting = ", ".join(request.pending_approvers()) if not request.decided else ""
            table.add_row(row.id, row.status, row.title, row.due_date.isoformat(), waiting, signed)
    out.print(table)


@app.command()
def approve(
    request_id: str,
    decision: Annotated[str, typer.Option(help="approve, reject or changes.")],
    comment: Annotated[Optional[str], typer.Option(help="Required for reject and changes.")] = None,
    token: Annotated[
        Optional[str], typer.Option(help="Personal API token (else QMS_TOKEN).", envvar="QMS_TOKEN", show_envvar=True)
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Sign an approval request from the command line, authenticated by your personal API token."""
    from ..domain.approvals import Decision, Method
    from ..services.approvals import after_decision, decide
    from ..services.tokens import authenticate
    from ..store.uow import UnitOfWork

    try:
        choice = Decision(decision)
    except ValueError:
        raise CliError(f"--decision {decision!r} is not allowed (allowed: approve, reject, changes)", code=2) from None
    ctx = _ctx(config)
    person = authenticate(ctx.db, token)
    with UnitOfWork(ctx.db, person) as uow:
        result = decide(uow, ctx.config, request_id, person, choice, comment, Method.CLI, claimed=f"token:{person}")
    after_decision(ctx, result)
    out.print(
        f"{request_id}: signed by {result.signature.printed_name} at {result.signature.at:%Y-%m-%d %H:%M:%S} UTC "
        f"({choice.label}; meaning: {result.signature.meaning}); request {result.status.value.replace('_', ' ')}"
    )


@token_app.command("create")
def token_create(
    person: str,
    name: Annotated[str, typer.Option(help="What the token is for.")] = "cli",
    config: ConfigOpt = None,
    actor: ActorOpt = None,
) -> None:
    """Create a personal API token for PERSON; it is shown once and stored only as a hash."""
    from ..services.tokens import create_token
    from ..store.uow import UnitOfWork

    ctx = _ctx(config, migrate=True)
    _sync_people(ctx)
    with UnitOfWork(ctx.db, _actor(actor)) as uow:
        token = create_token(uow, person, name)
    out.print(token)
    err.print(f"token for {person} created; store it now (e.g. export QMS_TOKEN=…): it cannot be shown again")


@token_app.command("list")
def token_list(config: ConfigOpt = None) -> None:
    """Tokens by person: id, name, created, last used, revoked (never the token itself)."""
    from ..services.tokens import list_tokens

    ctx = _ctx(config)
    table = _table("id", "person", "name", "created", "last used", "revoked")
    for t in list_tokens(ctx.db):
        fmt = lambda d: f"{d:%Y-%m-%d %H:%M}" if d else ""  # noqa: E731
        table.add_row(str(t.id), t.person, t.name, fmt(t.created_at), fmt(t.last_used_at), fmt(t.revoked_at))
    out.print(table)


@token_app.command("revoke")
def token_revoke(token_id: int, config: ConfigOpt = None, actor: ActorOpt = None) -> None:
    """Revoke a token by its id (see 'qms token list')."""
    from ..services.tokens import revoke
    from ..store.uow import UnitOfWork

    ctx = _ctx(config)
    with UnitOfWork(ctx.db, _actor(actor)) as uow:
        revoke(uow, token_id)
    out.print(f"token {token_id} revoked")


@capa_app.command("open")
def capa_open(
    title: Annotated[str, typer.Option(help="What went wrong, in one line.")],
    source: Annotated[str, typer.Option(help="complaint, incident, audit, release, pms or other.")],
    owner: Annotated[str, typer.Option(help="Person who owns the CAPA.")],
    severity: Annotated[str, typer.Option(help="low, medium, high or critical.")] = "medium",
    process: Annotated[str, typer.Option(help="The QMS process it belongs to.")] = "capa",
    description: Annotated[str, typer.Option(help="Details of the nonconformity.")] = "",
    system: Annotated[Optional[list[str]], typer.Option(help="AI system concerned (repeatable).")] = None,
    config: ConfigOpt = None,
    actor: ActorOpt = None,
) -> None:
    """Open a CAPA (CAPA-YYYY-NNNN); with Jira on, an issue is created for it."""
    from ..services import capa
    from ..services.delivery import deliver
    from ..store.uow import UnitOfWork

    ctx = _ctx(config)
    with UnitOfWork(ctx.db, _actor(actor)) as uow:
        row = capa.open_capa(
            uow,
            ctx.config,
            title=title,
            source=source,
            owner=owner,
            process=process,
            severity=severity,
            description=description,
            systems=system or [],
        )
        uow.commit()
        capa_id, due = row.id, row.due_date
    deliver(ctx.db, ctx.config)
    out.print(f"{capa_id} opened (owner {owner}, severity {severity}); containment due {due}")


@capa_app.command("advance")
def capa_advance(
    capa_id: str,
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help="Next stage: containment, root_cause, action_plan, implementation, effectiveness_check, closed.",
        ),
    ],
    field: Annotated[
        Optional[list[str]],
        typer.Option(
            "--field",
            "-f",
            help="Stage data as NAME=VALUE (repeatable); JSON values allowed, e.g. actions='[{\"what\":…}]'.",
        ),
    ] = None,
    config: ConfigOpt = None,
    actor: ActorOpt = None,
) -> None:
    """Move a CAPA to its next stage with the data that stage needs; errors name the missing field.

    Needed: containment: correction; root_cause: method, cause, similar_cases; action_plan: actions
    (what, owner, due; signed approval); implementation: -; effectiveness_check: evidence (per action
    index); closed: result=effective, checked_by, no_adverse_effect, risk_update or
    no_risk_update_reason (signed by the process owner or a quality lead). From effectiveness_check,
    result=ineffective, checked_by, notes go back to root_cause.
    """
    import json

    from ..services import capa
    from ..services.delivery import deliver
    from ..store.uow import UnitOfWork

    fields = {}
    for item in field or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise CliError(f"--field {item!r} is not NAME=VALUE", code=2)
        try:
            fields[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            fields[name.strip()] = value
    ctx = _ctx(config)
    with UnitOfWork(ctx.db, _actor(actor)) as uow:
        result = capa.advance(uow, ctx.config, capa_id, to, fields)
        uow.commit()
    deliver(ctx.db, ctx.config)
    if "awaiting" in result:
        out.print(
            f"{capa_id}: {to} needs a signature: approval {result['awaiting']} requested "
            f"(sign with 'qms approve {result['awaiting']} --decision approve')"
        )
    else:
        out.print(f"{capa_id} is now in {result['stage']}")


@capa_app.command("show")
def capa_show(capa_id: str, config: ConfigOpt = None) -> None:
    """A CAPA with its stage data, next stages and trail."""
    import json

    from ..services import capa
    from ..store import trail
    from ..store.uow import UnitOfWork

    ctx = _ctx(config)
    with UnitOfWork(ctx.db, "cli") as uow:
        info = capa.show(uow, capa_id)
        events = trail.events_for(uow.session, f"record:{capa_id}")
    out.print(f"[bold]{info['id']}[/] {escape(info['title'])}")
    out.print(
        f"stage {info['status']} · owner {info['owner']} · due {info['due_date']} · next: "
        f"{', '.join(info['next']) or '—'}"
    )
    out.print(escape(json.dumps(info["data"], indent=2, ensure_ascii=False)))
    for e in events:
        out.print(f"  {e.ts[:19]} {e.actor} {e.action}")


@capa_app.command("list")
def capa_list(
    config: ConfigOpt = None,
    stage: Annotated[Optional[str], typer.Option(help="Only this stage.")] = None,
    overdue: Annotated[bool, typer.Option(help="Only overdue CAPAs.")] = False,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
) -> None:
    """CAPAs, oldest open first."""
    from sqlalchemy import select

    from ..store.tables import RecordRow

    ctx = _ctx(config)
    query = select(RecordRow).where(RecordRow.kind == "capa").order_by(RecordRow.created_at).limit(limit)
    if stage:
        query = query.where(RecordRow.status == stage)
    else:
        query = query.where(RecordRow.status != "closed")
    if overdue:
        query = query.where(RecordRow.due_date < date.today())
    table = _table("id", "stage", "severity", "owner", "due", "title")
    with ctx.db.read() as session:
        for r in session.scalars(query):
            due = r.due_date.isoformat() if r.due_date else ""
            if r.due_date and r.due_date < date.today():
                due = f"[red]{due}[/]"
            table.add_row(r.id, r.status, r.data.get("severity", ""), r.owner or "", due, escape(r.title))
    out.print(table)


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
    delivered = deliver(ctx.db, ctx.config)
    report = jira_sync.reconcile(ctx, jira.JiraAdapter(jira.make_client(settings), settings))
    out.print(
        f"delivered {len(delivered.sent)}, failed {len(delivered.failed)}, waiting {delivered.waiting}; "
        f"reconciled {report.seen} changed issue(s): {report.outcomes or 'no change'}"
    )


@user_app.command("add")
def user_add(
    username: str,
    person: Annotated[str, typer.Option(help="The person of qms.yaml this account signs as.")],
    role: Annotated[str, typer.Option(help="viewer (read), approver (read and sign) or admin.")] = "viewer",
    password_stdin: Annotated[bool, typer.Option(help="Read the password from standard input.")] = False,
    config: ConfigOpt = None,
    actor: ActorOpt = None,
) -> None:
    """Create a dashboard account; the password (12+ characters) is asked for, and stored argon2-hashed."""
    from ..services.accounts import add_user
    from ..store.uow import UnitOfWork

    ctx = _ctx(config, migrate=True)
    _sync_people(ctx)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    with UnitOfWork(ctx.db, _actor(actor)) as uow:
        add_user(uow, username, person, role, password)
    out.print(f"user {username} ({role}) created for {person}")


@user_app.command("list")
def user_list(config: ConfigOpt = None) -> None:
    """Accounts: user name, person, role, created, disabled."""
    from sqlalchemy import select

    from ..store.tables import UserRow

    ctx = _ctx(config)
    table = _table("user", "person", "role", "created", "disabled")
    with ctx.db.read() as session:
        for u in session.scalars(select(UserRow).order_by(UserRow.username)):
            table.add_row(
                u.username,
                u.person,
                u.role,
                f"{u.created_at:%Y-%m-%d}",
                f"{u.disabled_at:%Y-%m-%d}" if u.disabled_at else "",
            )
    out.print(table)


@app.command()
def web(
    config: ConfigOpt = None,
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
) -> None:
    """Serve the qmsflow web app alone: dashboard, Slack interactivity, approvals API."""
    import uvicorn

    from ..web.app import create_app

    ctx = _ctx(config)
    uvicorn.run(create_app(ctx), host=host, port=port, log_level="info")


# ------------------------------------------------------------------ stack and demo


@app.command()
def up(
    config: ConfigOpt = None,
    port: Annotated[int, typer.Option(help="Port of the local Prefect server.")] = 4200,
    host: Annotated[str, typer.Option(help="Address to bind; keep 127.0.0.1 unless behind a proxy.")] = "127.0.0.1",
    web_port: Annotated[int, typer.Option(help="Port of the qmsflow web app.")] = 8000,
) -> None:
    """Start the embedded stack: migrate, sync qms.yaml, Prefect server, runner, web app. Ctrl-C stops all.

    With PREFECT_API_URL set, no local server starts: the runner serves the deployments against
    that Prefect server (production).
    """
    from ..services.sync import sync_config
    from ..stack import Stack, StackError
    from ..store.uow import UnitOfWork

    ctx = _ctx(config, migrate=True)
    _say_repaired(ctx.repaired_guards)
    with UnitOfWork(ctx.db, "qmsflow") as uow:
        report = sync_config(uow, ctx.config, ctx.root)
        uow.commit()
    out.print(f"records store {ctx.db.safe_url}: schema current; qms.yaml synced ({len(report.changes)} change(s))")
    stack = Stack(
        ctx, host=host, port=port, external_api=os.environ.get("PREFECT_API_URL"), web_port=web_port, say=out.print
    )
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
        out.print(f"qmsflow web: {stack.web_url}  (Slack interactivity: {stack.web_url}/slack/interactions)")
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
    scale: Annotated[
        str,
        typer.Option(
            help="small: a team's first weeks; large: ten years of a 50-system "
            "organisation (~10,000 document versions, 100,000 CAPAs, "
            "1,000,000 trail events; a few minutes)."
        ),
    ] = "small",
) -> None:
    """Scaffold a demo compliance repo if absent, and fill its store with demo records."""
    from ..services.demo import seed

    if scale not in ("small", "large"):
        raise CliError(f"--scale {scale!r} is not allowed (allowed: small, large)", code=2)
    if scale == "large":
        _demo_large(directory)
        return
    if not (directory / "qms.yaml").exists():
        init(directory, org="Demo AI GmbH", force=False, git=True)
    ctx = _ctx(directory / "qms.yaml", migrate=True)
    summary = seed(ctx)
    out.print(summary)
    _anchor_now(ctx)


def _anchor_now(ctx) -> None:  # noqa: ANN001
    from ..services.verify import anchor as run_anchor

    _say_anchored(ctx, run_anchor(ctx.db, ctx.anchors_file))


def _demo_large(directory: Path) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from ..services.demo import _demo_users
    from ..services.demo_large import fill, write_config
    from ..store import trail

    if (directory / "qms.yaml").exists():
        ctx = _ctx(directory / "qms.yaml", migrate=True)
        with ctx.db.read() as session:
            if trail.count(session) > 0:
                raise CliError(f"{directory} already holds records: use a new folder for the large demo")
    else:
        count = write_config(directory)
        out.print(f"wrote {directory / 'qms.yaml'} with 50 AI systems and {count} controlled documents")
        ctx = _ctx(directory / "qms.yaml", migrate=True)
    with Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err
    ) as bar:
        task = bar.add_task("trail events", total=1_000_000)
        summary = fill(
            ctx.db,
            ctx.config,
            ctx.root,
            progress=lambda _what, done, total: bar.update(task, completed=done, total=total),
        )
    out.print(
        f"large demo in {ctx.db.safe_url}: {summary['document_versions']:,} document versions, "
        f"{summary['capas']:,} CAPAs, {summary['events']:,} trail events"
    )
    out.print(_demo_users(ctx))
    _anchor_now(ctx)


# ------------------------------------------------------------------ plumbing


def _sync_people(ctx) -> None:  # noqa: ANN001
    """Accounts and tokens belong to people of qms.yaml: bring the store in line first."""
    from ..services.sync import sync_config
    from ..store.uow import UnitOfWork

    with UnitOfWork(ctx.db, "qmsflow") as uow:
        sync_config(uow, ctx.config, ctx.root)
        uow.commit()


def _progress(total: int, label: str):  # noqa: ANN202
    """Wrap an iterator with a progress bar on a terminal for long work; plain otherwise."""
    if total < 100_000 or not err.is_terminal:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    def wrap(rows):  # noqa: ANN001, ANN202
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=True,
        ) as bar:
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
