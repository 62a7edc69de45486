"""The quarterly schedule of the management review: the deployment's cron and time zone come from
qms.yaml, the cron's days contain each quarter's first working day and the flow starts the review on that
day only; one real in-process run starts the review of the last quarter, a second one starts nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from qmsflow.context import QmsContext, open_context
from qmsflow.domain.management_review import QUARTERLY_CRON, Period, first_working_day, review_due_on
from qmsflow.domain.organisation import QmsConfig
from qmsflow.services import management_review as mr
from qmsflow.services.sync import sync_config
from qmsflow.store import UnitOfWork

NAME = "management-review-quarterly/quarterly"


def _config(repo: Path, extra: str = "") -> QmsConfig:
    text = (repo / "qms.yaml").read_text()
    assert "  timezone: Europe/Berlin" in text  # the scaffold names the time zone
    (repo / "qms.yaml").write_text(text + extra)
    from qmsflow.settings import load_config

    return load_config(repo / "qms.yaml").config


def test_the_deployment_runs_quarterly_in_the_organisation_time_zone(repo: Path) -> None:
    import deployments

    config = _config(repo)
    built = {
        f"{d.flow_name}/{d.name}": d
        for d in deployments.build(deployments.schedules_of(config), frozenset(), config.organisation.timezone)
    }
    [schedule] = built[NAME].schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == (QUARTERLY_CRON, "Europe/Berlin")
    # other deployments keep their UTC cron
    [anchor] = built["trail-anchor/hourly"].schedules
    assert anchor.schedule.timezone in (None, "UTC")


def test_a_cron_in_qms_yaml_replaces_the_default(repo: Path) -> None:
    import deployments

    config = _config(repo, "\nmanagement_review:\n  schedule: '0 9 2 1,4,7,10 *'\n")
    built = {
        f"{d.flow_name}/{d.name}": d
        for d in deployments.build(deployments.schedules_of(config), frozenset(), "Europe/Berlin")
    }
    assert built[NAME].schedules[0].schedule.cron == "0 9 2 1,4,7,10 *"


def test_the_schedule_fires_on_each_first_working_day_and_starts_one_review_per_quarter() -> None:
    tz = ZoneInfo("Europe/Berlin")
    fires = croniter(QUARTERLY_CRON, datetime(2026, 12, 31, 12, tzinfo=tz))
    started: list[tuple[str, str]] = []
    for _ in range(7 * 8):  # two years of firings (7 days a quarter)
        moment = fires.get_next(datetime)
        if moment.year > 2028:
            break
        assert (moment.hour, moment.tzinfo.utcoffset(moment)) == (7, tz.utcoffset(moment.replace(tzinfo=None)))
        period = review_due_on(moment.date())
        if period is not None:
            started.append((moment.date().isoformat(), str(period)))
    assert started[:4] == [
        ("2027-01-04", "2026Q4"),
        ("2027-04-01", "2027Q1"),
        ("2027-07-01", "2027Q2"),
        ("2027-10-01", "2027Q3"),
    ]
    assert all(day == first_working_day(Period.parse(p).next()).isoformat() for day, p in started)
    assert len(started) == 8


@pytest.fixture
def world(repo: Path, prefect_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[QmsContext]:
    for var in ("QMS_DATABASE_URL", "JIRA_API_TOKEN", "JIRA_EMAIL", "SLACK_BOT_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    # a cron of one's own: the run starts the review of the last quarter whatever today is
    _config(repo, "\nmanagement_review:\n  schedule: '0 7 * * *'\n")
    monkeypatch.setenv("QMS_CONFIG", str(repo / "qms.yaml"))
    monkeypatch.setenv("PREFECT_API_URL", prefect_server)
    ctx = open_context(repo / "qms.yaml", migrate=True)
    with UnitOfWork(ctx.db, "qmsflow") as uow:
        sync_config(uow, ctx.config, ctx.root)
        uow.commit()
    yield ctx
    ctx.close()


def test_one_real_run_starts_the_review_and_a_second_starts_none(world: QmsContext) -> None:
    from flows.management_review import management_review_quarterly

    first = management_review_quarterly()
    expected = str(mr.reviewed_period(mr.today_in(world.config, UnitOfWork.now())))
    assert first["period"] == expected and first["started"]
    with world.db.read() as s:
        row = mr.find(s, Period.parse(expected))
        assert row is not None and row.id == first["started"] and row.data["pack"] == first["pack"]
    second = management_review_quarterly()
    assert second["started"] is None and second["review"] == first["started"] and "already started" in second["reason"]
