"""Running qmsflow: qms web, qms up."""

from __future__ import annotations

import os
import signal
import time
from typing import Annotated

import typer
from rich.markup import escape

from .common import (
    ConfigOpt,
    _count,
    _ctx,
    _say_repaired,
    app,
    err,
    out,
)


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
