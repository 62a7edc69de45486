"""The ``qms`` command line. Every command has --help; errors are one clear message, never a trace."""

from __future__ import annotations

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

from ..domain import limits
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
outbox_app = typer.Typer(help="Messages queued for Slack and Jira: see, retry, drop.", no_args_is_help=True)
app.add_typer(outbox_app, name="outbox")
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


def _bounded(max_length: int, *, multiline: bool = False):  # noqa: ANN202
    """A typer callback refusing text longer than its column, or not text at all (limits.py)."""

    def check(value: str | list[str] | None) -> str | list[str] | None:
        for item in value if isinstance(value, list) else [] if value is None else [value]:
            problem = limits.text_problem(item, max_length, multiline=multiline)
            if problem:
                raise typer.BadParameter(problem)
        return value

    return check


def _count(maximum: int, minimum: int = 1) -> dict:
    """Options of a typer integer option within a range (click refuses anything else, huge numbers too)."""
    return {"min": minimum, "max": maximum}


ConfigOpt = Annotated[
    Optional[Path],
    typer.Option("--config", "-c", help="qms.yaml to use (else QMS_CONFIG, else ./qms.yaml or a parent's)."),
]
ActorOpt = Annotated[
    Optional[str],
    typer.Option(
        "--as",
        callback=_bounded(limits.NAME),
        help="Act as PERSON without a credential: only 'qmsflow' (system work) or, in trusted single-user mode "
        "(security.trusted_single_user), any person. Otherwise your sign-in ('qms login', QMS_TOKEN) says who acts.",
    ),
]
TokenFileOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--token-file",
        help="Read your API token from this file ('-': standard input) instead of QMS_TOKEN or 'qms login'.",
    ),
]
PasswordStdinOpt = Annotated[
    bool,
    typer.Option(
        "--password-stdin", help="Read the password(s) from standard input, one per line, without confirmation."
    ),
]


class CliError(Exception):
    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def _who(ctx, as_option: str | None, token_file: Path | None = None, system: bool = False):  # noqa: ANN001, ANN202
    """The authenticated actor of a command (see qmsflow/cli/identity.py)."""
    from .identity import person_for_cli

    claimed = os.environ.get("QMS_ACTOR")
    problem = limits.text_problem(claimed, limits.NAME) if claimed and not as_option else None
    if problem:
        raise CliError(f"the actor (QMS_ACTOR): {problem}", code=2)

    return person_for_cli(ctx, as_option, token_file=token_file, system=system)


def _secret(prompt: str, from_stdin: bool, confirm: bool = False) -> str:
    """A password from standard input (one line) or a hidden prompt."""
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise CliError(f"{prompt.lower()}: nothing on standard input", code=2)
        return line.rstrip("\r\n")
    return typer.prompt(prompt, hide_input=True, confirmation_prompt=confirm)


def _ctx(config: Path | None, migrate: bool = False):  # noqa: ANN202
    from ..context import open_context

    return open_context(config, migrate=migrate)


# ------------------------------------------------------------------ scaffold and check


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Folder of the new compliance repo.")] = Path("."),
    org: Annotated[str, typer.Option(help="Organisation name.", callback=_bounded(limits.NAME))] = "Example AI GmbH",
    force: Annotated[bool, typer.Option(help="Overwrite an existing qms.yaml and documents.")] = False,
    git: Annotated[bool, typer.Option(help="git init and commit, unless already in a git repo.")] = True,
    admin: Annotated[
        Optional[str],
        typer.Option(help="Create the first admin account for this person (user name = person id); password asked."),
    ] = None,
    password_stdin: PasswordStdinOpt = False,
    trusted_single_user: Annotated[bool, typer.Option(hidden=True)] = False,
) -> None:
    """Scaffold a compliance repo: qms.yaml, the ten procedures of a minimum QMS, docs/adr."""
    from ..services.scaffold import ScaffoldError, scaffold

    try:
        report = scaffold(directory, org_name=org, force=force, git=git, trusted_single_user=trusted_single_user)
    except ScaffoldError as exc:
        raise CliError(str(exc)) from None
    out.print(f"Scaffolded {len(report.written)} files in {report.root}")
    for path in report.written:
        out.print(f"  {path.relative_to(report.root)}")
    if report.git_initialised:
        out.print("Initialised a git repo with a first commit.")
    _start_trail(report.root / "qms.yaml", org)
    if admin:
        _first_admin(report.root / "qms.yaml", admin, password_stdin)
        out.print(f"Next: cd {directory} && qms login --user {admin} && qms up")
    elif not trusted_single_user:
        out.print(f"Next: cd {directory} && qms check && qms user add NAME --person ID --role admin && qms up")


