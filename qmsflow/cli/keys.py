"""Signing keys that seal signatures (ADR 0018): qms key status | add | retire."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from .common import ActorOpt, CliError, ConfigOpt, TokenFileOpt, _ctx, _table, _who, app, out

key_app = typer.Typer(
    help="Signing keys that seal every signature (rotation: docs/operations.md).", no_args_is_help=True
)
app.add_typer(key_app, name="key")


@key_app.command("status")
def key_status(config: ConfigOpt = None) -> None:
    """The registered signing keys (trail and records/signing-keys.jsonl) and the key this process holds."""
    from ..services import sealing
    from ..store.uow import UnitOfWork

    ctx = _ctx(config)
    with UnitOfWork(ctx.db, "cli") as uow:
        status = sealing.status(uow.session, ctx.db.sealer)
    table = _table("key", "registered at seq", "retired at seq", "in the trail", f"in {sealing.KEYS_FILE}")
    for row in status.keys:
        table.add_row(
            row.key,
            str(row.from_seq),
            str(row.until_seq) if row.until_seq is not None else "—",
            "yes" if row.in_trail else "[red]no[/]",
            "yes" if row.in_file else "[red]no[/]",
        )
    out.print(table)
    if status.held is None:
        out.print(f"this process holds no signing key ({escape(status.held_problem)})")
    else:
        out.print(f"this process seals with {status.held} ({escape(str(status.held_path))})")
    for problem in status.problems:
        out.print(f"[red]problem:[/] {escape(problem)}")


@key_app.command("add")
def key_add(
    key_file: Annotated[Path, typer.Option("--key-file", help="Where to write the new private key (must not exist).")],
    config: ConfigOpt = None,
    actor: ActorOpt = None,
    token_file: TokenFileOpt = None,
) -> None:
    """Make and register a new signing key (admins only); install it in every signing process, then retire the old one."""
    from ..services import sealing
    from ..store.uow import UnitOfWork
    from .identity import require_admin

    ctx = _ctx(config)
    who = _who(ctx, actor, token_file)
    require_admin(ctx, who, "add a signing key", "signing-keys")
    if key_file.exists():
        raise CliError(f"{key_file} exists: name a new file for the new key", code=2)
    with UnitOfWork(ctx.db, who.id) as uow:
        change = sealing.add_key(uow, ctx.root, key_file)
    out.print(
        f"signing key {change.key} registered at trail seq {change.seq}, private key in {escape(str(key_file))} (mode 0600)"
    )
    out.print(
        f"next: point {sealing.KEY_FILE_ENV} of every signing process (web app, workers) at it, restart them, "
        f"then 'qms key retire <old key> --reason rotation'"
    )


@key_app.command("retire")
def key_retire(
    key: str,
    reason: Annotated[str, typer.Option(help="Why: rotation, compromised, ….")],
    config: ConfigOpt = None,
    actor: ActorOpt = None,
    token_file: TokenFileOpt = None,
) -> None:
    """Retire a signing key (admins only): any signature it seals after this is a verify failure."""
    from ..domain import limits
    from ..services import sealing
    from ..store.uow import UnitOfWork
    from .identity import require_admin

    limits.check_text("reason", reason, limits.COMMENT)
    ctx = _ctx(config)
    who = _who(ctx, actor, token_file)
    require_admin(ctx, who, f"retire the signing key {key}", "signing-keys")
    with UnitOfWork(ctx.db, who.id) as uow:
        change = sealing.retire_key(uow, ctx.root, key, reason)
    out.print(f"signing key {change.key} retired at trail seq {change.seq}")
