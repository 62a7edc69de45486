"""Who acts on the command line: ``person_for_cli(ctx, as_option)`` for every command that changes records.

A person is whoever their credential says: an API token from ``--token-file`` (``-`` = standard
input), else ``QMS_TOKEN``, else the one ``qms login`` keeps for this records store. ``--as`` (or
``QMS_ACTOR``) names someone without proof, so it is accepted only

- as ``qmsflow``, the system actor, for system work (sync, scans, rendering): ``system=True``;
- for any person when the repo opts into ``security.trusted_single_user`` (demos, evaluation);

and otherwise refused (the refusal noted in the trail, aggregated) with a message that says how to
sign in. Tokens are never taken from a command-line option: those show in ``ps`` and shell history.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ..context import QmsContext
from ..domain.approvals import NotAuthorized
from ..domain.errors import DomainError

SYSTEM_ACTOR = "qmsflow"
LOGIN_HINT = "sign in with 'qms login' (or set QMS_TOKEN, or pass --token-file) and run the command again"


class IdentityError(DomainError):
    """Nobody (or not the right person) is authenticated; the message says how to sign in."""


@dataclass(frozen=True)
class Actor:
    """The acting identity of a CLI command. ``id`` is the trail actor: a person id or ``qmsflow``."""

    id: str
    via: str
    person: str | None = None
    name: str | None = None
    username: str | None = None
    role: str | None = None
    token_id: int | None = None
    expires_at: datetime | None = None

    @property
    def claimed(self) -> str:
        """How the channel knows who acted, for signatures and refusals (``token:<id>``, ``trusted:<os user>``)."""
        if self.token_id is not None:
            return f"token:{self.token_id}"
        return f"trusted:{os_user()}" if self.person else self.id

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def os_user() -> str:
    """The operating-system account running the command, from the uid (not $USER, which anyone sets)."""
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid{os.getuid()}"


def store_key(ctx: QmsContext) -> str:
    """What the credentials file keys a token by: the records store (URL without password)."""
    return ctx.db.safe_url


def read_token_file(source: Path) -> str:
    """A token from a file, or from standard input for ``-``: the first line, stripped."""
    if str(source) == "-":
        line = sys.stdin.readline()
    else:
        try:
            with source.open(encoding="utf-8") as handle:
                line = handle.readline(1000)
        except (OSError, UnicodeDecodeError) as exc:
            raise IdentityError(f"cannot read the token file {source}: {exc}") from None
    token = line.strip()
    if not token:
        raise IdentityError(f"no token in {'standard input' if str(source) == '-' else source}")
    return token


def _token(ctx: QmsContext, token_file: Path | None) -> tuple[str | None, str]:
    from . import credentials

    if token_file is not None:
        return read_token_file(token_file), f"--token-file {token_file}"
    if os.environ.get("QMS_TOKEN", "").strip():
        return os.environ["QMS_TOKEN"].strip(), "QMS_TOKEN"
    try:
        entry = credentials.load(store_key(ctx))
    except credentials.CredentialsError as exc:
        raise IdentityError(str(exc)) from None
    if entry:
        return entry["token"], f"qms login ({credentials.path()})"
    return None, ""


def _trusted(ctx: QmsContext, person: str) -> Actor:
    from ..services.accounts import ROLES
    from ..services.queries import person_with_roles

    with ctx.db.read() as session:
        row, roles = person_with_roles(session, person)
    if row is None or not row.active:
        people = ", ".join(p.id for p in ctx.config.people)
        raise IdentityError(f"--as {person!r} is not a person of this QMS (people: {people}; run 'qms sync')")
    role = max(roles, key=ROLES.index) if roles else None
    return Actor(person, "trusted single-user mode (--as)", person=person, name=row.name, role=role)


def person_for_cli(
    ctx: QmsContext, as_option: str | None, *, token_file: Path | None = None, system: bool = False
) -> Actor:
    """The authenticated actor of a command. ``system=True``: system work, which acts as ``qmsflow``
    unless trusted mode names a person with ``--as``."""
    from ..services import throttle, tokens

    claimed = as_option or os.environ.get("QMS_ACTOR") or None
    if claimed == SYSTEM_ACTOR:
        if system:
            return Actor(SYSTEM_ACTOR, "system")
        raise IdentityError(
            f"--as {SYSTEM_ACTOR} is for system work (sync, scans, rendering); this command acts "
            f"in a person's name: {LOGIN_HINT} without --as"
        )
    if claimed:
        if ctx.config.security.trusted_single_user:
            return _trusted(ctx, claimed)
        throttle.note(
            ctx.db,
            f"os-user:{os_user()}",
            actor=f"cli:{os_user()}",
            action="cli.as-refused",
            ref=f"security:os-user:{os_user()}",
            detail={"claimed": claimed[:64], "os_user": os_user(), "reason": "--as outside trusted single-user mode"},
        )
        source = "--as" if as_option else "QMS_ACTOR"
        raise IdentityError(
            f"{source} {claimed!r} is refused: this repo does not let a shell act in someone's name "
            f"(security.trusted_single_user is off); {LOGIN_HINT} without {source}"
        )
    if system:
        return Actor(SYSTEM_ACTOR, "system")
    token, source = _token(ctx, token_file)
    if token is None:
        raise IdentityError(f"not signed in to the records store {store_key(ctx)}: {LOGIN_HINT}")
    try:
        who = tokens.authenticate(ctx.db, token, source=f"cli:{os_user()}")
    except NotAuthorized as exc:
        raise IdentityError(f"{exc} (token from {source}): {LOGIN_HINT}") from None
    return Actor(
        who.person,
        f"token {who.token_id} from {source}",
        person=who.person,
        name=who.name,
        username=who.username,
        role=who.role,
        token_id=who.token_id,
        expires_at=who.expires_at,
    )


def require_admin(ctx: QmsContext, actor: Actor, attempted: str, target: str) -> None:
    """Refuse (and record the refusal) unless ``actor`` holds an admin account."""
    if actor.is_admin:
        return
    from ..store.uow import UnitOfWork

    reason = f"{actor.id} is not an admin (role: {actor.role or 'no account'}): only an admin may {attempted}"
    with UnitOfWork(ctx.db, actor.id) as uow:
        uow.record(
            "account.refused",
            f"security:user:{target[:64]}",
            None,
            {"attempted": attempted, "by": actor.id, "claimed": actor.claimed, "reason": reason},
        )
        uow.commit()
    raise IdentityError(reason)
