"""Internal audit on a real store (SQLite and PostgreSQL): planning with impartiality refusals, the checklist
and its reproducible sample, evidence that must resolve, NC -> finding -> CAPA (-> Jira with the fake), the
programme with risk-based pull-in, the signed report verified by ``qms verify``, the re-check gate on the
CAPA's closure, the deadline ladder, the management-review read model and the CLI."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from identityutil import sign
from sqlalchemy import select, update

from qmsflow.context import QmsContext
from qmsflow.domain import audit as rules
from qmsflow.domain.errors import DomainError, InvalidTransition
from qmsflow.services import audit, capa, queries, review, verify
from qmsflow.store import UnitOfWork, trail
from qmsflow.store.tables import ApprovalRequestRow, OutboxRow, RecordRow, TrailEventRow

PROCESS = "data-management"  # owner dev, procedure SOP-DAT-001 (owner dev, approvers chloe and ana)


@pytest.fixture
def synced(synced_ctx: QmsContext, monkeypatch: pytest.MonkeyPatch) -> QmsContext:
    for var in ("SLACK_BOT_TOKEN", "JIRA_API_TOKEN", "JIRA_EMAIL"):
        monkeypatch.delenv(var, raising=False)
    return synced_ctx


def today() -> date:
    return UnitOfWork.now().date()


def plan(ctx: QmsContext, auditor: str = "ben", process: str = PROCESS, on: date | None = None, config=None) -> str:  # noqa: ANN001
    with UnitOfWork(ctx.db, "ana") as uow:
        return audit.plan(uow, config or ctx.config, process, auditor, on or today(), "ana").id


def start(ctx: QmsContext, audit_id: str) -> dict:
    with UnitOfWork(ctx.db, "qmsflow") as uow:
        return audit.start(uow, ctx.config, audit_id)


def record(
    ctx: QmsContext, audit_id: str, n: int, result: str, evidence: list[str], note: str = "", by: str = "ben"
) -> dict:
    with UnitOfWork(ctx.db, by) as uow:
        return audit.record(uow, ctx.config, audit_id, n, result, evidence, note, by)


def row_of(ctx: QmsContext, record_id: str) -> RecordRow:
    with ctx.db.read() as s:
        row = s.get(RecordRow, record_id)
        s.expunge(row)
        return row


def events(ctx: QmsContext, ref: str) -> list:
    with ctx.db.read() as s:
        return list(trail.events_for(s, ref))


def open_capa(ctx: QmsContext, process: str = PROCESS) -> str:
    with UnitOfWork(ctx.db, "dev") as uow:
        return capa.open_capa(uow, ctx.config, title="Label drift", source="pms", owner="dev", process=process).id


# ------------------------------------------------------------------ impartiality


def test_the_owner_is_refused_and_the_refusal_recorded(synced: QmsContext) -> None:
    with pytest.raises(rules.Conflict, match=f"dev may not audit {PROCESS}: owns the process {PROCESS}"):
        plan(synced, "dev")
    [event] = [e for e in events(synced, f"audit-plan:{PROCESS}") if e.action == "audit.plan-refused"]
    assert event.after["auditor"] == "dev" and "owns the process" in event.after["refused"]
    with synced.db.read() as s:
        assert s.scalar(select(RecordRow).where(RecordRow.kind == "audit")) is None


def test_a_member_is_refused(synced: QmsContext) -> None:
    processes = [p.model_copy(update={"members": ["ben"]}) if p.key == PROCESS else p for p in synced.config.processes]
    config = synced.config.model_copy(update={"processes": processes})
    with pytest.raises(rules.Conflict, match=f"is a member of the process {PROCESS}"):
        plan(synced, "ben", config=config)
    assert [e.action for e in events(synced, f"audit-plan:{PROCESS}")] == ["audit.plan-refused"]


def test_an_author_or_approver_of_its_documents_in_twelve_months_is_refused(synced: QmsContext) -> None:
    with UnitOfWork(synced.db, "chloe") as uow:  # chloe authors a change of SOP-DAT-001, ana approves it
        submission = review.submit_document(
            uow, synced.config, synced.root, document_id="SOP-DAT-001", submitted_by="chloe"
        )
        request = review.open_review(uow, synced.config, submission.id, str(uuid.uuid4()))
    with UnitOfWork(synced.db, "ana") as uow:
        sign(uow, synced.config, request["id"], "ana")
    with pytest.raises(rules.Conflict, match=r"chloe may not audit data-management: authored SOP-DAT-001 v"):
        plan(synced, "chloe")
    with pytest.raises(rules.Conflict, match=r"ana may not audit data-management: approved SOP-DAT-001 v"):
        plan(synced, "ana")
    # twelve months and a day later neither conflicts any more
    later = today() + timedelta(days=rules.LOOKBACK_DAYS + 1)
    assert plan(synced, "chloe", on=later).startswith("AUD-")
    refused = [e for e in events(synced, f"audit-plan:{PROCESS}") if e.action == "audit.plan-refused"]
    assert [e.after["auditor"] for e in refused] == ["chloe", "ana"]


def test_an_external_auditor_is_recorded_as_such(synced: QmsContext) -> None:
    from qmsflow.domain.organisation import AuditSettings, ExternalAuditor

    settings = AuditSettings(external_auditors=[ExternalAuditor(person="ben", organisation="Audit & Co")])
    config = synced.config.model_copy(update={"audit": settings})
    audit_id = plan(synced, "ben", config=config)
    assert row_of(synced, audit_id).data["external"] == "Audit & Co"


# ------------------------------------------------------------------ checklist, sample, evidence, findings


def test_the_audit_end_to_end_with_a_major_finding_its_capa_and_the_signed_report(synced: QmsContext) -> None:
    earlier = [open_capa(synced) for _ in range(5)]
    audit_id = plan(synced)
    started = start(synced, audit_id)
    assert started["stage"] == "in_progress" and started["items"] == 2  # procedure + aspect (f)
    assert start(synced, audit_id) == started  # idempotent
    row = row_of(synced, audit_id)
    items = row.data["items"]
    seed = row.data["stages"]["in_progress"]["seed"]
    assert items[1]["topic"] == "Art. 17(1)(f)" and items[1]["criteria"]["iso_42001"] == ["A.7"]
    assert set(items[1]["population"]) == set(earlier) and len(items[1]["sample"]) == 3
    # the seed is in the trail before the draw, and anyone re-draws the same sample from it
    [seeded] = [e for e in events(synced, f"audit:{audit_id}") if e.action == "audit.seed-recorded"]
    [started_event] = [e for e in events(synced, f"record:{audit_id}") if e.action == "audit.started"]
    assert seeded.after["seed"] == seed and seeded.seq < started_event.seq
    assert sorted(seeded.after["populations"]["capas"]) == sorted(earlier)
    assert audit.redraw(seeded.after["populations"]["capas"], 3, seed, 2) == items[1]["sample"]

    # evidence that does not resolve is refused, and the refusal recorded
    with pytest.raises(DomainError, match="'CAPA-2099-9999' does not resolve"):
        record(synced, audit_id, 1, "conform", ["CAPA-2099-9999"])
    with pytest.raises(DomainError, match="'SOP-NOPE-001' does not resolve"):
        record(synced, audit_id, 1, "conform", ["SOP-NOPE-001"])
    refused = [e for e in events(synced, f"audit:{audit_id}") if e.action == "audit.record-refused"]
    assert len(refused) == 2 and refused[0].after["evidence"] == ["CAPA-2099-9999"]
    assert row_of(synced, audit_id).data["items"][0]["result"] is None
    with pytest.raises(DomainError, match="only the auditor"):
        record(synced, audit_id, 1, "conform", [], by="chloe")

    record(synced, audit_id, 1, "conform", ["document:SOP-DAT-001", earlier[0]])
    paper = record(synced, audit_id, 2, "major", [earlier[1]], "No data labelling review in 12 months")
    finding_id, capa_id = paper["finding"], paper["capa"]
    finding, corrective, row = row_of(synced, finding_id), row_of(synced, capa_id), row_of(synced, audit_id)
    assert finding.kind == "finding" and finding.owner == "dev" and finding.data["result"] == "major"
    assert corrective.data["source"] == "audit" and corrective.data["severity"] == "high"
    assert f"finding:{finding_id}" in corrective.links and f"capa:{capa_id}" in finding.links  # both ways
    assert {f"finding:{finding_id}", f"capa:{capa_id}"} <= set(row.links)
    assert row.data["items"][0]["evidence"] == ["document:SOP-DAT-001", f"capa:{earlier[0]}"]
    with pytest.raises(DomainError, match="already raised"):
        record(synced, audit_id, 2, "minor", [earlier[1]], "again")

    # the programme pulls the process in and says why
    with synced.db.read() as s:
        line = next(x for x in queries.audit_programme(s, synced.config, today().year, today()) if x.process == PROCESS)
    assert any(f"risk: open major finding (finding:{finding_id})" in r for r in line.reasons)
    assert line.due <= today() + timedelta(days=synced.config.audit.pull_in_days)
    assert line.nc_counts == {rules.quarter_of(today()): 1}

    # conclusion: the auditor signs the report, a quality lead approves it
    with UnitOfWork(synced.db, "chloe") as uow, pytest.raises(DomainError, match="only the auditor"):
        audit.conclude(uow, synced.config, audit_id, "x", "chloe")
    with UnitOfWork(synced.db, "ben") as uow:
        concluded = audit.conclude(uow, synced.config, audit_id, "Implemented; labelling review not effective.", "ben")
    request_id = concluded["awaiting"]
    with synced.db.read() as s:
        request = s.get(ApprovalRequestRow, request_id)
        assert request.approvers == ["ben", "ana"] and request.subject == f"audit:{audit_id}@closed"
    with UnitOfWork(synced.db, "ben") as uow:
        sign(uow, synced.config, request_id, "ben")
    assert row_of(synced, audit_id).status == "reporting"
    with UnitOfWork(synced.db, "ana") as uow:
        sign(uow, synced.config, request_id, "ana")
    row = row_of(synced, audit_id)
    assert row.status == "closed" and {i["reviewer"] for i in row.data["items"]} == {"ana"}
    assert {i["preparer"] for i in row.data["items"]} == {"ben"}

    result = verify.verify(synced.db, None)
    assert result.ok, result.problem
    with UnitOfWork(synced.db, "qmsflow") as uow:
        files = audit.write_report(uow, synced.config, audit_id, synced.root / ".qms" / "rendered")
    html = Path(files["html"]).read_text()
    assert finding_id in html and "Ben Brandt" in html and "Ana Alves" in html and seed in html
    signed = Path(files["signed"]).read_bytes()
    import hashlib

    assert hashlib.sha256(signed).hexdigest() == row.data["stages"]["closed"]["report_sha256"]

    # the management review sees the results, the NC counts and the open finding
    with synced.db.read() as s:
        results = queries.audit_results(s, today() - timedelta(days=365), today())
    assert results["nc_counts"] == {PROCESS: {"minor": 0, "major": 1}}
    assert [a["id"] for a in results["audits"]] == [audit_id] and results["audits"][0]["conform"] == 1
    assert [f["id"] for f in results["open_findings"]] == [finding_id]
    from qmsflow.domain.management_review import Period
    from qmsflow.services import management_review, review_inputs

    now = datetime.now(UTC)
    with synced.db.read() as s:
        window = management_review.window_for(s, synced.config, Period.of(now.date()), now)
        inputs = {i["key"]: i for i in review_inputs.gather(s, synced.config, window)}
    figures = {f["label"]: f for f in inputs["c.internal-audit"]["figures"]}
    assert figures["internal audits concluded"]["records"] == [audit_id]
    assert figures[f"{PROCESS}: nonconformities (minor / major)"]["value"] == "0 / 1"
    assert figures["findings still open"]["records"] == [finding_id]
    if synced.db.dialect == "sqlite":  # bench/management_review.py's SQL baseline computes the same figures
        from tests.integration.test_management_review_bench import bench_agrees

        bench_agrees(synced, window)

    # the CAPA closes only after a re-check of the finding says effective
    steps = {
        "containment": {"correction": "labels re-checked"},
        "root_cause": {
            "method": "5 whys",
            "cause": "no reviewer",
            "similar_cases": {"checked": False, "reason": "one team, one process"},
        },
        "action_plan": {"actions": [{"what": "add review", "owner": "dev", "due": "2027-01-10"}]},
    }
    for target, fields in steps.items():
        with UnitOfWork(synced.db, "dev") as uow:
            waiting = capa.advance(uow, synced.config, capa_id, target, fields)
    with UnitOfWork(synced.db, "ana") as uow:
        sign(uow, synced.config, waiting["awaiting"], "ana")
    with UnitOfWork(synced.db, "dev") as uow:
        capa.advance(uow, synced.config, capa_id, "implementation", {})
        capa.advance(uow, synced.config, capa_id, "effectiveness_check", {"evidence": {"0": ["https://ci/1"]}})
    closing = {
        "result": "effective",
        "checked_by": "ana",
        "checked_on": today().isoformat(),
        "early_reason": "the re-check of the finding is the effectiveness check",
        "no_adverse_effect": True,
        "no_adverse_effect_reasoning": "a review step is added; nothing else changes",
        "risk_update": "RSK-1",
    }
    with UnitOfWork(synced.db, "dev") as uow, pytest.raises(InvalidTransition, match=f"re-check of {finding_id}"):
        capa.advance(uow, synced.config, capa_id, "closed", closing)
    with UnitOfWork(synced.db, "dev") as uow, pytest.raises(DomainError, match="owns"):
        audit.follow_up(uow, synced.config, finding_id, "effective", [capa_id], "checked", "dev")
    with UnitOfWork(synced.db, "ben") as uow:
        with pytest.raises(DomainError, match="needs evidence"):
            audit.follow_up(uow, synced.config, finding_id, "effective", [], "checked", "ben")
        audit.follow_up(uow, synced.config, finding_id, "ineffective", [capa_id], "still no review", "ben")
    assert row_of(synced, finding_id).status == "open"
    with UnitOfWork(synced.db, "ben") as uow:
        audit.follow_up(uow, synced.config, finding_id, "effective", [capa_id], "reviews held since", "ben")
    assert row_of(synced, finding_id).status == "closed"
    refused = [e for e in events(synced, f"audit:{audit_id}") if e.action == "audit.follow-up-refused"]
    assert len(refused) == 2
    with UnitOfWork(synced.db, "dev") as uow:
        assert "awaiting" in capa.advance(uow, synced.config, capa_id, "closed", closing)
    assert verify.verify(synced.db, None).ok


def test_a_tampered_signed_report_fails_qms_verify(synced: QmsContext) -> None:
    audit_id = plan(synced)
    start(synced, audit_id)
    record(synced, audit_id, 1, "conform", ["document:SOP-DAT-001"])
    record(synced, audit_id, 2, "observation", ["document:SOP-DAT-001"], "labelling notes are terse")
    with UnitOfWork(synced.db, "ben") as uow:
        request_id = audit.conclude(uow, synced.config, audit_id, "Effective.", "ben")["awaiting"]
    for person in ("ben", "ana"):
        with UnitOfWork(synced.db, person) as uow:
            sign(uow, synced.config, request_id, person)
    assert verify.verify(synced.db, None).ok
    data = row_of(synced, audit_id).data  # someone edits the concluded audit in the database, outside qmsflow
    data["stages"]["reporting"]["conclusion"] = "All fine."
    with synced.db.engine.begin() as conn:
        conn.execute(update(RecordRow.__table__).where(RecordRow.__table__.c.id == audit_id).values(data=data))
    result = verify.verify(synced.db, None)
    assert not result.ok and audit_id in (result.problem or "")


def test_a_report_sent_back_returns_the_audit_to_in_progress(synced: QmsContext) -> None:
    audit_id = plan(synced)
    start(synced, audit_id)
    record(synced, audit_id, 1, "conform", [])
    with pytest.raises(DomainError, match=r"result for item\(s\) 2"):
        with UnitOfWork(synced.db, "ben") as uow:
            audit.conclude(uow, synced.config, audit_id, "Done.", "ben")
    assert [e.action for e in events(synced, f"audit:{audit_id}")].count("audit.conclude-refused") == 1
    record(synced, audit_id, 2, "improvement", [], "automate the label check")
    with UnitOfWork(synced.db, "ben") as uow:
        request_id = audit.conclude(uow, synced.config, audit_id, "Done.", "ben")["awaiting"]
    with UnitOfWork(synced.db, "ana") as uow:
        sign(uow, synced.config, request_id, "ana", decision="reject", comment="item 2 needs evidence")
    assert row_of(synced, audit_id).status == "in_progress"


def test_an_audit_worked_before_its_run_gets_the_run_attached_to_it_and_its_report_request(synced: QmsContext) -> None:
    audit_id = plan(synced, on=today() + timedelta(days=3))
    start(synced, audit_id)  # qms audit start, before the planned date: no run yet
    record(synced, audit_id, 1, "conform", [])
    record(synced, audit_id, 2, "conform", [])
    with UnitOfWork(synced.db, "ben") as uow:
        request_id = audit.conclude(uow, synced.config, audit_id, "Effective.", "ben")["awaiting"]
    with UnitOfWork(synced.db, "qmsflow") as uow:
        assert audit.due_to_start(uow, today()) == []  # not before its date
        assert audit.due_to_start(uow, today() + timedelta(days=3)) == [audit_id]
        assert audit.start(uow, synced.config, audit_id, "run-1")["stage"] == "reporting"
        assert audit.due_to_start(uow, today() + timedelta(days=3)) == []
    with synced.db.read() as s:
        assert s.get(ApprovalRequestRow, request_id).flow_run_id == "run-1"
    assert row_of(synced, audit_id).data["flow_run_id"] == "run-1"
    assert verify.verify(synced.db, None).ok


def test_the_ladder_reminds_the_auditor_of_an_overdue_audit_once_then_the_manager(synced: QmsContext) -> None:
    audit_id = plan(synced, on=today())
    day = today() + timedelta(days=2)
    with UnitOfWork(synced.db, "qmsflow") as uow:
        assert audit.escalate_overdue(uow, synced.config, day) == [(audit_id, "remind", "ben")]
        assert audit.escalate_overdue(uow, synced.config, day) == []
        assert audit.escalate_overdue(uow, synced.config, today() + timedelta(days=15)) == []  # ben has no manager
    assert [e.action for e in events(synced, f"record:{audit_id}")].count("audit.escalated") == 1


def test_a_finding_past_its_recheck_date_reminds_the_auditee_then_their_manager(synced: QmsContext) -> None:
    audit_id = plan(synced)
    start(synced, audit_id)
    record(synced, audit_id, 1, "conform", [])
    finding = record(synced, audit_id, 2, "major", ["document:SOP-DAT-001"], "No labelling review")["finding"]
    due = row_of(synced, finding).due_date
    assert due == today() + timedelta(days=synced.config.audit.recheck_days)  # its CAPA was opened today
    fired = []
    with UnitOfWork(synced.db, "qmsflow") as uow:  # due day, a day later twice, then past the escalation
        for day in (due, due + timedelta(days=1), due + timedelta(days=1), due + timedelta(days=14)):
            fired += [
                (level, who) for ref, level, who in audit.escalate_overdue(uow, synced.config, day) if ref == finding
            ]
    assert fired == [("remind", "dev"), ("escalate", "chloe")]  # dev is the auditee, chloe dev's manager
    assert [e.action for e in events(synced, f"record:{finding}")].count("finding.escalated") == 2


def test_programme_marks_an_unaudited_short_frequency_process_overdue(synced: QmsContext) -> None:
    from qmsflow.domain.organisation import AuditSettings

    config = synced.config.model_copy(update={"audit": AuditSettings(every_months={"risk-management": 1})})
    open_capa(synced, "capa")
    with synced.db.read() as s:
        lines = {x.process: x for x in queries.audit_programme(s, config, today().year, today())}
    assert set(lines) == {p.key for p in synced.config.processes}
    assert lines["risk-management"].every_months == 1
    assert lines["risk-management"].overdue == (date(today().year, 1, 31) < today())
    with synced.db.read() as s:  # an overdue CAPA pulls its process in
        lines = {x.process: x for x in queries.audit_programme(s, config, today().year, today() + timedelta(days=60))}
    assert any("CAPA overdue" in r for r in lines["capa"].reasons)


# ------------------------------------------------------------------ CLI


def test_cli_plan_refusal_exits_1_and_record_names_the_item(
    synced: QmsContext, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from identityutil import token

    from qmsflow.cli.main import run

    cfg = str(synced.loaded.path)
    monkeypatch.setenv("QMS_TOKEN", token(synced.db, "ana"))
    assert run(["audit", "plan", PROCESS, "--auditor", "dev", "--date", today().isoformat(), "-c", cfg]) == 1
    assert "dev may not audit data-management: owns the process" in capsys.readouterr().err
    assert run(["audit", "plan", PROCESS, "--auditor", "ben", "--date", "2026-13-01", "-c", cfg]) == 2
    assert "is not a date" in capsys.readouterr().err
    assert run(["audit", "plan", PROCESS, "--auditor", "ben", "--date", today().isoformat(), "-c", cfg]) == 0
    audit_id = capsys.readouterr().out.split()[0]
    monkeypatch.setenv("QMS_TOKEN", token(synced.db, "ben"))
    assert run(["audit", "start", audit_id, "-c", cfg]) == 0 and "2 item(s)" in capsys.readouterr().out
    assert run(["audit", "record", audit_id, "--item", "1", "--result", "major", "--evidence", "CAPA-2099-0001",
                "--note", "x", "-c", cfg]) == 1  # fmt: skip
    assert "does not resolve" in capsys.readouterr().err
    assert run(["audit", "record", audit_id, "--item", "1", "--result", "minor", "--evidence", "document:SOP-DAT-001",
                "--note", "procedure past review", "-c", cfg]) == 0  # fmt: skip
    said = capsys.readouterr().out
    assert "FND-" in said and "CAPA-" in said
    assert run(["audit", "programme", "-c", cfg]) == 0
    shown = capsys.readouterr().out
    assert audit_id in shown and "risk: open" not in shown  # a minor finding pulls nothing in
    assert run(["audit", "show", audit_id, "-c", cfg]) == 0 and "procedure past review" in capsys.readouterr().out
    assert run(["audit", "results", "--since", "2020-01-01", "-c", cfg]) == 0
    assert "open finding FND-" in capsys.readouterr().out
    assert run(["audit", "results", "--since", "yesterday", "-c", cfg]) == 2


# ------------------------------------------------------------------ Jira


def test_a_nonconformity_opens_a_capa_mirrored_to_jira(jira_ctx: tuple) -> None:
    from qmsflow.services.delivery import deliver

    ctx, fake = jira_ctx
    audit_id = plan(ctx)
    start(ctx, audit_id)
    paper = record(ctx, audit_id, 1, "minor", ["document:SOP-DAT-001"], "review date passed")
    with ctx.db.read() as s:
        queued = [r for r in s.scalars(select(OutboxRow)) if r.target == "jira"]
    assert len(queued) == 1
    deliver(ctx.db, ctx.config)
    [issue] = [i for i in fake.issues.values() if f"qms-{paper['capa']}" in i["fields"]["labels"]]
    assert issue["fields"]["summary"].startswith(paper["capa"])
    assert row_of(ctx, paper["capa"]).data["severity"] == "medium"
    with ctx.db.read() as s:
        assert s.scalar(select(TrailEventRow.seq).where(TrailEventRow.action == "capa.created")) is not None
