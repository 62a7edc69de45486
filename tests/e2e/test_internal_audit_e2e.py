"""End to end: one internal audit (SOP-AUD-001) through `qms up`, as people run it.

`qms up` (Prefect server, runner, web app on SQLite) runs against the fake Slack. An audit planned for
today with `qms audit plan` is started by the daily audit scan (run now, as an operator would with
`prefect deployment run audit-scan/daily`), which starts the audit's `internal-audit/on-demand` run;
the run suspends for the auditor, who records every item with `qms audit record` (a minor
nonconformity opens a finding and its CAPA; evidence that does not resolve is refused) and concludes;
the auditor signs the report and a quality lead approves it with `qms approve`, which resumes the run
to the signed report. The flow run's state is read from Prefect's API throughout.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fakes.slack import FakeSlack
from identityutil import token
from sqlalchemy import select
from stackutil import QMS, SLACK_USERS, RunningStack, start_stack

from qmsflow.scaffold import scaffold
from qmsflow.store.db import Database
from qmsflow.store.tables import ApprovalRequestRow, RecordRow, SignatureRow, TrailEventRow

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

USERS = SLACK_USERS
SLACK_ID = {u["name"]: u["id"] for u in USERS}
AUDIT_RUNS = {"flows": {"name": {"any_": ["internal-audit"]}}}


class World:
    def __init__(self, repo: Path, slack: FakeSlack, stack: RunningStack):
        self.repo, self.slack, self.stack = repo, slack, stack
        self.db = Database(f"sqlite:///{repo / '.qms' / 'qms.db'}")
        self.tokens: dict[str, str] = {}

    def token(self, who: str) -> str:
        if who not in self.tokens:
            self.tokens[who] = token(self.db, who, role="admin" if who == "ana" else "approver")
        return self.tokens[who]

    def qms(self, *args: str, who: str | None = None) -> subprocess.CompletedProcess:
        env = {**self.stack.env, **({"QMS_TOKEN": self.token(who)} if who else {})}
        return subprocess.run(
            [QMS, *args, "-c", str(self.repo / "qms.yaml")], env=env, capture_output=True, text=True, timeout=120
        )

    def record(self, record_id: str) -> RecordRow:
        with self.db.read() as s:
            return s.get(RecordRow, record_id)

    def trail(self, action: str, ref: str) -> list[TrailEventRow]:
        with self.db.read() as s:
            return list(
                s.scalars(select(TrailEventRow).where(TrailEventRow.action == action, TrailEventRow.record == ref))
            )

    def run_of(self, audit_id: str, timeout: float = 120) -> str:
        """The flow run the audit names (its run records it when it builds the checklist)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run_id = (self.record(audit_id).data or {}).get("flow_run_id")
            if run_id:
                return run_id
            time.sleep(0.5)
        raise AssertionError(f"no flow run started for {audit_id}\n{self.stack.logs()}")

    def wait_pause(self, run_id: str, key_prefix: str, timeout: float = 120) -> dict:
        """Wait until the run is suspended at the wait whose key starts with ``key_prefix``."""
        deadline = time.monotonic() + timeout
        state: dict = {}
        while time.monotonic() < deadline:
            state = self.stack.api("GET", f"/flow_runs/{run_id}").json().get("state") or {}
            key = (state.get("state_details") or {}).get("pause_key") or ""
            if state.get("type") == "PAUSED" and key.startswith(key_prefix):
                return state
            if state.get("type") in ("FAILED", "CRASHED", "CANCELLED", "COMPLETED"):
                break
            time.sleep(0.5)
        raise AssertionError(
            f"run {run_id} not suspended at {key_prefix!r}: {state.get('type')} {state.get('state_details')}\n"
            + self.stack.logs()
        )

    def slack_texts_to(self, person: str) -> list[str]:
        channel = FakeSlack.dm_channel_for(SLACK_ID[person])
        return [  # the text and the blocks (where an approval request names its id and buttons)
            c.params.get("text", "") + json.dumps(c.params.get("blocks") or [])
            for c in self.slack.calls_to("chat.postMessage")
            if c.params.get("channel") == channel
        ]

    def wait_slack(self, person: str, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in t for t in self.slack_texts_to(person)):
                return
            time.sleep(0.2)
        raise AssertionError(f"no Slack message to {person} with {text!r}: {self.slack_texts_to(person)}")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    repo = tmp_path_factory.mktemp("audit") / "repo"
    scaffold(repo, org_name="Audit Test GmbH", git=True)
    with FakeSlack(users=USERS) as slack:
        env = {"SLACK_BOT_TOKEN": slack.token, "SLACK_SIGNING_SECRET": "test-signing-secret"}
        stack = start_stack(repo, {**env, "QMS_SLACK_BASE_URL": slack.base_url})
        w = World(repo, slack, stack)
        try:
            yield w
        finally:
            stack.kill()
            w.db.dispose()


