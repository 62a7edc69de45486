"""Setting up: qms init, check, sync, demo; the records store schema (qms db)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from ..domain import limits
from ..settings import ConfigError
from .common import (
    ActorOpt,
    CliError,
    ConfigOpt,
    PasswordStdinOpt,
    _bounded,
    _ctx,
    _say_anchored,
    _say_repaired,
    _secret,
    _sync_people,
    _who,
    app,
    err,
    out,
)

db_app = typer.Typer(help="Records store schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")


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
    """Scaffold a compliance repo: qms.yaml, the ten procedures of a minimum QMS and the risk register, docs/adr."""
    from ..scaffold import ScaffoldError, scaffold

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
    from ..services.verify import start_trail
    from ..store.db import StoreError
    from ..store.uow import UnitOfWork

    try:
        ctx = _ctx(config, migrate=True)
    except StoreError as exc:
        raise CliError(f"scaffolded, but the records store cannot be created: {exc}") from None
    with ctx:
        schema = ctx.db.current_revision()
        with UnitOfWork(ctx.db, "qmsflow") as uow:
            start_trail(uow, {"organisation": org, "schema": schema, "qmsflow": __version__})
        out.print(f"records store {ctx.db.safe_url}: audit trail started")
        _say_anchored(ctx, run_anchor(ctx.db, ctx.anchors_file, ctx.root))


@app.command()
def check(config: ConfigOpt = None) -> None:
    """Validate qms.yaml and the compliance repo: documents exist, each Art. 17(1) aspect assigned to a process.

    Assignment is a plan, not evidence: 'qms readiness' judges each aspect on the records.
    """
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
        f"Art. 17(1) aspects assigned to a process: {len(c.covered_aspects())}/13"
    )
    out.print("assignment is not evidence: 'qms readiness' checks procedures, owners, records and audits per aspect")


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
    from ..demo.seed import seed

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

    _say_anchored(ctx, run_anchor(ctx.db, ctx.anchors_file, ctx.root))


def _demo_large(directory: Path) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from ..demo.large import fill, write_config
    from ..demo.seed import _demo_users
    from ..services.queries import trail_size

    if (directory / "qms.yaml").exists():
        ctx = _ctx(directory / "qms.yaml", migrate=True)
        with ctx.db.read() as session:
            if trail_size(session) > 0:
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
    if ctx.db.vacuum_analyze():
        out.print("PostgreSQL tables vacuumed and analysed for the planner (VACUUM (ANALYZE))")
    out.print(
        f"large demo in {ctx.db.safe_url}: {summary['document_versions']:,} document versions, "
        f"{summary['capas']:,} CAPAs, {summary['events']:,} trail events"
    )
    out.print(_demo_users(ctx))
    _anchor_now(ctx)