def _first_admin(config: Path, person: str, password_stdin: bool) -> None:
    from ..services import accounts
    from ..store.uow import UnitOfWork
    from .identity import os_user

    ctx = _ctx(config, migrate=True)
    _sync_people(ctx)
    if person not in {p.id for p in ctx.config.people}:
        people = ", ".join(p.id for p in ctx.config.people)
        raise CliError(f"--admin {person!r} is not a person in qms.yaml (people: {people})", code=2)
    password = _secret(f"Password for {person}", password_stdin, confirm=True)
    with UnitOfWork(ctx.db, f"bootstrap:{os_user()}") as uow:
        accounts.add_first_admin(uow, person, person, password)
    out.print(f"First admin {person} created (dashboard and 'qms login').")


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
    """Migrate the records store to the newest schema (SQLite file or QMS_DATABASE_URL).

    On PostgreSQL with QMS_MIGRATE_DATABASE_URL (the schema owner) set, the owner migrates and grants
    the role of QMS_DATABASE_URL what qmsflow needs: the trail insert-only, nothing it could bypass it with.
    """
    from sqlalchemy.engine import make_url

    from ..settings import load_config
    from ..store.db import Database, migrate_url, resolve_url

    loaded = load_config(config)
    db = Database(resolve_url(loaded.state_dir))
    before, after = db.upgrade()
    out.print(
        f"{db.safe_url}: schema {before or 'none'} → {after}"
        if before != after
        else f"{db.safe_url}: schema already at {after}"
    )
    owner = make_url(migrate_url()).username if migrate_url() else None
    if owner and not db.is_sqlite and owner != db.role:
        out.print(f"migrated as {owner}; granted {db.role}: read, write records, trail insert-only")
    _say_repaired(db.repair_guards())
    for warning in db.privilege_warnings():
        err.print(f"[yellow]warning:[/] {escape(warning)}")


@db_app.command("grant")
def db_grant(
    role: Annotated[str, typer.Argument(help="The PostgreSQL role qmsflow runs as.", callback=_bounded(limits.ID))],
    config: ConfigOpt = None,
) -> None:
    """Grant ROLE what qmsflow needs on PostgreSQL, and no more (run as the schema owner).

    Connects with QMS_MIGRATE_DATABASE_URL (else QMS_DATABASE_URL). ROLE may read every table, write
    the record tables, and only insert into the audit trail. 'qms db upgrade' does this for the role
    of QMS_DATABASE_URL by itself; use this for further roles (e.g. a second worker's).
    """
    from ..settings import load_config
    from ..store.db import Database, migrate_url, resolve_url

    loaded = load_config(config)
    owner = Database(migrate_url() or resolve_url(loaded.state_dir))
    try:
        owner.require_current()
        owner.grant_app_role(role)
    finally:
        owner.dispose()
    out.print(f"{owner.safe_url}: granted {role} read, write on the record tables, insert-only on trail_events")


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
    with UnitOfWork(ctx.db, _who(ctx, actor, system=True).id) as uow:
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
        line = f"{target}: {info['pending']} message(s) not sent since {info['oldest']:%Y-%m-%d %H:%M} UTC"
        trouble = info["failing"] or info["parked"]
        if trouble:
            line += f", {info['failing']} failing, {info['parked']} parked; last error: {info['last_error']}"
            line += " (see 'qms outbox list')"
        err.print(("[yellow]" if trouble else "") + escape(line) + ("[/]" if trouble else ""))


# ------------------------------------------------------------------ records and documents


