"""End to end over `qms up`: segregation of duties from git authorship, obsolete copies, and runs started
from outside with parameters a flow does not take.

Chloe commits a change to SOP-DAT-001; Dev submits it. Chloe is an author of the change (its git author),
so her Slack approval is refused and recorded; Ana's approval makes v1.1 effective, and v1.0's
controlled copy is re-issued stamped OBSOLETE, naming the approval that superseded it.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
from fakes.slack import FakeSlack
from identityutil import account
from test_document_review import SECRET, SLACK_ID, USERS, World

from qmsflow.scaffold import scaffold
from qmsflow.store.tables import ApprovalRequestRow, SubmissionRow, TrailEventRow

pytestmark = [pytest.mark.prefect, pytest.mark.slow]
DOC, PATH = "SOP-DAT-001", "procedures/SOP-DAT-001-data-management.md"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    repo = tmp_path_factory.mktemp("segregation") / "repo"
    scaffold(repo, org_name="Segregation Test GmbH", git=True)
    with FakeSlack(users=USERS) as slack:
        w = World(
            repo,
            slack,
            {"SLACK_BOT_TOKEN": slack.token, "SLACK_SIGNING_SECRET": SECRET, "QMS_SLACK_BASE_URL": slack.base_url},
        )
        w.start()
        for approver in ("ana", "chloe"):  # approvers sign from Slack with their own account (one per person)
            account(w.db, approver)
        try:
            yield w
        finally:
            w.stack.kill()
            w.db.dispose()


def commit_as(world: World, name: str, email: str, line: str) -> None:
    path = world.repo / PATH
    path.write_text(path.read_text() + f"\n{line}\n")
    subprocess.run(
        ["git", "-C", str(world.repo), "-c", f"user.name={name}", "-c", f"user.email={email}", "commit", "-qam", line],
        check=True,
    )


def approve_all(world: World, request_id: str, people: list[str]) -> None:
    for person in people:
        assert world.click(request_id, person).status_code == 200
    world.stack.wait_state(world.request(request_id).flow_run_id, "COMPLETED")


def test_a_git_author_cannot_approve_the_change_submitted_by_someone_else(world: World) -> None:
    first = world.submit(DOC, who="dev")  # v1.0, scaffolded by qmsflow: dev is its only author
    assert first.authors == ["dev"] and first.required == 2  # all named approvers (chloe, ana) must sign
    approve_all(world, first.id, ["chloe", "ana"])
    assert world.version(DOC, "1.0").status == "effective"

    commit_as(world, "Chloe Chen", "chloe@example.com", "Labelling guideline v2 applies from 2027.")
    commit_as(world, "Eve Extern", "eve@contractor.example", "Typo fixed.")
    change = world.submit(DOC, "--comment", "labelling guideline v2", who="dev")
    assert change.author == "dev" and change.authors == ["dev", "chloe"] and change.required == 1
    assert change.data["unmapped_authors"] == ["Eve Extern <eve@contractor.example>"]
    deadline = time.monotonic() + 30
    asked = []
    while not asked and time.monotonic() < deadline:
        asked = [c for c in world.slack.calls_to("chat.postMessage") if change.id in json.dumps(c.params["blocks"])]
        time.sleep(0.2)
    assert [c.params["channel"] for c in asked] == [FakeSlack.dm_channel_for(SLACK_ID["ana"])]  # not chloe
    assert "Eve Extern <eve@contractor.example>" in json.dumps(asked[0].params["blocks"])

    assert world.click(change.id, "chloe").status_code == 200  # self-approval through git authorship
    [refused] = world.wait_trail("approval.refused", f"approval:{change.id}")
    assert refused.actor == "chloe" and "segregation of duties" in json.loads(refused.after_json)["reason"]
    assert world.request(change.id).status == "pending"

    approve_all(world, change.id, ["ana"])
    assert world.version(DOC, "1.1").status == "effective"
    old = world.version(DOC, "1.0")
    assert old.status == "obsolete" and old.approval_request == change.id
    [obsoleted] = world.trail("document-version.obsolete", f"document-version:{DOC}@1.0")
    assert obsoleted.actor == "ana" and json.loads(obsoleted.after_json)["approval_request"] == change.id
    old_copy = world.rendered(DOC, "1.0").with_suffix(".html").read_text()
    assert "OBSOLETE — superseded by version 1.1" in old_copy and change.id in old_copy
    assert "OBSOLETE" not in world.rendered(DOC, "1.1").with_suffix(".html").read_text()
    assert world.qms("verify").returncode == 0


def test_an_outsider_gets_401_from_the_prefect_api_of_the_stack(world: World) -> None:
    """The attack of issue 11: a POST to create_flow_run with foreign parameters. Without the stack's
    credential (generated at each start, in .qms/stack.json, 0600) Prefect answers 401 and no run exists."""
    import base64
    import stat

    deployment = world.stack.api("GET", "/deployments/name/document-review/on-demand").json()
    runs_before = world.stack.api("POST", "/flow_runs/count", json={}).json()
    attack = {"parameters": {"submission_id": "SUB-2099-9999", "config": "/tmp/attacker/qms.yaml"}}
    create = f"{world.stack.api_url}/deployments/{deployment['id']}/create_flow_run"
    wrong = "Basic " + base64.b64encode(b"qmsflow:guessed").decode()
    for headers in ({}, {"Authorization": wrong}, {"Authorization": "Bearer pnu_guessed"}):
        assert httpx.post(create, json=attack, headers=headers, timeout=10).status_code == 401
        assert (
            httpx.post(f"{world.stack.api_url}/flow_runs/count", json={}, headers=headers, timeout=10).status_code
            == 401
        )
        assert (
            httpx.post(f"{world.stack.api_url}/flow_runs/filter", json={}, headers=headers, timeout=10).status_code
            == 401
        )
    assert world.stack.api("POST", "/flow_runs/count", json={}).json() == runs_before
    state_file = world.repo / ".qms" / "stack.json"
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    assert httpx.get(f"{world.stack.api_url}/health", timeout=10).status_code == 200  # the probe stays open


def test_runs_started_from_outside_with_foreign_parameters_change_nothing(world: World) -> None:
    """An insider (with the stack's credential) still cannot make a run take a config or an identity."""
    deployment = world.stack.api("GET", "/deployments/name/document-review/on-demand").json()
    with world.db.read() as s:
        requests_before = s.query(ApprovalRequestRow).count()
        submission = s.query(SubmissionRow).order_by(SubmissionRow.created_at).first()
    attacks = {
        "foreign config": {"submission_id": submission.id, "config": "/tmp/attacker/qms.yaml"},
        "identity as a parameter": {"submission_id": submission.id, "submitted_by": "ben"},
        "unknown submission": {"submission_id": "SUB-2099-9999"},
        "someone else's submission": {"submission_id": submission.id},
    }
    runs = {}
    for name, parameters in attacks.items():
        created = world.stack.api(
            "POST", f"/deployments/{deployment['id']}/create_flow_run", json={"parameters": parameters}
        )
        if created.status_code >= 400:  # refused by Prefect before any run: nothing to record
            assert "config" in parameters or "submitted_by" in parameters, (name, created.status_code, created.text)
            assert created.status_code < 500, (name, created.status_code, created.text)
            runs[name] = None
            continue
        runs[name] = created.json()["id"]
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # refused in Prefect's parameter binding (crashed) or by the first step
        states = {name: world.stack.flow_state(run_id) for name, run_id in runs.items() if run_id}
        with world.db.read() as s:
            refused = list(s.query(TrailEventRow).filter(TrailEventRow.action == "flow.refused"))
        if all(state in ("FAILED", "CRASHED") for state in states.values()) and len(refused) >= len(states):
            break
        time.sleep(1)
    assert all(state in ("FAILED", "CRASHED") for state in states.values()), states
    with world.db.read() as s:
        assert s.query(ApprovalRequestRow).count() == requests_before
    reasons = {json.loads(e.after_json).get("flow_run_id"): json.loads(e.after_json)["reason"] for e in refused}
    assert all(e.actor == "qmsflow" for e in refused)
    for name, run_id in runs.items():
        if run_id is not None:
            assert str(run_id) in reasons, f"{name}: the refused run is not in the trail"
    assert "no document review submission 'SUB-2099-9999'" in reasons[str(runs["unknown submission"])]
    if runs["foreign config"]:
        assert "parameters the flow does not take: config" in reasons[str(runs["foreign config"])]
    assert "belongs to flow run" in reasons[str(runs["someone else's submission"])]
