"""Retention on a real store (SQLite and PostgreSQL): Art. 18(1) from the systems' dates, persisted so that
editing or removing a system in qms.yaml never shortens it, a stricter policy, and legal holds (issue 21.3)."""

from __future__ import annotations

import json
from datetime import date

import pytest
from identityutil import token
from sqlalchemy import select

from qmsflow.cli.main import run
from qmsflow.context import QmsContext
from qmsflow.domain.errors import RetentionError
from qmsflow.domain.organisation import AISystem
from qmsflow.services import retention
from qmsflow.services.records import create_record, delete_document_version, delete_record
from qmsflow.services.sync import sync_config
from qmsflow.services.verify import verify
from qmsflow.store import UnitOfWork, trail
from qmsflow.store.tables import RecordRow, TrailEventRow

TODAY = date(2026, 12, 6)


def new_record(ctx: QmsContext, systems: list[str]) -> str:
    with UnitOfWork(ctx.db, "qmsflow") as uow:
        row, _ = create_record(uow, "capa", "Mislabelled training data", systems=systems)
        uow.commit()
        return row.id


def delete(ctx: QmsContext, record_id: str, on: date, config=None, who: str = "dev") -> None:  # noqa: ANN001
    with UnitOfWork(ctx.db, who) as uow:
        delete_record(uow, config or ctx.config, record_id, on)


def with_systems(ctx: QmsContext, systems: list[AISystem]):  # noqa: ANN201
    return ctx.config.model_copy(update={"systems": systems})


def lifecycle_rows(ctx: QmsContext) -> dict[str, dict]:
    with ctx.db.read() as s:
        rows = s.scalars(select(RecordRow).where(RecordRow.kind == "ai-system")).all()
        return {r.data["system"]: dict(r.data) for r in rows}


def test_sync_records_each_systems_dates_once(synced_ctx: QmsContext) -> None:
    rows = lifecycle_rows(synced_ctx)
    assert rows["triage-assist"]["placed_on_market"] == "2026-09-01"
    assert rows["credit-score"]["placed_on_market"] is None and rows["credit-score"]["in_qms_yaml"] is True
    with UnitOfWork(synced_ctx.db, "qmsflow") as uow:
        assert not sync_config(uow, synced_ctx.config, synced_ctx.root)  # idempotent: nothing changed


def test_retention_counts_ten_years_from_placing_on_the_market_with_the_rule_cited(synced_ctx: QmsContext) -> None:
    record_id = new_record(synced_ctx, ["triage-assist"])
    with pytest.raises(RetentionError, match=r"until 2036-12-\d\d: kept 10 years after the record was made"):
        delete(synced_ctx, record_id, date(2036, 9, 2))
    placed_earlier_record = record_id
    with UnitOfWork(synced_ctx.db, "qmsflow") as uow:  # a record of the day the system was placed
        row = uow.session.get(RecordRow, placed_earlier_record)
        row.created_at = row.created_at.replace(year=2026, month=8, day=1)
        period = retention.record_period(uow, synced_ctx.config, row)
        uow.rollback()
    assert period.end == date(2036, 9, 1)
    assert period.rule == "10 years (EU AI Act Art. 18(1)) from 2026-09-01, when triage-assist was placed on the market"
    with synced_ctx.db.read() as s:
        refused = s.scalars(select(TrailEventRow).where(TrailEventRow.action == "capa.delete-refused")).one()
    assert "EU AI Act Art. 18(1)" in refused.after_json or "organisation policy" in refused.after_json


def test_records_of_a_system_not_yet_placed_are_kept(synced_ctx: QmsContext) -> None:
    record_id = new_record(synced_ctx, ["credit-score"])
    with pytest.raises(RetentionError, match="credit-score is not yet placed on the market or put into service"):
        delete(synced_ctx, record_id, date(2100, 1, 1))


