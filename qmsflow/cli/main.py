"""The ``qms`` command line. Every command has --help; errors are one clear message, never a trace.

Each area registers its commands on ``app`` in its own module (setup, evidence, status, documents,
approvals, accounts, capa, integrations, serve); this module imports them all and maps errors to exit codes.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer
from rich.markup import escape

from ..domain.errors import DomainError
from ..settings import ConfigError
from .common import CliError, ConfigOpt, _ctx, app, err, out  # noqa: F401 - re-exported for command modules

# in the order `qms --help` lists them: set up, look, work, evidence, integrations, identity, run
AREAS = (
    "setup",
    "status",
    "documents",
    "approvals",
    "capa",
    "release",
    "audit",
    "retention",
    "management_review",
    "evidence",
    "integrations",
    "accounts",
    "keys",
    "serve",
)
for _area in AREAS:
    importlib.import_module(f"{__name__.rpartition('.')[0]}.{_area}")


def run(argv: list[str] | None = None) -> int:
    """Entry point of the ``qms`` script: map every error to one message and an exit code."""
    from sqlalchemy.exc import DataError, ProgrammingError

    from ..scaffold import ScaffoldError
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
