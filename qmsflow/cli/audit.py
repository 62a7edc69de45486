"""Internal audit (SOP-AUD-001): qms audit."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Optional

import typer
from rich.markup import escape

from ..domain import limits
from ..domain.capabilities import declare
from .common import ActorOpt, CliError, ConfigOpt, TokenFileOpt, _bounded, _ctx, _table, _who, app, out

audit_app = typer.Typer(help="Internal audits: programme, planning, checklists, findings.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")

STATE_STYLE = {"planned": "cyan", "done": "green", "overdue": "red", "cancelled": "dim"}


def _date(value: str, option: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise CliError(f"{option} {value!r} is not a date (YYYY-MM-DD)", code=2) from None


@audit_app.command("programme")
def audit_programme(
    year: Annotated[Optional[int], typer.Option(help="The year (default: this year).", min=2000, max=2100)] = None,
    config: ConfigOpt = None,
) -> None:
    """The audit programme: process x quarter (planned / done / overdue audits, nonconformities), each
    process's due date, and why (its frequency, a risk-based pull-in)."""
    from ..services import queries

    ctx = _ctx(config)
    today = date.today()
    year = year or today.year
    table = _table("process", "every", "due", "Q1", "Q2", "Q3", "Q4", title=f"Audit programme {year}")
    with ctx.db.read() as session:
        lines = queries.audit_programme(session, ctx.config, year, today)
    for line in lines:
        cells = []
        for q in (1, 2, 3, 4):
            states = [a["state"] for a in line.quarters.get(q, [])]
            parts = [f"[{STATE_STYLE[s]}]{states.count(s)} {s}[/]" for s in STATE_STYLE if s in states]
            if line.nc_counts.get(q):
                parts.append(f"NC {line.nc_counts[q]}")
            cells.append("\n".join(parts) or "—")
        due = line.due.isoformat()
        due = f"[red]{due} overdue[/]" if line.overdue else (f"[yellow]{due}[/]" if line.pulled_in else due)
        table.add_row(line.process, f"{line.every_months} mo", due, *cells)
    out.print(table)
    for line in lines:
        audits = [f"{a['audit']} Q{q} {a['state']}" for q, cell in sorted(line.quarters.items()) for a in cell]
        out.print(f"{line.process}: {escape('; '.join(line.reasons))}" + (f" · {', '.join(audits)}" if audits else ""))


@audit_app.command("plan")
def audit_plan(
    process: str,
    auditor: Annotated[str, typer.Option(help="Person who audits (not the owner, a member or an author).")],
    on: Annotated[str, typer.Option("--date", help="Planned date, YYYY-MM-DD.")],
    config: ConfigOpt = None,
    actor: ActorOpt = None,
    token_file: TokenFileOpt = None,
) -> None:
    """Plan an audit of PROCESS; an auditor who is not impartial is refused (exit 1) and the refusal recorded."""
    from ..services import audit
    from ..services.delivery import deliver
    from ..store.uow import UnitOfWork

    when = _date(on, "--date")
    ctx = _ctx(config)
    with UnitOfWork(ctx.db, _who(ctx, actor, token_file).id) as uow:
        row = audit.plan(uow, ctx.config, process, auditor, when, uow.actor)
        audit_id = row.id
    deliver(ctx.db, ctx.config)
    out.print(f"{audit_id} planned: {process} audited by {auditor} on {when} (auditor and auditee notified)")


@audit_app.command("start")
def audit_start(
    audit_id: str, config: ConfigOpt = None, actor: ActorOpt = None, token_file: TokenFileOpt = None
) -> None:
    """Build the checklist of a planned audit and draw its sample (the seed is recorded first)."""
    from ..services import audit
    from ..store.uow import UnitOfWork

    ctx = _ctx(config)
    with UnitOfWork(ctx.db, _who(ctx, actor, token_file).id) as uow:
        info = audit.start(uow, ctx.config, audit_id)
    out.print(f"{audit_id} is {info['stage']}: {info['items']} item(s) to record")


@audit_app.command("record")
def audit_record(
    audit_id: str,
    item: Annotated[int, typer.Option(help="Checklist item number.", min=1, max=1000)],
    result: Annotated[str, typer.Option(help="conform, observation, improvement, minor or major.")],
    evidence: Annotated[
        Optional[list[str]],
        typer.Option(help="A record or document (CAPA-2026-0001, APR-2026-0003, SOP-DOC-001@1.0); repeatable."),
    ] = None,
    note: Annotated[
        str, typer.Option(help="Criterion and what was found.", callback=_bounded(limits.TEXT, multiline=True))
    ] = "",
    config: ConfigOpt = None,
    actor: ActorOpt = None,
    token_file: TokenFileOpt = None,
) -> None:
    """Record one checklist item; a minor or major nonconformity opens a finding and its CAPA."""
    from ..services import audit
    from ..services.delivery import deliver
    from ..store.uow import UnitOfWork

    ctx = _ctx(config)
    with UnitOfWork(ctx.db, _who(ctx, actor, token_file).id) as uow:
        paper = audit.record(uow, ctx.config, audit_id, item, result, evidence or [], note, uow.actor)
        finding, capa_id = paper.get("finding"), paper.get("capa")
    deliver(ctx.db, ctx.config)
    out.print(f"{audit_id} item {item}: {result}" + (f"; {finding} raised, {capa_id} opened" if finding else ""))


