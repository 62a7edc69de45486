"""``qms deploy``: register every deployment against a Prefect API and a process work pool.

This module lives in ``deployments/`` because it imports the deployment specs, which qmsflow/ never
does; the ``qms`` command finds it through the ``qmsflow.cli`` entry-point group (pyproject.toml),
loaded by qmsflow/cli/plugins.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from qmsflow.cli.main import CliError, ConfigOpt, app, out


def _overrides(values: list[str]) -> dict[str, int]:
    parsed: dict[str, int] = {}
    for value in values:
        name, sep, number = value.rpartition("=")
        if not sep or not name or not number.isdigit() or int(number) > 1000:
            raise CliError(f"--limit {value!r}: give FLOW/DEPLOYMENT=N with N from 0 (no limit) to 1000", code=2)
        parsed[name] = int(number)
    return parsed


@app.command()
def deploy(
    config: ConfigOpt = None,
    pool: Annotated[str, typer.Option(help="The process work pool (created when missing).")] = "qms",
    pool_limit: Annotated[
        Optional[int],
        typer.Option(help="At most this many flow runs at once in the pool (set on the pool).", min=1, max=10000),
    ] = None,
    limit: Annotated[
        Optional[list[str]],
        typer.Option(
            "--limit",
            help="Concurrency limit of one deployment, FLOW/DEPLOYMENT=N (0: none); repeatable. "
            "Defaults: 1 for every scheduled procedure, none for document reviews.",
        ),
    ] = None,
) -> None:
    """Register every deployment against the Prefect API of PREFECT_API_URL in a process work pool.

    Production topology (docs/operations.md): a Prefect server on PostgreSQL, this command run once per
    release, and 'prefect worker start --pool qms' processes with the same installed qmsflow and
    QMS_CONFIG. Schedules come from qms.yaml; running it again updates, never duplicates. The API's
    auth string, if any, comes from PREFECT_API_AUTH_STRING.
    """
    from qmsflow.settings import load_config

    from .topology import TopologyError, register

    api_url = os.environ.get("PREFECT_API_URL")
    if not api_url:
        raise CliError(
            "qms deploy registers against a shared Prefect server: set PREFECT_API_URL "
            "(e.g. https://prefect.example.com/api); 'qms up' serves the deployments itself",
            code=2,
        )
    if len(pool) > 100 or not pool.strip():
        raise CliError("--pool: give a name of 1 to 100 characters", code=2)
    loaded = load_config(config)
    try:
        state, registered = register(
            loaded.config, api_url, pool, pool_limit=pool_limit, overrides=_overrides(limit or [])
        )
    except TopologyError as exc:
        raise CliError(str(exc)) from None
    out.print(f"work pool {escape(pool)} ({state}) at {escape(api_url)}")
    for item in registered:
        schedule = item.cron or "on demand"
        limit_text = f"at most {item.concurrency_limit} at once" if item.concurrency_limit else "no limit"
        out.print(f"  {escape(item.name):40} {escape(schedule):16} {limit_text}")
    out.print(
        f"{len(registered)} deployment(s) registered; start workers with: "
        f"prefect worker start --pool {escape(pool)} (same qmsflow, QMS_CONFIG={escape(str(Path(loaded.path)))})"
    )