def test_removing_or_backdating_a_system_in_qms_yaml_never_shortens_retention(synced_ctx: QmsContext) -> None:
    record_id = new_record(synced_ctx, ["triage-assist"])
    with UnitOfWork(synced_ctx.db, "qmsflow") as uow:  # put into service later: the period starts later
        triage = synced_ctx.config.systems[0].model_copy(update={"put_into_service": date(2027, 6, 1)})
        sync_config(uow, with_systems(synced_ctx, [triage, synced_ctx.config.systems[1]]), synced_ctx.root)
    removed = with_systems(synced_ctx, [synced_ctx.config.systems[1]])  # triage-assist deleted from qms.yaml
    with pytest.raises(RetentionError, match="until 2037-06-01: .* from 2027-06-01, when triage-assist was put into"):
        delete(synced_ctx, record_id, date(2037, 5, 31), config=removed)
    backdated = synced_ctx.config.systems[0].model_copy(update={"placed_on_market": date(2015, 1, 1)})
    with pytest.raises(RetentionError, match="until 2037-06-01"):  # an earlier date in qms.yaml: still kept
        delete(synced_ctx, record_id, date(2037, 5, 31), config=with_systems(synced_ctx, [backdated]))
    with UnitOfWork(synced_ctx.db, "qmsflow") as uow:
        sync_config(uow, removed, synced_ctx.root)
    rows = lifecycle_rows(synced_ctx)
    assert rows["triage-assist"]["in_qms_yaml"] is False and rows["triage-assist"]["put_into_service"] == "2027-06-01"
    never_known = new_record(synced_ctx, ["ghost-system"])
    with pytest.raises(RetentionError, match="no date of AI system ghost-system is known"):
        delete(synced_ctx, never_known, date(2100, 1, 1))


def test_a_stricter_policy_keeps_longer(synced_ctx: QmsContext) -> None:
    record_id = new_record(synced_ctx, ["triage-assist"])
    stricter = synced_ctx.config.model_copy(
        update={"retention": synced_ctx.config.retention.model_copy(update={"years_after_withdrawal": 10})}
    )
    with pytest.raises(RetentionError, match="triage-assist is not withdrawn, and the organisation policy keeps"):
        delete(synced_ctx, record_id, date(2090, 1, 1), config=stricter)
    fifteen = synced_ctx.config.model_copy(
        update={"retention": synced_ctx.config.retention.model_copy(update={"years": 15})}
    )
    with pytest.raises(RetentionError, match=r"until 2041-\d\d-\d\d: kept 15 years after the record was made"):
        delete(synced_ctx, record_id, date(2041, 1, 1), config=fifteen)
    with UnitOfWork(synced_ctx.db, "qmsflow") as uow:  # a record older than the placing on the market
        row = uow.session.get(RecordRow, record_id)
        row.created_at = row.created_at.replace(year=2026, month=1, day=1)
        period = retention.record_period(uow, fifteen, row)
        uow.rollback()
    assert period.end == date(2041, 9, 1)
    assert "15 years (organisation policy, stricter than the 10 of EU AI Act Art. 18(1)) from 2026-09-01" in period.rule


def test_legal_hold_blocks_deletion_whatever_the_date_and_only_a_quality_lead_or_admin_sets_it(
    synced_ctx: QmsContext,
) -> None:
    qms_wide = new_record(synced_ctx, [])
    record_id = new_record(synced_ctx, ["triage-assist"])
    with UnitOfWork(synced_ctx.db, "dev") as uow, pytest.raises(retention.HoldRefused, match="dev may not set"):
        retention.set_hold(uow, synced_ctx.config, record_id, "litigation", by="dev", is_admin=False, today=TODAY)
    with UnitOfWork(synced_ctx.db, "ana") as uow:  # ana is a quality lead
        retention.set_hold(uow, synced_ctx.config, record_id, "litigation L-7", by="ana", is_admin=False, today=TODAY)
    with pytest.raises(RetentionError, match=r"under legal hold \(record: litigation L-7\)"):
        delete(synced_ctx, record_id, date(2199, 1, 1))
    with UnitOfWork(synced_ctx.db, "ben") as uow:  # ben is no quality lead but an admin
        retention.set_hold(
            uow, synced_ctx.config, "system:triage-assist", "authority request", by="ben", is_admin=True, today=TODAY
        )
    with pytest.raises(RetentionError, match="system triage-assist: authority request"):
        delete(synced_ctx, qms_wide, date(2199, 1, 1))  # a QMS-wide record concerns every system
    with pytest.raises(RetentionError, match="legal hold"):
        with UnitOfWork(synced_ctx.db, "ana") as uow:
            delete_document_version(uow, synced_ctx.config, "SOP-DOC-001", "1.0", date(2199, 1, 1))
    for target in (record_id, "system:triage-assist"):
        with UnitOfWork(synced_ctx.db, "ana") as uow:
            retention.release_hold(uow, synced_ctx.config, target, "case closed", by="ana", is_admin=False, today=TODAY)
    delete(synced_ctx, record_id, date(2199, 1, 1))
    with synced_ctx.db.read() as s:
        actions = [e.action for e in trail.events_for(s, f"record:{record_id}")]
    assert actions == [
        "capa.created",
        "capa.hold-refused",
        "capa.legal-hold-set",
        "capa.delete-refused",  # the attempt under hold
        "capa.legal-hold-released",
        "capa.deleted",
    ]
    assert verify(synced_ctx.db, None).ok  # holds and lifecycle records are state events the trail replays