def test_an_internal_audit_runs_through_qms_up_to_its_signed_report(world: World) -> None:
    today = datetime.now(UTC).date().isoformat()  # the audit scan starts audits whose (UTC) date has come

    # plan: the process owner is refused (and the refusal recorded); ben, impartial, is planned
    refused = world.qms("audit", "plan", "data-management", "--auditor", "dev", "--date", today, who="ana")
    assert refused.returncode == 1 and "dev may not audit data-management" in refused.stderr, refused.stderr
    assert world.trail("audit.plan-refused", "audit-plan:data-management")
    planned = world.qms("audit", "plan", "data-management", "--auditor", "ben", "--date", today, who="ana")
    assert planned.returncode == 0, planned.stderr
    audit_id = re.search(r"(AUD-\d{4}-\d{4}) planned", planned.stdout).group(1)
    assert world.record(audit_id).status == "planned"
    world.wait_slack("ben", f"{audit_id}: internal audit of Data management planned for {today}; you are the auditor")
    world.wait_slack("dev", "you are the auditee")

    # a CAPA of the process from the last 12 months: the population item 2 (Art. 17(1)(f)) samples
    opened = world.qms(
        "capa", "open", "--title", "Labels drifted in the retraining set", "--source", "incident",
        "--owner", "dev", "--process", "data-management", who="ana",
    )  # fmt: skip
    assert opened.returncode == 0, opened.stderr
    sampled_capa = re.search(r"(CAPA-\d{4}-\d{4}) opened", opened.stdout).group(1)

    # the daily scan, run now, starts the audit's run; the run builds the checklist and waits for the auditor
    runs_before = world.stack.api("POST", "/flow_runs/count", json=AUDIT_RUNS).json()
    scan = world.stack.prefect("deployment", "run", "audit-scan/daily", "--watch")
    assert scan.returncode == 0, scan.stdout + scan.stderr
    run_id = world.run_of(audit_id)
    world.wait_pause(run_id, f"audit-{audit_id.lower()}-items-")
    run = world.stack.api("GET", f"/flow_runs/{run_id}").json()
    assert run["parameters"] == {"audit_id": audit_id}
    assert world.stack.api("POST", "/flow_runs/count", json=AUDIT_RUNS).json() == runs_before + 1
    audit = world.record(audit_id)
    assert audit.status == "in_progress" and [i["n"] for i in audit.data["items"]] == [1, 2]
    assert audit.data["items"][1]["population"] == [sampled_capa] and audit.data["items"][1]["sample"] == [sampled_capa]
    assert len(world.trail("audit.seed-recorded", f"audit:{audit_id}")) == 1

    # every item: item 1 conforms; item 2 is a minor nonconformity, first with evidence that does not resolve
    done = world.qms(
        "audit", "record", audit_id, "--item", "1", "--result", "conform",
        "--evidence", "SOP-DAT-001", "--note", "Procedure approved and in use.", who="ben",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    note = "SOP-DAT-001 4.2: dataset provenance is not recorded for the retraining set."
    bad = world.qms(
        "audit", "record", audit_id, "--item", "2", "--result", "minor",
        "--evidence", "document:SOP-DAT-001", "--evidence", "CAPA-2099-9999", "--note", note, who="ben",
    )  # fmt: skip
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "evidence 'CAPA-2099-9999' does not resolve" in bad.stderr and "Traceback" not in bad.stderr
    audit = world.record(audit_id)
    assert audit.data["items"][0]["result"] == "conform"  # nothing lost
    assert not audit.data["items"][1].get("result") and not audit.data.get("findings")
    with world.db.read() as s:  # no finding, no CAPA of the refused call
        assert set(s.scalars(select(RecordRow.id).where(RecordRow.kind.in_(("capa", "finding"))))) == {sampled_capa}
    [refusal] = world.trail("audit.record-refused", f"audit:{audit_id}")
    assert json.loads(refusal.after_json)["evidence"] == ["document:SOP-DAT-001", "CAPA-2099-9999"]
    done = world.qms(
        "audit", "record", audit_id, "--item", "2", "--result", "minor",
        "--evidence", "document:SOP-DAT-001", "--evidence", sampled_capa, "--note", note, who="ben",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    raised = re.search(r"(FND-\d{4}-\d{4}) raised, (CAPA-\d{4}-\d{4}) opened", done.stdout)
    assert raised, done.stdout
    finding_id, capa_id = raised.groups()
    assert world.stack.flow_state(run_id) == "PAUSED"  # recording resumes nothing: the conclusion does

    # the conclusion resumes the run, which waits for the report's signatures
    concluded = world.qms("audit", "conclude", audit_id, "--conclusion", "Implemented; one minor NC.", who="ben")
    assert concluded.returncode == 0, concluded.stderr
    request_id = re.search(r"report (APR-\d{4}-\d{4}) to sign", concluded.stdout).group(1)
    world.wait_pause(run_id, f"approval-{request_id.lower()}-")
    with world.db.read() as s:
        request = s.get(ApprovalRequestRow, request_id)
        assert request.flow_run_id == run_id and request.approvers == ["ben", "ana"]
    for person in ("ben", "ana"):  # each signer is asked in Slack
        world.wait_slack(person, f'"value": "{request_id}"')

    # someone not asked to sign is refused; the auditor signs, a quality lead approves: the run completes
    refused = world.qms("approve", request_id, "--decision", "approve", who="chloe")
    assert refused.returncode == 1 and "chloe is not a designated approver" in refused.stderr, refused.stderr
    assert world.stack.flow_state(run_id) == "PAUSED"
    for person in ("ben", "ana"):
        signed = world.qms("approve", request_id, "--decision", "approve", who=person)
        assert signed.returncode == 0, signed.stderr
    world.stack.wait_state(run_id, "COMPLETED", timeout=120)
    assert world.stack.flow_state(run_id) == "COMPLETED"

    audit = world.record(audit_id)
    closed = audit.data["stages"]["closed"]
    assert audit.status == "closed" and closed["approval"] == request_id
    assert sorted(closed["signed_by"]) == ["ana", "ben"]
    assert {i["reviewer"] for i in audit.data["items"]} == {"ana"}
    with world.db.read() as s:
        signers = set(s.scalars(select(SignatureRow.signer).where(SignatureRow.request_id == request_id)))
    assert signers == {"ana", "ben"}
    report = world.repo / ".qms" / "rendered" / "audits" / audit_id
    html = (report / f"{audit_id}.html").read_text()
    assert finding_id in html and "Ben Brandt" in html and "Ana Alves" in html

    # the minor finding and its CAPA, linked both ways, waiting for the finding's re-check to close
    finding, capa = world.record(finding_id), world.record(capa_id)
    assert finding.kind == "finding" and finding.status == "open" and finding.owner == "dev"
    assert finding.data["capa"] == capa_id and finding.data["audit"] == audit_id and capa_id != sampled_capa
    assert finding.data["evidence"] == ["document:SOP-DAT-001", f"capa:{sampled_capa}"]
    assert capa.kind == "capa" and capa.data["source"] == "audit" and capa.owner == "dev"
    assert f"finding:{finding_id}" in capa.links and f"capa:{capa_id}" in audit.links
    listed = world.qms("capa", "list")
    assert listed.returncode == 0 and capa_id in listed.stdout, listed.stdout + listed.stderr

    # the next scan starts no second run for the audit
    scan = world.stack.prefect("deployment", "run", "audit-scan/daily", "--watch")
    assert scan.returncode == 0, scan.stdout + scan.stderr
    assert world.stack.api("POST", "/flow_runs/count", json=AUDIT_RUNS).json() == runs_before + 1

    verified = world.qms("verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