@audit_app.command("conclude")
def audit_conclude(
    audit_id: str,
    conclusion: Annotated[
        str,
        typer.Option(help="Is the process implemented and effective?", callback=_bounded(limits.TEXT, multiline=True)),
    ],
    config: ConfigOpt = None,
    actor: ActorOpt = None,
    token_file: TokenFileOpt = None,
) -> None:
    """Conclude an audit whose items are all recorded: the report goes to the auditor and a quality lead to sign."""
    from ..services import audit
    from ..services.delivery import deliver
    from ..store.uow import UnitOfWork

    ctx = _ctx(config)
    with UnitOfWork(ctx.db, _who(ctx, actor, token_file).id) as uow:
        info = audit.conclude(uow, ctx.config, audit_id, conclusion, uow.actor)
    audit.resume_run(ctx, audit_id)
    deliver(ctx.db, ctx.config)
    out.print(
        f"{audit_id}: report {info['awaiting']} to sign (auditor) and approve (quality lead): "
        f"'qms approve {info['awaiting']} --decision approve'"
    )


@audit_app.command("follow-up")
def audit_follow_up(
    finding_id: str,
    result: Annotated[str, typer.Option(help="effective or ineffective.")],
    evidence: Annotated[Optional[list[str]], typer.Option(help="A record or document checked; repeatable.")] = None,
    note: Annotated[str, typer.Option(help="What was checked.", callback=_bounded(limits.TEXT, multiline=True))] = "",
    config: ConfigOpt = None,
    actor: ActorOpt = None,
    token_file: TokenFileOpt = None,
) -> None:
    """Re-check a finding whose CAPA is in its effectiveness check; effective lets the CAPA close."""
    from ..services import audit
    from ..store.uow import UnitOfWork

    ctx = _ctx(config)
    with UnitOfWork(ctx.db, _who(ctx, actor, token_file).id) as uow:
        info = audit.follow_up(uow, ctx.config, finding_id, result, evidence or [], note, uow.actor)
    out.print(f"{finding_id} re-checked: {result} (finding {info['status']}, CAPA {info['capa']})")


@audit_app.command("show")
def audit_show(audit_id: str, config: ConfigOpt = None) -> None:
    """An audit with its checklist items (population, sample, result) and trail."""
    from ..services import queries

    ctx = _ctx(config)
    with ctx.db.read() as session:
        row = queries.audit(session, audit_id)
        if row is None:
            raise CliError(f"no audit {audit_id} (see 'qms audit programme')", code=1)
        events = queries.history(session, f"record:{audit_id}") + queries.history(session, f"audit:{audit_id}")
        data = dict(row.data)
    out.print(f"[bold]{row.id}[/] {escape(row.title)}")
    out.print(f"stage {row.status} · auditor {row.owner} · auditee {data.get('auditee')} · planned {row.due_date}")
    for item in data.get("items", []):
        crit = item["criteria"]
        criteria = ", ".join(
            [
                crit["ai_act"],
                *[f"ISO/IEC 42001 {c}" for c in crit["iso_42001"]],
                *[f"ISO 9001 {c}" for c in crit["iso_9001"]],
            ]
        )
        result = (item.get("result") or "not recorded") + (f" → {item['finding']}" if item.get("finding") else "")
        out.print(f"[bold]#{item['n']}[/] {escape(item['topic'])}: {escape(item['objective'])}")
        out.print(f"    criteria: {escape(criteria)}")
        out.print(
            f"    population {len(item['population'])}, sample: {escape(', '.join(item['sample']) or 'none')}"
            f" (seed {item['seed']})"
        )
        out.print(f"    result: {result}" + (f" — {escape(item['note'])}" if item.get("note") else ""))
        if item.get("evidence"):
            out.print(f"    evidence: {escape(', '.join(item['evidence']))}")
    for e in sorted(events, key=lambda e: e.seq):
        out.print(f"  {e.ts[:19]} {e.actor} {e.action}")


# SOP-AUD-001 4.9: audit_results below (queries.audit_results)
RESULTS = declare(
    "audit.results",
    "`qms audit results --since YYYY-MM-DD` lists the audits done in the period with the count of each "
    "result, the nonconformities by process and the findings still open, with their CAPA and re-check date.",
    proved_by=(
        "tests/integration/test_audit.py::test_the_audit_end_to_end_with_a_major_finding_its_capa_and_the_signed_report",
    ),
    module=__name__,
)


@audit_app.command("results")
def audit_results(
    since: Annotated[str, typer.Option(help="From this date, YYYY-MM-DD.")],
    until: Annotated[Optional[str], typer.Option(help="To this date, YYYY-MM-DD (default: today).")] = None,
    config: ConfigOpt = None,
) -> None:
    """For the management review: audits done in the period with their results, nonconformities by process,
    and the findings still open."""
    from ..services import queries

    start, end = _date(since, "--since"), _date(until, "--until") if until else date.today()
    ctx = _ctx(config)
    with ctx.db.read() as session:
        results = queries.audit_results(session, start, end)
    table = _table("audit", "process", "done", "conform", "obs.", "impr.", "minor", "major", title="Audits")
    for a in results["audits"]:
        table.add_row(
            a["id"], a["process"], a["done_on"].isoformat(),
            *(str(a[r]) for r in ("conform", "observation", "improvement", "minor", "major")),
        )  # fmt: skip
    out.print(table)
    for process, counts in sorted(results["nc_counts"].items()):
        out.print(f"{process}: {counts['minor']} minor, {counts['major']} major nonconformities")
    for f in results["open_findings"]:
        due = f["recheck_due"].isoformat() if f["recheck_due"] else "—"
        flag = " [red]overdue[/]" if f["overdue"] else ""
        out.print(
            f"open finding {f['id']} ({f['result']}, {f['process']}): CAPA {f['capa'] or 'none'}, re-check {due}{flag}"
        )
