"""Corrective and preventive actions: qms capa."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Optional

import typer
from rich.markup import escape

from ..domain import limits
from .common import (
    ActorOpt,
    CliError,
    ConfigOpt,
    TokenFileOpt,
    _bounded,
    _count,
    _ctx,
    _table,
    _who,
    app,
    out,
)

capa_app = typer.Typer(help="Corrective and preventive actions.", no_args_is_help=True)
app.add_typer(capa_app, name="capa")


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
    """Move a CAPA to its next stage with the data that stage needs; errors name the field.

    Needed: containment: correction; root_cause: method, cause, similar_cases as JSON
    ('{"checked": true, "scope": "…", "found": ["CAPA-2026-0002"]}' or '{"checked": false, "reason":
    "…"}'); action_plan: actions (what, owner: a person of qms.yaml, due; signed approval);
    implementation: -; effectiveness_check: evidence (per action index); closed: result=effective,
    checked_by (a person of qms.yaml, not the CAPA owner), checked_on (YYYY-MM-DD, not in the future; before
    the effectiveness due date only with early_reason), no_adverse_effect=true,
    no_adverse_effect_reasoning, risk_update or no_risk_update_reason (signed by the process owner or a
    quality lead). From effectiveness_check, result=ineffective, checked_by, checked_on, notes go back to
    root_cause. A refused move is recorded in the trail.
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

    from ..services import capa, queries
    from ..store.uow import UnitOfWork

    ctx = _ctx(config)
    with UnitOfWork(ctx.db, "cli") as uow:
        info = capa.show(uow, capa_id)
        events = queries.history(uow.session, f"record:{capa_id}")
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
    from ..services import queries

    ctx = _ctx(config)
    today = date.today()
    table = _table("id", "stage", "severity", "owner", "due", "title")
    with ctx.db.read() as session:
        for r in queries.capas(session, today, stage, overdue, limit):
            due = r.due_date.isoformat() if r.due_date else ""
            if queries.record_overdue(r, today):
                due = f"[red]{due}[/]"
            table.add_row(r.id, r.status, r.data.get("severity", ""), r.owner or "", due, escape(r.title))
    out.print(table)
