"""Management review on a real store (SQLite and PostgreSQL): a simulated quarter of activity gives the
expected input figures, each pointing at its records; the minutes cannot be submitted until complete; top
management signs; actions are tracked and roll into the next review; a period cannot be started twice."""

from __future__ import annotations

from datetime import date, timedelta

import identityutil
import pytest

from qmsflow.context import QmsContext
from qmsflow.domain.errors import DomainError
from qmsflow.domain.management_review import INPUT_KEYS, IncompleteMinutes, Period
from qmsflow.services import capa, contents
from qmsflow.services import management_review as mr
from qmsflow.services.records import update_record
from qmsflow.store import UnitOfWork, trail
from qmsflow.store.tables import RecordRow

CLOSE = [
    ("containment", {"correction": "Rolled back"}),
    (
        "root_cause",
        {
            "method": "5 whys",
            "cause": "Label drift",
            "similar_cases": {"checked": False, "reason": "first of its kind"},
        },
    ),
    ("action_plan", {"actions": [{"what": "Label audit", "owner": "dev", "due": "2030-12-20"}]}),
    ("implementation", {}),
    ("effectiveness_check", {"evidence": {"0": ["https://ci.example/run/42"]}}),
    (
        "closed",
        {
            "result": "effective",
            "checked_by": "ana",
            "checked_on": date.today().isoformat(),
            "early_reason": "the drift check runs daily and has passed since the fix",
            "no_adverse_effect": True,
            "no_adverse_effect_reasoning": "the label audit adds a check; outputs are unchanged",
            "risk_update": "RSK-12 lowered",
        },
    ),
]


@pytest.fixture
def synced(synced_ctx: QmsContext, monkeypatch: pytest.MonkeyPatch) -> QmsContext:
    for var in ("SLACK_BOT_TOKEN", "JIRA_API_TOKEN", "JIRA_EMAIL"):
        monkeypatch.delenv(var, raising=False)
    return synced_ctx


def _open(ctx: QmsContext, title: str) -> str:
    with UnitOfWork(ctx.db, "dev") as uow:
        return capa.open_capa(uow, ctx.config, title=title, source="audit", owner="dev").id


def _close(ctx: QmsContext, capa_id: str) -> None:
    for target, fields in CLOSE:
        with UnitOfWork(ctx.db, "dev") as uow:
            result = capa.advance(uow, ctx.config, capa_id, target, fields)
        if "awaiting" in result:
            with UnitOfWork(ctx.db, "ana") as uow:
                identityutil.sign(uow, ctx.config, result["awaiting"], "ana")


def _figures(pack: dict, key: str) -> dict[str, dict]:
    [entry] = [i for i in pack["inputs"] if i["key"] == key]
    return {f["label"]: f for f in entry["figures"]} | {"_statement": entry["statement"]}


def _start(ctx: QmsContext, period: Period) -> RecordRow:
    with UnitOfWork(ctx.db, "ana") as uow:
        review_id = mr.start(uow, ctx.config, period).id
    with ctx.db.read() as s:
        row = mr.load(s, review_id)
        s.expunge(row)
    return row


def _hire_a_tester(ctx: QmsContext, review_id: str, due: date) -> str:
    """One resources decision with one action, owned by dev: its id."""
    with UnitOfWork(ctx.db, "ana") as uow:
        [action] = mr.decide(
            uow,
            ctx.config,
            review_id,
            "resources",
            "Hire",
            [{"what": "Hire a tester", "owner": "dev", "due": due.isoformat()}],
        )
    return action


def _complete(ctx: QmsContext, review_id: str, who: str = "ana") -> None:
    with UnitOfWork(ctx.db, who) as uow:
        row = mr.load(uow.session, review_id)
        inputs = list(row.data["inputs"])
    for key in inputs:
        with UnitOfWork(ctx.db, who) as uow:
            mr.address(uow, ctx.config, review_id, key, f"considered {key}")
    for kind in ("qms-changes", "resources"):
        with UnitOfWork(ctx.db, who) as uow:
            mr.none_because(uow, ctx.config, review_id, kind, "adequate this quarter")