@records_app.command("list")
def records_list(
    config: ConfigOpt = None,
    kind: Annotated[Optional[str], typer.Option(help="Only this kind, e.g. capa.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Include closed records.")] = False,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.", **_count(limits.LIST_MAX))] = 50,
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


@document_app.command("list")
def document_list(config: ConfigOpt = None) -> None:
    """Registered documents with their current version, status and next review date."""
    from sqlalchemy import select

    from ..domain.documents import review_due, review_state
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
            state = review_state(review_due(nxt, versions[-1].created_at.date() if versions else today), today)
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
    url = prefect_api.api_url(ctx.loaded.state_dir)
    try:
        run_id = prefect_api.start_run(
            url,
            "document-review/on-demand",
            {"submission_id": submission_id},
            idempotency_key=f"submission:{submission_id}",
        )
    except prefect_api.PrefectUnavailable as exc:
        raise CliError(f"{submission_id} recorded, but its review did not start: {exc}") from None
    out.print(
        f"{submission_id}: review of {doc_id} started (flow run {run_id}); approvers are notified; "
        f"see 'qms approvals list' and {url.removesuffix('/api')}/runs/flow-run/{run_id}"
    )
    if data.get("authors"):
        out.print(f"authors of this change (none of them may approve it): {', '.join([who, *data['authors']])}")
    if data.get("unmapped_authors"):
        err.print(
            "[yellow]warning:[/] git authors with no person in qms.yaml (shown to the approvers): "
            + escape(", ".join(data["unmapped_authors"]))
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


@approvals_app.command("show")
def approvals_show(request_id: str, config: ConfigOpt = None) -> None:
    """One approval request: who may sign, the signatures, and the content to be signed, from the store."""
    from ..services import contents
    from ..services.approvals import load
    from ..store.uow import UnitOfWork

    ctx = _ctx(config)
    with UnitOfWork(ctx.db, "cli") as uow:
        row, request = load(uow, request_id)
        stored = contents.load(uow.session, row.content_sha256)
    out.print(f"[bold]{row.id}[/] {escape(row.title)} — {row.status.replace('_', ' ')}")
    out.print(f"subject {row.subject} · due {row.due_date} · needs {row.required} approval(s)")
    out.print(f"approvers: {', '.join(row.approvers)}; waiting for: {', '.join(request.pending_approvers()) or '—'}")
    out.print(f"submitted by: {row.author or '—'}; authors (may not sign): {', '.join(request.all_authors) or '—'}")
    if row.data.get("unmapped_authors"):
        out.print(
            f"[yellow]git authors with no person in qms.yaml:[/] {escape(', '.join(row.data['unmapped_authors']))}"
        )
    out.print(f"an approval means: {escape(row.meaning)}")
    for s in request.signatures:
        out.print(
            f"  signed by {s.printed_name} at {s.at:%Y-%m-%d %H:%M:%S} UTC via {s.method.value}: "
            f"{s.decision.label} ({escape(s.meaning)})" + (f" — {escape(s.comment)}" if s.comment else "")
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
    from ..store.uow import UnitOfWork

    try:
        choice = Decision(decision)
    except ValueError:
        raise CliError(f"--decision {decision!r} is not allowed (allowed: approve, reject, changes)", code=2) from None
    ctx = _ctx(config)
    who = _who(ctx, actor, token_file)
    person = who.id
    with UnitOfWork(ctx.db, person) as uow:
        result = decide(uow, ctx.config, request_id, person, choice, comment, Method.CLI, claimed=who.claimed)
    after_decision(ctx, result)
    out.print(
        f"{request_id}: signed by {result.signature.printed_name} at {result.signature.at:%Y-%m-%d %H:%M:%S} UTC "
        f"({choice.label}; meaning: {result.signature.meaning}); request {result.status.value.replace('_', ' ')}"
    )


# ------------------------------------------------------------------ identity: sign-in, tokens, accounts


def _sign_in(ctx, username: str, password: str):  # noqa: ANN001, ANN202
    """Check a dashboard user name and password, throttled like the dashboard's sign-in."""
    from ..services.accounts import sign_in
    from .identity import os_user

    return sign_in(ctx.db, username, password, address=f"cli:{os_user()}", channel="cli")


def _change_password_now(ctx, account, from_stdin: bool) -> None:  # noqa: ANN001
    from ..services.accounts import change_password, end_other_sessions
    from ..store.uow import UnitOfWork

    err.print(f"{account.username} must choose a new password now (12+ characters), before anything else.")
    new = _secret("New password", from_stdin, confirm=True)
    with UnitOfWork(ctx.db, account.person) as uow:
        change_password(uow, account.username, new)
    end_other_sessions(ctx.db, account.username, None)
    err.print("password changed")


def _default_username(ctx) -> str | None:  # noqa: ANN001
    from . import credentials
    from .identity import store_key

    try:
        entry = credentials.load(store_key(ctx))
    except credentials.CredentialsError:
        return None
    return entry.get("username") if entry else None


DaysOpt = Annotated[
    Optional[int],
    typer.Option(help="Days until the token expires (default security.token_days in qms.yaml, at most 365)."),
]


@app.command()
def login(
    config: ConfigOpt = None,
    user: Annotated[Optional[str], typer.Option("--user", "-u", help="Dashboard user name (else asked).")] = None,
    password_stdin: PasswordStdinOpt = False,
    days: DaysOpt = None,
) -> None:
    """Sign in with your dashboard user name and password; keeps a personal token for this records store.

    The token (with an expiry) is kept in $XDG_CONFIG_HOME/qmsflow/credentials.json (mode 0600); commands
    that act in your name use it. An account whose password must be changed asks for the new one first
    (with --password-stdin: the current password on the first line, the new one on the second).
    """
    import socket

    from ..services import tokens
    from ..store.uow import UnitOfWork
    from . import credentials
    from .identity import os_user, store_key

    ctx = _ctx(config)
    username = user or typer.prompt("User name", default=_default_username(ctx) or None)
    account = _sign_in(ctx, username, _secret("Password", password_stdin))
    if account.must_change_password:
        _change_password_now(ctx, account, password_stdin)
    key = store_key(ctx)
    try:
        previous = credentials.load(key)
    except credentials.CredentialsError as exc:
        raise CliError(str(exc)) from None
    with UnitOfWork(ctx.db, account.person) as uow:
        token, row = tokens.issue(
            uow, account, f"qms login {os_user()}@{socket.gethostname()}"[:100], days or ctx.config.security.token_days
        )
        if previous:  # the token of the previous sign-in to this store ends
            tokens.revoke_value(uow, previous["token"])
            uow.commit()
    try:
        saved = credentials.save(
            key,
            {
                "token": token,
                "token_id": row.id,
                "username": account.username,
                "person": account.person,
                "expires_at": row.expires_at.isoformat(),
                "repo": str(ctx.root),
            },
        )
    except (OSError, credentials.CredentialsError) as exc:
        with UnitOfWork(ctx.db, account.person) as uow:
            tokens.revoke_value(uow, token)
            uow.commit()
        raise CliError(f"cannot keep the token ({exc}); it was revoked again") from None
    out.print(
        f"signed in as {account.username} ({account.person}, {account.role}) to {key}; "
        f"token {row.id} valid until {row.expires_at:%Y-%m-%d %H:%M} UTC, kept in {saved}"
    )
    if os.environ.get("QMS_TOKEN"):
        err.print("[yellow]note:[/] QMS_TOKEN is set in this shell and wins over this sign-in: unset it to use it")


@app.command()
def logout(config: ConfigOpt = None) -> None:
    """Revoke the token 'qms login' keeps for this records store, and forget it."""
    from ..services import tokens
    from ..store.uow import UnitOfWork
    from . import credentials
    from .identity import store_key

    ctx = _ctx(config)
    key = store_key(ctx)
    try:
        entry = credentials.load(key)
    except credentials.CredentialsError as exc:
        raise CliError(str(exc)) from None
    if entry is None:
        out.print(f"not signed in to {key}")
    else:
        with UnitOfWork(ctx.db, entry.get("person") or "qmsflow") as uow:
            revoked = tokens.revoke_value(uow, entry["token"])
            uow.commit()
        credentials.remove(key)
        out.print(f"signed out of {key}" + (f"; token {revoked} revoked" if revoked else ""))
    if os.environ.get("QMS_TOKEN"):
        err.print("[yellow]note:[/] QMS_TOKEN is still set in this shell: unset it too")


@app.command()
def whoami(config: ConfigOpt = None, actor: ActorOpt = None, token_file: TokenFileOpt = None) -> None:
    """Who commands act as: the signed-in person, their account, role and token expiry."""
    ctx = _ctx(config)
    who = _who(ctx, actor, token_file)
    line = f"{who.id} ({who.name})" if who.name else who.id
    if who.username:
        line += f", account {who.username} ({who.role})"
    elif who.role:
        line += f", role {who.role}"
    line += f"; via {who.via}"
    if who.expires_at:
        line += f"; expires {who.expires_at:%Y-%m-%d %H:%M} UTC"
    out.print(line)


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option(help="What the token is for, e.g. ci.")] = "ci",
    days: DaysOpt = None,
    user: Annotated[
        Optional[str], typer.Option("--user", "-u", help="Your dashboard user name (default: the signed-in one).")
    ] = None,
    password_stdin: PasswordStdinOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Create a personal API token for yourself (e.g. for CI), with your password; printed once.

    Tokens are issued only to the person of the account whose password is given.
    """
    from ..services import tokens
    from ..store.uow import UnitOfWork

    ctx = _ctx(config)
    username = user or _default_username(ctx) or typer.prompt("User name")
    account = _sign_in(ctx, username, _secret(f"Password of {username}", password_stdin))
    with UnitOfWork(ctx.db, account.person) as uow:
        token, row = tokens.issue(uow, account, name, days or ctx.config.security.token_days)
    out.print(token)
    err.print(
        f"token {row.id} ({name}) for {account.person} valid until {row.expires_at:%Y-%m-%d %H:%M} UTC; "
        "store it now (e.g. as the CI secret QMS_TOKEN): it cannot be shown again"
    )


@token_app.command("list")
def token_list(
    config: ConfigOpt = None,
    person: Annotated[Optional[str], typer.Option("--person", help="Only the tokens of this person.")] = None,
) -> None:
    """Tokens: id, person, account, name, created, expires, last used, state (never the token itself)."""
    from ..services.tokens import list_tokens, status_of

    ctx = _ctx(config)
    table = _table("id", "person", "account", "name", "created", "expires", "last used", "state")

    def fmt(d: datetime | None) -> str:
        return f"{d:%Y-%m-%d %H:%M}" if d else ""

    for t in list_tokens(ctx.db, person):
        table.add_row(
            str(t.id),
            t.person,
            t.username or "",
            escape(t.name),
            fmt(t.created_at),
            fmt(t.expires_at),
            fmt(t.last_used_at),
            status_of(t),
        )
    out.print(table)


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[int, typer.Argument(**_count(limits.INT_MAX))],
    config: ConfigOpt = None,
    actor: ActorOpt = None,
    token_file: TokenFileOpt = None,
) -> None:
    """Revoke a token by its id (see 'qms token list'): your own, or any as an admin."""
    from ..services.tokens import revoke
    from ..store.uow import UnitOfWork

    ctx = _ctx(config)
    who = _who(ctx, actor, token_file)
    with UnitOfWork(ctx.db, who.id) as uow:
        revoke(uow, token_id, who.id, who.is_admin)
    out.print(f"token {token_id} revoked")


@capa_app.command("open")
def capa_open(
    title: Annotated[str, typer.Option(help="What went wrong, in one line.", callback=_bounded(limits.RECORD_TITLE))],
    source: Annotated[str, typer.Option(help="complaint, incident, audit, release, pms or other.")],
    owner: Annotated[str, typer.Option(help="Person who owns the CAPA.")],
    severity: Annotated[str, typer.Option(help="low, medium, high or critical.")] = "medium",
    process: Annotated[str, typer.Option(help="The QMS process it belongs to.")] = "capa",
    description: Annotated[
        str, typer.Option(help="Details of the nonconformity.", callback=_bounded(limits.TEXT, multiline=True))
    ] = "",
    system: Annotated[Optional[list[str]], typer.Option(help="AI system concerned (repeatable).")] = None,
    config: ConfigOpt = None,
    actor: ActorOpt = None,
    token_file: TokenFileOpt = None,
) -> None:
    """Open a CAPA (CAPA-YYYY-NNNN); with Jira on, an issue is created for it."""
    from ..services import capa
    from ..services.delivery import deliver
    from ..store.uow import UnitOfWork

    ctx = _ctx(config)
    with UnitOfWork(ctx.db, _who(ctx, actor, token_file).id) as uow:
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
    token_file: TokenFileOpt = None,
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
        except RecursionError:
            raise CliError(
                f"--field {name.strip()}: JSON nested deeper than {limits.JSON_DEPTH} levels", code=2
            ) from None
    ctx = _ctx(config)
    with UnitOfWork(ctx.db, _who(ctx, actor, token_file).id) as uow:
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
    limit: Annotated[int, typer.Option(help="At most this many.", **_count(limits.LIST_MAX))] = 50,
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


# ------------------------------------------------------------------ outbox


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


@user_app.command("add")
def user_add(
    username: Annotated[str, typer.Argument(callback=_bounded(limits.ID))],
    person: Annotated[str, typer.Option(help="The person of qms.yaml this account signs as.")],
    role: Annotated[str, typer.Option(help="viewer (read), approver (read and sign) or admin.")] = "viewer",
    password_stdin: PasswordStdinOpt = False,
    config: ConfigOpt = None,
    actor: ActorOpt = None,
    token_file: TokenFileOpt = None,
) -> None:
    """Create a dashboard account (admins only); its first password must be changed at first sign-in.

    On a store without accounts, the first account may be created without a credential: it must be an
    admin, and its password is the person's own (no change needed).
    """
    from ..services import accounts
    from ..store.uow import UnitOfWork
    from .identity import os_user, require_admin

    ctx = _ctx(config, migrate=True)
    _sync_people(ctx)
    if not accounts.any_users(ctx.db):
        if role != "admin":
            raise CliError(f"the first account must be an admin: run again with --role admin (not {role})", code=2)
        password = _secret(f"Password for {username}", password_stdin, confirm=True)
        with UnitOfWork(ctx.db, f"bootstrap:{os_user()}") as uow:
            accounts.add_first_admin(uow, username, person, password)
        out.print(f"first admin {username} created for {person}; sign in with 'qms login'")
        return
    who = _who(ctx, actor, token_file)
    require_admin(ctx, who, f"add the account {username}", username)
    password = _secret(f"First password for {username}", password_stdin, confirm=True)
    with UnitOfWork(ctx.db, who.id) as uow:
        accounts.add_user(uow, username, person, role, password)
    out.print(f"user {username} ({role}) created for {person}; they must change the password at first sign-in")


@user_app.command("list")
def user_list(config: ConfigOpt = None) -> None:
    """Accounts: user name, person, role, created, must change password, disabled."""
    from ..services.accounts import list_users

    ctx = _ctx(config)
    table = _table("user", "person", "role", "created", "password", "disabled")
    for u in list_users(ctx.db):
        table.add_row(
            escape(u.username),
            u.person,
            u.role,
            f"{u.created_at:%Y-%m-%d}",
            "must change" if u.must_change_password else "",
            f"{u.disabled_at:%Y-%m-%d}" if u.disabled_at else "",
        )
    out.print(table)


def _admin_on_account(username: str, config, actor, token_file, what: str):  # noqa: ANN001, ANN202
    from .identity import require_admin

    ctx = _ctx(config)
    who = _who(ctx, actor, token_file)
    require_admin(ctx, who, f"{what} the account {username}", username)
    return ctx, who


@user_app.command("disable")
def user_disable(
    username: str, config: ConfigOpt = None, actor: ActorOpt = None, token_file: TokenFileOpt = None
) -> None:
    """Disable an account (admins only): its sessions end and its tokens are revoked."""
    from ..services.accounts import set_disabled
    from ..store.uow import UnitOfWork

    ctx, who = _admin_on_account(username, config, actor, token_file, "disable")
    with UnitOfWork(ctx.db, who.id) as uow:
        revoked = set_disabled(uow, username, True)
    out.print(f"user {username} disabled; {len(revoked)} token(s) revoked")


@user_app.command("enable")
def user_enable(
    username: str, config: ConfigOpt = None, actor: ActorOpt = None, token_file: TokenFileOpt = None
) -> None:
    """Enable a disabled account again (admins only)."""
    from ..services.accounts import set_disabled
    from ..store.uow import UnitOfWork

    ctx, who = _admin_on_account(username, config, actor, token_file, "enable")
    with UnitOfWork(ctx.db, who.id) as uow:
        set_disabled(uow, username, False)
    out.print(f"user {username} enabled")


@user_app.command("reset-password")
def user_reset_password(
    username: str,
    password_stdin: PasswordStdinOpt = False,
    config: ConfigOpt = None,
    actor: ActorOpt = None,
    token_file: TokenFileOpt = None,
) -> None:
    """Set a new first password (admins only): it must be changed at the next sign-in; sessions end, tokens
    are revoked, a sign-in lock of the account is lifted."""
    from ..services.accounts import reset_password
    from ..store.uow import UnitOfWork

    ctx, who = _admin_on_account(username, config, actor, token_file, "reset the password of")
    password = _secret(f"New first password for {username}", password_stdin, confirm=True)
    with UnitOfWork(ctx.db, who.id) as uow:
        revoked = reset_password(uow, username, password)
    out.print(f"password of {username} reset: they must change it at the next sign-in; {len(revoked)} token(s) revoked")


@user_app.command("password")
def user_password(
    config: ConfigOpt = None,
    user: Annotated[
        Optional[str], typer.Option("--user", "-u", help="Your dashboard user name (default: the signed-in one).")
    ] = None,
    password_stdin: PasswordStdinOpt = False,
) -> None:
    """Change your own password (asks the current one, then the new one); your web sessions end.

    With --password-stdin: the current password on the first line, the new one on the second.
    """
    from ..services.accounts import change_password, end_other_sessions
    from ..store.uow import UnitOfWork

    ctx = _ctx(config)
    username = user or _default_username(ctx) or typer.prompt("User name")
    account = _sign_in(ctx, username, _secret("Current password", password_stdin))
    new = _secret("New password", password_stdin, confirm=True)
    with UnitOfWork(ctx.db, account.person) as uow:
        change_password(uow, account.username, new)
    end_other_sessions(ctx.db, account.username, None)
    out.print(f"password of {account.username} changed")


@app.command()
def web(
    config: ConfigOpt = None,
    port: Annotated[int, typer.Option(help="Port to listen on.", **_count(65535))] = 8000,
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
    port: Annotated[int, typer.Option(help="Port of the local Prefect server.", **_count(65535))] = 4200,
    host: Annotated[str, typer.Option(help="Address to bind; keep 127.0.0.1 unless behind a proxy.")] = "127.0.0.1",
    web_port: Annotated[int, typer.Option(help="Port of the qmsflow web app.", **_count(65535))] = 8000,
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
    for warning in ctx.db.privilege_warnings():
        err.print(f"[yellow]warning:[/] {escape(warning)}")
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
        init(directory, org="Demo AI GmbH", force=False, git=True, admin=None, trusted_single_user=True)
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
    from sqlalchemy.exc import DataError, ProgrammingError

    from ..services.scaffold import ScaffoldError
    from ..stack import StackError
    from ..store.db import StoreError

    bad = _not_utf8(sys.argv[1:] if argv is None else argv)
    if bad:
        err.print(f"[red]error:[/] {escape(bad)}")
        return 2
    plugins.load(sys.argv[1:] if argv is None else argv)
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
    except DataError as exc:  # a value the database cannot hold that no check caught: say so, without the SQL
        err.print(f"[red]error:[/] the records store refused a value: {escape(str(exc.orig).splitlines()[0])}")
        return 1
    except ProgrammingError as exc:
        if getattr(exc.orig, "sqlstate", None) != "42501":  # insufficient_privilege; anything else is a bug
            raise
        err.print(
            f"[red]error:[/] the records store refused: {escape(str(exc.orig).splitlines()[0])}; grant qmsflow's "
            "role its privileges as the schema owner ('qms db grant ROLE' or 'qms db upgrade' with "
            "QMS_MIGRATE_DATABASE_URL, see README 'Running in production')"
        )
        return 1
    except Exception as exc:  # noqa: BLE001 - the last line of defence: no trace reaches a user
        if os.environ.get("QMS_DEBUG"):
            raise
        err.print(f"[red]internal error:[/] {exc.__class__.__name__}: {escape(str(exc))}")
        err.print("this is a bug in qmsflow; run again with QMS_DEBUG=1 to see the trace, and report it")
        return 70


def _not_utf8(argv: list[str]) -> str | None:
    """Arguments and QMS_* variables are decoded with surrogateescape: a byte that was not UTF-8 shows here."""
    named = [(f"argument {i} ({_visible(a)})", a) for i, a in enumerate(argv, 1)]
    named += [(f"environment variable {k}", v) for k, v in os.environ.items() if k.startswith("QMS_")]
    for where, value in named:
        for index, char in enumerate(value):
            if 0xDC80 <= ord(char) <= 0xDCFF:
                return (
                    f"{where} is not valid UTF-8 (byte 0x{ord(char) - 0xDC00:02x} at character {index + 1}): "
                    "give text in UTF-8"
                )
    return None


def _visible(value: str, limit: int = 40) -> str:
    shown = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


from . import plugins  # noqa: E402,F401  - commands outside qmsflow/ (qms deploy: deployments/cli.py)

if __name__ == "__main__":
    sys.exit(run())
