"""What every qms command shares: the app, consoles, options, errors, the context and the actor."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..domain import limits

app = typer.Typer(
    name="qms",
    help="qmsflow: the quality management system of a team that builds high-risk AI, run as code.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
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


def _say_repaired(repaired: list[str]) -> None:
    for problem in repaired:
        err.print(
            f"[yellow]warning:[/] {escape(problem)}: reinstalled, and recorded in the audit trail; "
            "run 'qms verify' to see whether anything was changed meanwhile"
        )


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