def test_a_quarter_of_activity_gives_the_expected_figures(synced: QmsContext) -> None:
    ctx = synced
    today = mr.today_in(ctx.config, UnitOfWork.now())
    period = Period.of(today)  # the quarter the activity happens in
    first, second, third = _open(ctx, "A"), _open(ctx, "B"), _open(ctx, "C")
    _close(ctx, first)
    with UnitOfWork(ctx.db, "test-setup") as uow:  # C's stage fell due yesterday
        update_record(uow, uow.session.get(RecordRow, third), "due-moved", due_date=today - timedelta(days=1))
        uow.commit()
    with UnitOfWork(ctx.db, "ana") as uow:
        watch = mr.watch_add(
            uow,
            ctx.config,
            note="AI Office guidance on Art. 73 reporting",
            source="https://digital-strategy.ec.europa.eu/x",
            processes=["post-market-monitoring"],
        ).id
    review = _start(ctx, period)
    assert review.status == "minutes" and review.owner == "ben" and review.data["period"] == str(period)
    with ctx.db.read() as s:
        row = mr.load(s, review.id)
        pack = mr.pack_of(s, row)
        stored = contents.load(s, row.data["pack"])
    assert stored is not None and stored.sha256 == row.data["pack"]  # frozen under its hash
    assert [i["key"] for i in pack["inputs"]] == list(INPUT_KEYS)
    c = _figures(pack, "c.capa")
    assert c["opened this quarter"]["value"] == 3
    assert c["opened this quarter"]["records"] == sorted([first, second, third])
    assert c["closed this quarter"]["records"] == [first]
    assert c[f"open and overdue on {today.isoformat()}"]["records"] == [third]
    assert c["open, aged 0–30 d"]["records"] == sorted([second, third])
    assert c["effectiveness checks: effective"]["records"] == [first]
    assert c["effectiveness checks: ineffective (back to root cause)"]["value"] == 0
    assert c["_statement"] is None
    e = _figures(pack, "e.risk-actions")
    assert e["CAPA closures that updated the risk register"]["records"] == [first]
    lead = _figures(pack, "c.approval-lead-times")
    assert lead["approvals decided this quarter"]["value"] == 2  # the action plan and the closure
    assert _figures(pack, "b.regulatory-watch")["regulatory-watch entries"]["records"] == [watch]
    changes = _figures(pack, "b.qms-changes")
    assert changes["changes synced from qms.yaml (people, processes, documents)"]["value"] > 0
    # nothing recorded, or no procedure provides it: said explicitly
    assert _figures(pack, "a.previous-actions")["_statement"] == "no actions from previous reviews"
    assert _figures(pack, "c.internal-audit")["_statement"].startswith(
        "no internal audit results recorded this quarter"
    )
    assert _figures(pack, "c.release-validation")["_statement"].startswith(
        "no release validations recorded this quarter"
    )
    assert _figures(pack, "d.resources")["_statement"] == "asked of the chair in the minutes"
    # the same period twice: refused and recorded
    with UnitOfWork(ctx.db, "ana") as uow:
        with pytest.raises(DomainError, match=f"already started: {review.id}"):
            mr.start(uow, ctx.config, period)
    with ctx.db.read() as s:
        assert "management-review.start-refused" in [e.action for e in trail.events_for(s, f"record:{review.id}")]


