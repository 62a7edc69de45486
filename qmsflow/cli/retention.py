"""Retention and legal hold: qms retention (the AI Act's dates, each record's retention rule, holds)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.markup import escape

from ..domain import limits
from .common import ActorOpt, ConfigOpt, TokenFileOpt, _bounded, _ctx, _table, _who, app, out

retention_app = typer.Typer(
    help="Retention (EU AI Act Art. 18), the AI Act's dates and deadlines, legal holds.", no_args_is_help=True
)
app.add_typer(retention_app, name="retention")


@retention_app.command("dates")
def retention_dates() -> None:
    """The AI Act's application dates and deadlines qmsflow uses, with their source and the day checked."""
    from ..domain import regulatory

    dates = regulatory.bundled()
    out.print(f"{dates.regulation}: {regulatory.DATA_FILE} version {dates.version}")
    table = _table("id", "date", "was", "applies to", "provision", "source", "checked", "verified")
    for a in dates.application_dates:
        was = a.original_date.isoformat() if a.original_date else ""
        table.add_row(
            a.id,
            a.date.isoformat(),
            was,
            a.applies_to,
            a.provision,
            escape(a.source),
            a.checked_on.isoformat(),
            "yes" if a.verified else "[yellow]no[/]",
        )
    out.print(table)
    table = _table("id", "period", "counted from", "provision", "source", "checked", "verified")
    for d in dates.deadlines:
        table.add_row(
            d.id,
            d.period,
            d.counted_from,
            d.provision,
            escape(d.source),
            d.checked_on.isoformat(),
            "yes" if d.verified else "[yellow]no[/]",
        )
    out.print(table)


@retention_app.command("systems")
def retention_systems(config: ConfigOpt = None) -> None:
    """Each AI system's dates as recorded (never shortened) and the retention of its records."""
    from ..domain.retention import retention_period
    from ..services import retention
    from ..store.uow import UnitOfWork

    ctx = _ctx(config)
    table = _table(
        "system",
        "placed on market",
        "in service",
        "withdrawn",
        "in qms.yaml",
        "records kept until",
        "rule",
        "legal hold",
    )
    today = datetime.now(UTC).date()
    with UnitOfWork(ctx.db, "qmsflow") as uow:  # reads only: nothing is committed
        policy = retention.policy(ctx.config)
        in_yaml = {s.id for s in ctx.config.systems}
        for system in retention.lifecycles(uow, ctx.config, []):
            start = system.start()
            period = retention_period(start[0] if start else today, [system], policy)
            table.add_row(
                system.id,
                str(system.placed_on_market or ""),
                str(system.put_into_service or ""),
                str(system.withdrawn_on or ""),
                "yes" if system.id in in_yaml else "no (dates kept)",
                period.deletable_from,
                escape(period.rule),
                escape(system.hold or ""),
            )
        uow.rollback()
    out.print(table)
    out.print(f"rule: {escape(retention.policy(ctx.config).source)}; run 'qms sync' to record qms.yaml's dates")


@retention_app.command("show")
def retention_show(record_id: str, config: ConfigOpt = None) -> None:
    """When a record may be deleted, and the rule that says so (with its citation)."""
    from ..services import retention
    from ..store.uow import UnitOfWork

    ctx = _ctx(config)
    with UnitOfWork(ctx.db, "qmsflow") as uow:  # reads only: nothing is committed
        period = retention.period_of(uow, ctx.config, record_id)
        uow.rollback()
    out.print(f"{record_id}: may be deleted from {period.deletable_from}")
    out.print(f"rule: {escape(period.rule)}")
    for hold in period.holds:
        out.print(f"[red]legal hold[/] {escape(hold)}: cannot be deleted until released")


ReasonOpt = Annotated[
    str, typer.Option("--reason", help="Why: the matter, request or decision.", callback=_bounded(limits.COMMENT))
]


def _hold(target: str, reason: str, config, actor, token_file, hold: bool) -> None:  # noqa: ANN001
    from ..services import retention
    from ..store.uow import UnitOfWork

    ctx = _ctx(config)
    who = _who(ctx, actor, token_file)
    change = retention.set_hold if hold else retention.release_hold
    with UnitOfWork(ctx.db, who.id) as uow:
        row = change(uow, ctx.config, target, reason, by=who.id, is_admin=who.is_admin, today=datetime.now(UTC).date())
        record_id = row.id
    what = "under legal hold" if hold else "released from legal hold"
    out.print(f"{target} {what} ({record_id}; recorded in the trail)")


@retention_app.command("hold")
def retention_hold(
    target: Annotated[str, typer.Argument(help="A record id, or system:ID for every record of an AI system.")],
    reason: ReasonOpt,
    config: ConfigOpt = None,
    actor: ActorOpt = None,
    token_file: TokenFileOpt = None,
) -> None:
    """Put a record or an AI system under legal hold: nothing it covers can be deleted, whatever the date
    (an admin or a quality lead; recorded in the trail)."""
    _hold(target, reason, config, actor, token_file, hold=True)


@retention_app.command("release")
def retention_release(
    target: Annotated[str, typer.Argument(help="A record id, or system:ID.")],
    reason: ReasonOpt,
    config: ConfigOpt = None,
    actor: ActorOpt = None,
    token_file: TokenFileOpt = None,
) -> None:
    """Release a legal hold (an admin or a quality lead; recorded in the trail)."""
    _hold(target, reason, config, actor, token_file, hold=False)


@retention_app.command("holds")
def retention_holds(config: ConfigOpt = None) -> None:
    """Records and AI systems under legal hold."""
    from ..services import retention
    from ..store.uow import UnitOfWork

    ctx = _ctx(config)
    table = _table("record", "what", "since", "by", "reason")
    with UnitOfWork(ctx.db, "qmsflow") as uow:
        for row in retention.holds(uow):
            hold = row.data["legal_hold"]
            what = f"system {row.data['system']}" if row.kind == retention.KIND else row.kind
            table.add_row(row.id, what, hold["on"], hold["by"], escape(hold["reason"]))
        uow.rollback()
    out.print(table)
