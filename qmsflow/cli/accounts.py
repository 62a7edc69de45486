"""Identity: qms login/logout/whoami, qms token, qms user."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Annotated, Optional

import typer
from rich.markup import escape

from ..domain import limits
from .common import (
    ActorOpt,
    CliError,
    ConfigOpt,
    PasswordStdinOpt,
    TokenFileOpt,
    _bounded,
    _count,
    _ctx,
    _secret,
    _sync_people,
    _table,
    _who,
    app,
    err,
    out,
)

user_app = typer.Typer(help="Web app accounts (dashboard sign-in).", no_args_is_help=True)
app.add_typer(user_app, name="user")
token_app = typer.Typer(help="Personal API tokens (for qms approve and CI).", no_args_is_help=True)
app.add_typer(token_app, name="token")


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