def test_minutes_blocked_until_complete_signed_and_actions_rolled_in(synced: QmsContext) -> None:
    ctx = synced
    today = mr.today_in(ctx.config, UnitOfWork.now())
    current = Period.of(today)
    earlier = current.previous()
    first = _start(ctx, earlier).id
    with UnitOfWork(ctx.db, "ana") as uow:
        with pytest.raises(IncompleteMinutes) as caught:
            mr.submit(uow, ctx.config, first)
    message = str(caught.value)
    assert "input a.previous-actions is not addressed" in message and "input d.resources is not addressed" in message
    assert "output improvement has no decision" in message and "output resources has no decision" in message
    with ctx.db.read() as s:
        assert "management-review.submit-refused" in [e.action for e in trail.events_for(s, f"record:{first}")]
    _complete(ctx, first)
    with UnitOfWork(ctx.db, "ana") as uow:
        with pytest.raises(DomainError, match="'zoe' is not a person"):
            mr.decide(uow, ctx.config, first, "improvement", "x", [{"what": "w", "owner": "zoe", "due": "2099-01-01"}])
    with UnitOfWork(ctx.db, "ana") as uow:
        [action] = mr.decide(
            uow,
            ctx.config,
            first,
            "improvement",
            "Automate the label audit",
            [{"what": "Add a label audit to CI", "owner": "dev", "due": (today + timedelta(days=30)).isoformat()}],
        )
    with ctx.db.read() as s:
        tracked = s.get(RecordRow, action)
        assert (tracked.kind, tracked.owner, tracked.status) == ("mr-action", "dev", "open")
        assert tracked.links == [f"record:{first}"]
    with UnitOfWork(ctx.db, "ana") as uow:
        request = mr.submit(uow, ctx.config, first)
    assert request["approvers"] == ["ben"]
    with UnitOfWork(ctx.db, "ana") as uow:
        with pytest.raises(DomainError, match="waits for approval"):
            mr.address(uow, ctx.config, first, "c.capa", "changed my mind")
    with UnitOfWork(ctx.db, "ben") as uow:
        identityutil.sign(uow, ctx.config, request["awaiting"], "ben")
    with ctx.db.read() as s:
        signed = mr.load(s, first)
        assert signed.status == "signed" and signed.data["signed"]["by"] == "ben"
    with UnitOfWork(ctx.db, "ana") as uow:
        with pytest.raises(DomainError, match="can no longer change"):
            mr.none_because(uow, ctx.config, first, "improvement", "x")
    # the next review: the open action rolls in as input (a)
    second = _start(ctx, current)
    assert second.data["rolled_in"] == [action] and second.data["previous_review"] == first
    with ctx.db.read() as s:
        pack = mr.pack_of(s, mr.load(s, second.id))
        assert s.get(RecordRow, action).data["reviews"] == [second.id]
    a = _figures(pack, "a.previous-actions")
    assert a["open, rolled into this review"]["records"] == [action] and a["_statement"] is None
    # the action is tracked: done closes it, and it no longer rolls in
    with UnitOfWork(ctx.db, "dev") as uow:
        mr.advance_action(uow, ctx.config, action, "done", {"outcome": "CI job label-audit added"})
    with ctx.db.read() as s:
        assert s.get(RecordRow, action).status == "done"


def test_overdue_actions_climb_the_ladder(synced: QmsContext) -> None:
    ctx = synced
    today = mr.today_in(ctx.config, UnitOfWork.now())
    review = _start(ctx, Period.of(today))
    action = _hire_a_tester(ctx, review.id, due=today)
    with UnitOfWork(ctx.db, "qmsflow") as uow:
        assert mr.escalate_overdue_actions(uow, ctx.config, today) == []  # due today is not overdue
    with UnitOfWork(ctx.db, "qmsflow") as uow:
        fired = mr.escalate_overdue_actions(uow, ctx.config, today + timedelta(days=8))
    assert [(i, who) for i, _, who in fired] == [(action, "dev"), (action, "chloe")]
    with UnitOfWork(ctx.db, "qmsflow") as uow:
        assert mr.escalate_overdue_actions(uow, ctx.config, today + timedelta(days=9)) == []  # each rung once


def test_watch_add_refuses_bad_input(synced: QmsContext) -> None:
    with UnitOfWork(synced.db, "ana") as uow:
        with pytest.raises(DomainError, match="must be a link"):
            mr.watch_add(uow, synced.config, note="x", source="ftp://x", processes=["capa"])
        with pytest.raises(DomainError, match="not QMS processes"):
            mr.watch_add(uow, synced.config, note="x", source="https://x.eu", processes=["nope"])
        with pytest.raises(DomainError, match="not begun yet"):
            mr.start(uow, synced.config, Period.of(mr.today_in(synced.config, uow.now())).next())