def test_cli_dates_show_hold_and_release(synced_ctx: QmsContext, capsys, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("COLUMNS", "250")
    cfg = str(synced_ctx.loaded.path)
    record_id = new_record(synced_ctx, ["triage-assist"])

    def qms(*args: str) -> tuple[int, str, str]:
        code = run([*args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    code, out, _ = qms("retention", "dates")
    assert code == 0 and "2027-12-02" in out and "2028-08-02" in out and "29 Jun 2026" in out
    code, out, _ = qms("retention", "show", record_id, "-c", cfg)
    assert code == 0 and "EU AI Act Art. 18(1)" in out or "organisation policy" in out
    code, out, _ = qms("retention", "systems", "-c", cfg)
    assert code == 0 and "triage-assist" in out and "2036-09-01" in out and "not yet placed" in out
    monkeypatch.setenv("QMS_TOKEN", token(synced_ctx.db, "dev"))
    code, _, err = qms("retention", "hold", record_id, "--reason", "litigation", "-c", cfg)
    assert code == 1 and "dev may not set a legal hold" in err and "Traceback" not in err
    monkeypatch.setenv("QMS_TOKEN", token(synced_ctx.db, "ana"))
    code, out, _ = qms("retention", "hold", record_id, "--reason", "litigation L-7", "-c", cfg)
    assert code == 0 and "under legal hold" in out
    code, out, _ = qms("retention", "holds", "-c", cfg)
    assert record_id in out and "litigation L-7" in out
    code, _, err = qms("records", "delete", record_id, "-c", cfg)
    assert code == 1 and "under legal hold" in err
    code, _, err = qms("retention", "release", record_id, "--reason", " ", "-c", cfg)
    assert code == 1 and "--reason" in err
    code, out, _ = qms("retention", "release", record_id, "--reason", "settled", "-c", cfg)
    assert code == 0 and "released" in out
    with synced_ctx.db.read() as s:
        row = s.get(RecordRow, record_id)
        assert "legal_hold" not in row.data and row.data["legal_holds_released"][0]["release_reason"] == "settled"
        set_event = [e for e in trail.events_for(s, f"record:{record_id}") if e.action == "capa.legal-hold-set"]
    assert set_event[0].actor == "ana" and json.loads(set_event[0].after_json)["data"]["legal_hold"]["by"] == "ana"


def test_scaffolded_procedures_state_the_dates_and_the_annex_choice_truly(tmp_path) -> None:  # noqa: ANN001
    from qmsflow.scaffold import scaffold

    scaffold(tmp_path / "r", git=False)
    qms001 = next((tmp_path / "r" / "procedures").glob("QMS-001*.md")).read_text()
    assert "stored as versioned configuration" not in qms001
    assert "ai_act_dates.yaml" in qms001 and "2 Dec 2027" in qms001 and "2 Aug 2028" in qms001
    assert (
        "Annex III point 1 (biometrics)" in qms001
        and "points 2 to 8, internal control under Annex VI (no choice)" in qms001
    )
    capa_sop = next((tmp_path / "r" / "procedures").glob("SOP-CAPA-001*.md")).read_text()
    assert "placed on the market or put into service (Art. 18(1))" in capa_sop and "legal hold" in capa_sop
