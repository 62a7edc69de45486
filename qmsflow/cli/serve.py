"""Running qmsflow: qms web, qms up."""

from __future__ import annotations

import os
import signal
import threading
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
    from ..stack import Stack, StackInterrupted
    from ..store.uow import UnitOfWork

    # Our own handlers, whatever was inherited: a background job starts with SIGINT ignored, and Python
    # then installs no KeyboardInterrupt. Either signal stops the stack, also during start-up: the handler
    # only sets the event, which start-up checks between its steps and while it waits.
    requested = threading.Event()

    def _stop(_sig, _frame):  # noqa: ANN001
        requested.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    stack = None
    try:
        ctx = _ctx(config, migrate=True)
        _say_repaired(ctx.repaired_guards)
        with UnitOfWork(ctx.db, "qmsflow") as uow:
            report = sync_config(uow, ctx.config, ctx.root)
            uow.commit()
        out.print(f"records store {ctx.db.safe_url}: schema current; qms.yaml synced ({len(report.changes)} change(s))")
        for warning in ctx.db.privilege_warnings():
            err.print(f"[yellow]warning:[/] {escape(warning)}")
        stack = Stack(
            ctx,
            host=host,
            port=port,
            external_api=os.environ.get("PREFECT_API_URL"),
            web_port=web_port,
            say=out.print,
            stop_requested=requested,
        )
        stack.start()
        if stack.ui_url:
            out.print(f"Prefect UI:  {stack.ui_url}")
        out.print(f"Prefect API: {stack.api_url}")
        out.print(f"qmsflow web: {stack.web_url}  (Slack interactivity: {stack.web_url}/slack/interactions)")
        out.print("qmsflow is up. Ctrl-C stops it.")
        while not requested.wait(0.5):
            stack.supervise()  # a child that died is restarted with backoff; the others keep serving
    except StackInterrupted:
        pass
    finally:
        out.print("stopping …")
        if stack is not None:
            stack.stop()
        out.print("qmsflow stopped")