def test_cli_start_decide_submit_show(synced: QmsContext, capsys: pytest.CaptureFixture, monkeypatch) -> None:  # noqa: ANN001
    from identityutil import token

    from qmsflow.cli.main import run

    monkeypatch.setenv("QMS_TOKEN", token(synced.db, "ana"))
    cfg = str(synced.loaded.path)
    period = str(Period.of(mr.today_in(synced.config, UnitOfWork.now())))
    assert (
        run(
            [
                "watch",
                "add",
                "-c",
                cfg,
                "--note",
                "Draft prEN 18286",
                "--source",
                "https://cen.eu/x",
                "--process",
                "qms-governance",
            ]
        )
        == 0
    )
    watch = capsys.readouterr().out.split()[0]
    assert run(["management-review", "start", "--period", "2027Q9", "-c", cfg]) == 1
    assert "is not a quarter" in capsys.readouterr().err
    assert run(["management-review", "start", "--period", period, "-c", cfg]) == 0
    review_id = capsys.readouterr().out.split()[0]
    assert run(["management-review", "start", "--period", period, "-c", cfg]) == 1
    assert "already started" in capsys.readouterr().err
    assert run(["management-review", "submit", review_id, "-c", cfg]) == 1
    assert "input a.previous-actions is not addressed" in capsys.readouterr().err
    due = (mr.today_in(synced.config, UnitOfWork.now()) + timedelta(days=20)).isoformat()
    assert (
        run(
            [
                "management-review",
                "decide",
                review_id,
                "-c",
                cfg,
                "--output",
                "resources",
                "--decision",
                "Hire",
                "--action",
                f"Hire a tester|chloe|{due}",
            ]
        )
        == 0
    )
    assert "actions MRA-" in capsys.readouterr().out
    assert run(["management-review", "decide", review_id, "-c", cfg, "--output", "improvement", "--action", "bad"]) == 2
    capsys.readouterr()
    assert run(["management-review", "show", review_id, "-c", cfg]) == 0
    shown = capsys.readouterr().out
    assert watch in shown and "no internal audit results recorded this quarter" in shown
    assert "missing: output improvement" in shown and "missing: output resources" not in shown
    for key in INPUT_KEYS:
        assert run(["management-review", "decide", review_id, "-c", cfg, "--input", key, "--note", "seen"]) == 0
    for kind in ("improvement", "qms-changes"):
        assert (
            run(["management-review", "decide", review_id, "-c", cfg, "--output", kind, "--none-because", "fine"]) == 0
        )
    capsys.readouterr()
    assert run(["management-review", "submit", review_id, "-c", cfg]) == 0
    assert "waits for ben" in capsys.readouterr().out
    page, pdf = synced.root / "minutes.html", synced.root / "minutes.pdf"
    assert run(["management-review", "show", review_id, "-c", cfg, "--html", str(page), "--pdf", str(pdf)]) == 0
    html = page.read_text()
    with synced.db.read() as s:
        sha = mr.load(s, review_id).data["pack"]
    assert review_id in html and sha in html and watch in html
    assert "no internal audit results recorded this quarter" in html and "not addressed" not in html
    assert "Hire a tester" in html and "none, because fine" in html.lower()
    assert pdf.read_bytes().startswith(b"%PDF")


def test_an_action_of_a_review_is_mirrored_to_jira(jira_ctx: tuple) -> None:
    from qmsflow.services.delivery import deliver

    ctx, fake = jira_ctx
    today = mr.today_in(ctx.config, UnitOfWork.now())
    review = _start(ctx, Period.of(today))
    action = _hire_a_tester(ctx, review.id, due=today + timedelta(days=30))
    deliver(ctx.db, ctx.config)
    [issue] = [i for i in fake.issues.values() if f"qms-{action}" in i["fields"]["labels"]]
    assert issue["fields"]["summary"].startswith(action)
