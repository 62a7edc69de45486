"""The fake Jira Cloud (tests/fakes/jira.py), driven through the real ``jira.JIRA`` client.

The contract tests validate the fake's raw JSON bodies against Atlassian's published OpenAPI spec of the
Jira Cloud platform REST API v3 (shared/contracts/jira-cloud-platform-rest-v3.openapi.json), so that the
fake cannot drift into answering something real Jira never would. The ``jira`` library speaks v2, whose
paths and bodies mirror v3 except for rich text: v3 carries the issue description and comment bodies as
Atlassian Document Format (ADF) objects where v2 has plain strings. That is the one difference allowed
(``as_v3``); the other departures from the spec as written are listed in ``_patched_spec``.

Findings about the ``jira`` library (3.10.x) that the fault tests pin down:

- ``ResilientSession`` retries HTTP 429 always and HTTP 503 only when a ``Retry-After`` header is present,
  sleeping ``min(max_retry_delay, 2 * Retry-After) * uniform(0.5, 1)``; without ``Retry-After`` a 429 waits
  ``10 * 2**attempt`` seconds (capped at ``max_retry_delay``, 60) and a 503 is not retried at all.
- It retries connection errors (``requests.ConnectionError``: a connection closed without an answer) for
  every method, POST included, after ``10 * 2**attempt`` seconds (capped likewise). A create whose
  response is lost is therefore sent again and Jira gets a duplicate issue, unless the client is built with
  ``max_retries=0`` and the app looks for its label before trying again.
- On Jira Cloud, ``search_issues`` is routed to ``/search/jql`` (``enhanced_search_issues``) when
  ``startAt`` is 0; with ``startAt > 0`` it raises without any request. A client that does not know it talks
  to Cloud (``get_server_info=False``) calls the removed ``/search`` and gets 410.
- ``add_remote_link`` first asks ``/rest/applinks/latest/listApplicationlinks``, which a non-admin may not
  read; the library then warns ("Unable to gather applicationlinks") and adds the link anyway.

Tests that need the library's retry sleeps short set ``client._session.max_retry_delay = 0`` (an attribute
of ``ResilientSession``; ``JIRA()`` takes no argument for it). The 429 test keeps the real wait (1-2 s).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import os
import re
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from fakes.jira import Call, FakeJira
from jira import JIRA, JIRAError
from jsonschema import Draft4Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

SPEC_PATH = Path(__file__).resolve().parents[3] / "shared" / "contracts" / "jira-cloud-platform-rest-v3.openapi.json"
SPEC_URI = "urn:jira:cloud-platform:rest-v3"
LABEL = "qms-CAPA-2026-0001"
T0 = datetime(2026, 11, 26, 10, 0, tzinfo=timezone.utc)


# ---------------------------------------------------------------------- the spec


def _nullable_as_any_of(node: Any) -> Any:
    """OpenAPI 3.0 writes "or null" as ``nullable: true``, which JSON Schema does not know: a draft 4
    validator would reject the null. Turn each such schema into ``anyOf [schema, {"type": "null"}]``."""
    if isinstance(node, dict):
        node = {k: _nullable_as_any_of(v) for k, v in node.items()}
        if node.pop("nullable", False) is True:
            return {"anyOf": [node, {"type": "null"}]}
        return node
    if isinstance(node, list):
        return [_nullable_as_any_of(v) for v in node]
    return node


def _patched_spec(spec: dict) -> dict:
    spec = _nullable_as_any_of(copy.deepcopy(spec))
    # Deviation 1: GET /issue/{issueIdOrKey}/remotelink declares a single RemoteIssueLink as its 200 body,
    # but Jira answers an array of them (the library iterates it: JIRA.remote_links). Validate the array.
    get_links = spec["paths"]["/rest/api/3/issue/{issueIdOrKey}/remotelink"]["get"]["responses"]["200"]
    get_links["content"]["application/json"]["schema"] = {
        "type": "array",
        "items": {"$ref": "#/components/schemas/RemoteIssueLink"},
    }
    # Deviation 2: ChangeDetails types from/fromString/to/toString as plain strings, but Jira sends null
    # for the empty side of a change (resolution set on Done: "from": null; text fields such as summary
    # carry only fromString/toString and null ids). The fake does the same; allow null there.
    details = spec["components"]["schemas"]["ChangeDetails"]["properties"]
    for name in ("from", "fromString", "to", "toString"):
        details[name] = {"anyOf": [details[name], {"type": "null"}]}
    # Not a deviation but worth knowing: the spec says "format": "date-time" for serverTime, created,
    # updated ..., while Jira writes "2026-11-26T10:00:00.000+0000" (no colon in the offset, so not RFC
    # 3339). The fake writes what Jira writes; formats are not checked (no format_checker), as for Slack.
    return spec


@lru_cache(maxsize=1)
def _load() -> tuple[dict, Registry]:
    spec = _patched_spec(json.loads(SPEC_PATH.read_text(encoding="utf-8")))
    registry = Registry().with_resource(SPEC_URI, Resource.from_contents(spec, default_specification=DRAFT4))
    return spec, registry


@pytest.fixture(scope="module")
def spec() -> dict:
    if not SPEC_PATH.is_file():
        message = f"Jira OpenAPI spec not found at {SPEC_PATH}"
        if os.environ.get("CI"):
            pytest.fail(message + " — CI is set, so this is a failure, not a skip")
        pytest.skip(message)
    return _load()[0]


def schema_validator(pointer: str) -> Draft4Validator:
    """A draft 4 validator for the schema at ``pointer`` (a JSON pointer into the spec) whose
    ``#/components/schemas/...`` refs resolve against the whole document."""
    return Draft4Validator({"$ref": f"{SPEC_URI}#{pointer}"}, registry=_load()[1])


def component(name: str) -> Draft4Validator:
    return schema_validator(f"/components/schemas/{name}")


@lru_cache(maxsize=1)
def _v3_templates() -> list[tuple[int, str, re.Pattern[str]]]:
    spec = _load()[0]
    found = []
    for template in spec["paths"]:
        if template.startswith("/rest/api/3/"):
            regex = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
            found.append((template.count("{"), template, re.compile(regex)))
    return sorted(found)  # literal paths (fewer parameters) first: /issue/bulk before /issue/{issueIdOrKey}


def v3_template(v2_path: str) -> str:
    path = re.sub(r"^/rest/api/(2|latest)/", "/rest/api/3/", v2_path.rstrip("/"))
    for _, template, regex in _v3_templates():
        if regex.fullmatch(path):
            return template
    raise AssertionError(f"no v3 path in the spec matches {v2_path}")


def response_pointer(template: str, method: str, status: int) -> str | None:
    """The pointer to the JSON schema of that response, or None when the spec gives none."""
    responses = _load()[0]["paths"][template][method.lower()]["responses"]
    response = responses.get(str(status)) or responses.get("default")
    if not response or "schema" not in response.get("content", {}).get("application/json", {}):
        return None
    escaped = template.replace("~", "~0").replace("/", "~1")
    key = str(status) if str(status) in responses else "default"
    return f"/paths/{escaped}/{method.lower()}/responses/{key}/content/application~1json/schema"


def _adf(text: str) -> dict:
    return {
        "type": "doc",
        "version": 1,
        "content": [{"type": "paragraph", "content": [{"type": "text", "text": text}]}],
    }


def as_v3(body: Any) -> Any:
    """The v2 body as v3 would carry it: the issue description and comment bodies (v2: plain strings, or
    null for an empty description) become ADF documents. Nothing else is changed; anything other than a
    string in those places fails here."""
    body = copy.deepcopy(body)

    def comment(c: dict) -> None:
        assert isinstance(c["body"], str), f"v2 comment body must be a string: {c['body']!r}"
        c["body"] = _adf(c["body"])

    def issue(i: dict) -> None:
        fields = i.get("fields", {})
        if "description" in fields:
            assert fields["description"] is None or isinstance(fields["description"], str), fields["description"]
            if fields["description"] is not None:
                fields["description"] = _adf(fields["description"])
        if isinstance(fields.get("comment"), dict):
            for c in fields["comment"]["comments"]:
                comment(c)

    if isinstance(body, dict):
        if isinstance(body.get("issues"), list):
            for i in body["issues"]:
                issue(i)
        elif isinstance(body.get("fields"), dict):
            issue(body)
        elif isinstance(body.get("comments"), list):
            for c in body["comments"]:
                comment(c)
        elif "body" in body and "author" in body:
            comment(body)
    return body


def _problems(validator: Draft4Validator, body: Any) -> list[str]:
    return [f"- at {list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(body)]


def assert_conforms(method: str, v2_path: str, status: int, body: Any) -> str:
    """Validates a raw v2 body against the v3 response schema of the same operation and status; error
    bodies (4xx/5xx) against ErrorCollection, which is what Jira answers though the spec names it for a
    few operations only. Issues are also checked field by field (``assert_issue_fields_conform``).
    Returns the v3 template matched."""
    template = v3_template(v2_path)
    if status >= 400:
        validator = component("ErrorCollection")
    else:
        pointer = response_pointer(template, method, status)
        assert pointer is not None, f"the spec has no JSON body for {method} {template} {status}"
        validator = schema_validator(pointer)
    v3 = as_v3(body)
    problems = _problems(validator, v3)
    assert not problems, f"{method} {v2_path} {status} does not conform to {template}: {body}\n" + "\n".join(problems)
    if status < 400 and isinstance(v3, dict):
        for issue in v3.get("issues", [v3] if "fields" in v3 else []):
            assert_issue_fields_conform(issue)
    return template


# IssueBean.fields is free-form in the spec (additionalProperties {}). Hold each field the fake answers to
# the spec's schema for that kind of value, which is stricter than the spec requires.
_FIELD_SCHEMAS = {
    "status": "StatusDetails",
    "issuetype": "IssueTypeDetails",
    "project": "ProjectDetails",
    "priority": "Priority",
    "creator": "UserDetails",
    "reporter": "UserDetails",
    "assignee": "UserDetails",
    "comment": "PageOfComments",
}


def assert_issue_fields_conform(issue: dict) -> None:
    fields = issue.get("fields", {})
    problems = []
    for name, value in fields.items():
        if value is None:
            continue
        if name in _FIELD_SCHEMAS:
            problems += [f"{name}: {p}" for p in _problems(component(_FIELD_SCHEMAS[name]), value)]
        elif name == "issuelinks":
            for link in value:
                problems += [
                    f"issuelinks: {p}"
                    for p in _problems(
                        component("IssueLink"),
                        {
                            # IssueLink requires both sides (it is also the POST body); an issue lists only the other.
                            "inwardIssue": {},
                            "outwardIssue": {},
                            **link,
                        },
                    )
                ]
        elif name == "labels":
            assert isinstance(value, list) and all(isinstance(x, str) for x in value), value
        elif name in ("summary", "created", "updated", "statuscategorychangedate", "resolutiondate"):
            assert isinstance(value, str), (name, value)
    assert not problems, f"issue {issue.get('key')} fields do not conform:\n" + "\n".join(problems)


def assert_call_conforms(call: Call) -> str | None:
    if call.response is None or call.dropped or not call.path.startswith("/rest/api/2/"):
        return None
    return assert_conforms(call.method, call.path, call.status, call.response)


# ---------------------------------------------------------------------- fixtures


class Clock:
    """A settable clock for FakeJira.clock."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeJira]:
    with FakeJira() as fake:
        yield fake


@pytest.fixture
def fake(fake_server: FakeJira) -> Iterator[FakeJira]:
    """The shared server, reset; afterwards every JSON body it answered in the test must conform."""
    fake_server.reset()
    fake_server.clock = Clock(T0)
    yield fake_server
    calls = list(fake_server.calls)
    fake_server.reset()
    if SPEC_PATH.is_file():
        for call in calls:
            assert_call_conforms(call)


def make_client(fake: FakeJira, **kwargs: Any) -> JIRA:
    return JIRA(server=fake.url, basic_auth=(fake.email, fake.token), timeout=10, **kwargs)


@pytest.fixture
def client(fake: FakeJira) -> Iterator[JIRA]:
    jira = make_client(fake)
    yield jira
    jira.close()


def create(
    jira: JIRA, summary: str = "CAPA-2026-0001: missing calibration record", label: str = LABEL, **extra: Any
) -> Any:
    fields = {
        "project": {"key": "QMS"},
        "summary": summary,
        "issuetype": {"name": "Task"},
        "labels": [label],
        "description": "Found during the internal audit.",
        **extra,
    }
    return jira.create_issue(fields=fields)


def statuses_since(fake: FakeJira, since: int, method: str, path: str) -> list[int | None]:
    """The statuses answered to ``method path`` (exact path) among the calls from index ``since`` on."""
    return [c.status for c in fake.calls[since:] if c.method == method and c.path == path]


def only(calls: list[Call]) -> Call:
    assert len(calls) == 1, calls
    return calls[0]


# ---------------------------------------------------------------------- 0. lifecycle


def test_url_and_lifecycle() -> None:
    fake = FakeJira()
    with pytest.raises(RuntimeError):
        _ = fake.url
    with fake:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", fake.url)
        assert make_client(fake).server_info()["baseUrl"] == fake.url
    with pytest.raises(RuntimeError):
        _ = fake.url
    with pytest.raises(ValueError):
        FakeJira(project="qms")


# ---------------------------------------------------------------------- 1. contract


def test_validator_really_checks(spec: dict) -> None:
    """The validator itself: refs resolve, nullable is honoured, and it rejects what the spec forbids."""
    template = "/rest/api/3/issue"
    ok = {"id": "10000", "key": "QMS-1", "self": "http://127.0.0.1:1/rest/api/2/issue/10000"}
    assert not _problems(schema_validator(response_pointer(template, "POST", 201)), ok)
    for bad in ({**ok, "id": 10000}, {**ok, "extra": 1}):
        assert _problems(schema_validator(response_pointer(template, "POST", 201)), bad)
    assert _problems(component("ServerInformation"), {"versionNumbers": ["1001"]})
    assert _problems(component("StatusDetails"), {"statusCategory": {"id": "4"}})  # int64 in the spec
    assert _problems(component("ErrorCollection"), {"errorMessages": "x"})
    nullable = component("Visibility")  # identifier: nullable string
    assert not _problems(nullable, {"identifier": None}) and _problems(nullable, {"identifier": 1})
    with pytest.raises(AssertionError):  # only strings may become ADF
        as_v3({"fields": {"description": {"type": "doc"}}})
    assert (
        v3_template("/rest/api/2/issue/QMS-1/remotelink/10000")
        == "/rest/api/3/issue/{issueIdOrKey}/remotelink/{linkId}"
    )
    assert v3_template("/rest/api/2/search/jql") == "/rest/api/3/search/jql"


def test_contract_of_each_operation_the_app_uses(spec: dict, fake: FakeJira, client: JIRA) -> None:
    client.fields()
    client.myself()
    issue = create(client)
    client.add_comment(issue.key, "Root cause analysis started.")
    client.transitions(issue.key)
    with pytest.warns(Warning, match="applicationlinks"):
        client.add_remote_link(
            issue.key,
            {"url": "https://qms.example/capa/2026-0001", "title": "CAPA-2026-0001"},
            globalId="qms:CAPA-2026-0001",
            relationship="QMS record",
        )
    client.remote_links(issue.key)
    client.issue(issue.key, expand="names,transitions,changelog")
    client.comments(issue.key)
    client.issue_link_types()
    client.enhanced_search_issues(f'project = QMS AND labels = "{LABEL}"', fields=["summary", "status", "labels"])
    client.enhanced_search_issues(f"labels = {LABEL}", use_post=True, json_result=True)

    checked = {}
    for method, path in (
        ("GET", "/rest/api/2/serverInfo"),
        ("GET", "/rest/api/2/field"),
        ("GET", "/rest/api/2/myself"),
        ("POST", "/rest/api/2/issue"),
        ("GET", f"/rest/api/2/issue/{issue.key}"),
        ("POST", f"/rest/api/2/issue/{issue.key}/comment"),
        ("GET", f"/rest/api/2/issue/{issue.key}/comment"),
        ("GET", f"/rest/api/2/issue/{issue.key}/transitions"),
        ("POST", f"/rest/api/2/issue/{issue.key}/remotelink"),
        ("GET", f"/rest/api/2/issue/{issue.key}/remotelink"),
        ("GET", "/rest/api/2/issueLinkType"),
        ("GET", "/rest/api/2/search/jql"),
        ("POST", "/rest/api/2/search/jql"),
    ):
        calls = [c for c in fake.calls_to(method, path) if c.path == path]
        assert calls, f"the client made no {method} {path}"
        for call in calls:
            checked[(method, path)] = (call.status, assert_call_conforms(call))
    assert checked[("POST", "/rest/api/2/issue")] == (201, "/rest/api/3/issue")
    assert checked[("POST", f"/rest/api/2/issue/{issue.key}/remotelink")] == (
        201,
        "/rest/api/3/issue/{issueIdOrKey}/remotelink",
    )

    got = only([c for c in fake.calls_to("GET", f"/rest/api/2/issue/{issue.key}") if c.query.get("expand")]).response
    assert got["key"] == "QMS-1" and got["self"] == f"{fake.url}/rest/api/2/issue/{got['id']}"
    assert got["fields"]["status"]["name"] == "To Do" and got["fields"]["status"]["statusCategory"]["key"] == "new"
    assert got["fields"]["description"] == "Found during the internal audit."  # v2: a string
    assert got["fields"]["comment"]["comments"][0]["body"] == "Root cause analysis started."
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000", got["fields"]["updated"])
    assert got["names"]["summary"] == "Summary" and {t["name"] for t in got["transitions"]} == {
        "Start",
        "Review",
        "Done",
    }
    post_search = only(fake.calls_to("POST", "/rest/api/2/search/jql"))
    assert post_search.body["fields"] == ["*all"] and post_search.response["issues"][0]["key"] == "QMS-1"

    with httpx.Client(base_url=fake.url, auth=(fake.email, fake.token), timeout=10) as http:
        bare = http.post("/rest/api/2/search/jql", json={"jql": f"labels = {LABEL}"})  # no fields asked for
    assert bare.json() == {"issues": [{"id": issue.id}], "isLast": True}  # Jira Cloud's default: ids only
    assert_conforms("POST", "/rest/api/2/search/jql", bare.status_code, bare.json())


def test_contract_of_error_bodies(spec: dict, fake: FakeJira, client: JIRA) -> None:
    with pytest.raises(JIRAError) as info:
        client.issue("QMS-404")
    assert info.value.status_code == 404
    assert info.value.response.json() == {
        "errorMessages": ["Issue does not exist or you do not have permission to see it."],
        "errors": {},
    }
    with pytest.raises(JIRAError) as info:
        client.create_issue(fields={"project": {"key": "QMS"}, "issuetype": {"name": "Task"}})
    assert info.value.status_code == 400
    assert info.value.response.json()["errors"] == {"summary": "You must specify a summary of the issue."}
    with pytest.raises(JIRAError) as info:
        client.enhanced_search_issues("order by key desc")
    assert info.value.status_code == 400 and "Unbounded JQL" in info.value.text
    for call in fake.calls:  # also checked by the fixture; here explicitly for the error answers
        if call.status >= 400:
            assert assert_call_conforms(call)


# ---------------------------------------------------------------------- 1b. behaviour through the library


def test_create_get_update_by_id_and_key(fake: FakeJira, client: JIRA) -> None:
    issue = create(client)
    assert (issue.key, issue.id) == ("QMS-1", "10000")
    assert client.issue("10000").key == "QMS-1" and client.issue("qms-1").id == "10000"
    stored = fake.issues["QMS-1"]
    assert stored["fields"]["summary"].startswith("CAPA-2026-0001")
    assert (stored["fields"]["status"], stored["fields"]["issuetype"], stored["fields"]["project"]) == (
        "To Do",
        "Task",
        "QMS",
    )
    assert stored["fields"]["labels"] == [LABEL]
    assert stored["fields"]["created"] == stored["fields"]["updated"] == "2026-11-26T10:00:00.000+0000"

    fake.clock.advance(minutes=5)
    issue.update(fields={"summary": "CAPA-2026-0001: calibration record restored", "labels": [LABEL, "qms-open"]})
    assert issue.fields.summary == "CAPA-2026-0001: calibration record restored"  # reloaded from `self`
    assert issue.fields.updated == "2026-11-26T10:05:00.000+0000"
    put = only(fake.calls_to("PUT", "/rest/api/2/issue/"))
    assert put.status == 204 and put.path == "/rest/api/2/issue/10000"  # the library follows `self`
    issue.update(update={"labels": [{"remove": "qms-open"}, {"add": "qms-closed"}]})
    assert fake.issues["QMS-1"]["fields"]["labels"] == [LABEL, "qms-closed"]

    bob = create(client, summary="by names", label="qms-x")  # the library resolves project/type strings itself
    assert client.create_issue(project="QMS", summary="typed", issuetype="Bug").fields.issuetype.name == "Bug"
    assert bob.key == "QMS-2" and fake.calls_to("GET", "/rest/api/2/project/")


def test_rejects_what_jira_rejects(fake: FakeJira, client: JIRA) -> None:
    def error_of(call: Any) -> dict:
        with pytest.raises(JIRAError) as info:
            call()
        assert info.value.status_code == 400
        return info.value.response.json()["errors"]

    base = {"project": {"key": "QMS"}, "summary": "s", "issuetype": {"name": "Task"}}
    assert error_of(lambda: client.create_issue(fields={**base, "description": _adf("x")})) == {
        "description": "Operation value must be a string"
    }  # ADF belongs to v3
    assert "spaces" in error_of(lambda: client.create_issue(fields={**base, "labels": ["two words"]}))["labels"]
    assert error_of(lambda: client.create_issue(fields={**base, "project": {"key": "NOPE"}})) == {
        "project": "Specify a valid project ID or key"
    }
    assert error_of(lambda: client.create_issue(fields={**base, "issuetype": {"name": "Saga"}})) == {
        "issuetype": "Specify a valid issue type"
    }
    assert error_of(lambda: client.create_issue(fields={**base, "summary": "a\nb"})) == {
        "summary": "The summary is invalid because it contains newline characters."
    }
    issue = create(client)
    assert "cannot be set" in error_of(lambda: issue.update(fields={"status": {"name": "Done"}}))["status"]
    assert error_of(lambda: client.add_comment(issue.key, "")) == {"comment": "Comment body can not be empty!"}
    assert list(fake.issues) == ["QMS-1"]  # nothing half-created


def test_workflow_transitions_and_human_changes(fake: FakeJira, client: JIRA) -> None:
    issue = create(client)
    assert [(t["id"], t["name"], t["to"]["name"]) for t in client.transitions(issue)] == [
        ("11", "Start", "In Progress"),
        ("21", "Review", "In Review"),
        ("31", "Done", "Done"),
    ]
    fake.clock.advance(minutes=1)
    client.transition_issue(issue, "Start")  # by name: the library looks the id up first
    assert client.issue(issue.key).fields.status.name == "In Progress"
    assert "11" not in {t["id"] for t in client.transitions(issue)}
    client.transition_issue(issue, "31", comment="Verified effective.")  # by id, with a comment
    done = client.issue(issue.key)
    assert (done.fields.status.name, done.fields.resolution.name) == ("Done", "Done")
    assert done.fields.comment.comments[-1].body == "Verified effective."
    with pytest.raises(JIRAError) as info:
        client.transition_issue(issue, "31")  # not available from Done
    assert info.value.status_code == 400 and "not valid" in info.value.text

    fake.clock.advance(minutes=10)
    fake.set_status(issue.key, "To Do")  # a human reopens it in Jira
    reopened = client.issue(issue.key, expand="changelog")
    assert reopened.fields.status.name == "To Do" and reopened.fields.resolution is None
    assert reopened.fields.updated == "2026-11-26T10:11:00.000+0000"
    latest = reopened.raw["changelog"]["histories"][0]
    assert latest["author"]["displayName"] == "Quality Manager"
    assert latest["items"][0] == {
        "field": "status",
        "fieldtype": "jira",
        "fieldId": "status",
        "from": "5",
        "fromString": "Done",
        "to": "1",
        "toString": "To Do",
    }
    with pytest.raises(ValueError):
        fake.set_status(issue.key, "Closed")


def test_remote_links_upsert_by_global_id(fake: FakeJira, client: JIRA) -> None:
    issue = create(client)
    with pytest.warns(Warning, match="applicationlinks"):  # the library asks for app links first (401 here)
        first = client.add_remote_link(
            issue.key,
            {"url": "https://qms.example/r/1", "title": "CAPA-2026-0001"},
            globalId="qms:CAPA-2026-0001",
            relationship="QMS record",
        )
        again = client.add_remote_link(
            issue.key,
            {"url": "https://qms.example/r/1?v=2", "title": "CAPA (v2)"},
            globalId="qms:CAPA-2026-0001",
            relationship="QMS record",
        )
        other = client.add_remote_link(
            issue.key, {"url": "https://qms.example/r/9", "title": "Other"}, globalId="qms:OTHER"
        )
    assert first.id == again.id != other.id
    assert [c.status for c in fake.calls_to("POST", "/rest/api/2/issue/QMS-1/remotelink")] == [201, 200, 201]
    links = client.remote_links(issue.key)
    assert [(link.globalId, link.object.title) for link in links] == [
        ("qms:CAPA-2026-0001", "CAPA (v2)"),
        ("qms:OTHER", "Other"),
    ]
    assert links[0].relationship == "QMS record"
    assert len(fake.issues["QMS-1"]["remote_links"]) == 2
    assert client.remote_link(issue.key, str(other.id)).object.url == "https://qms.example/r/9"


def test_issue_links(fake: FakeJira, client: JIRA) -> None:
    capa, task = create(client), create(client, summary="Recalibrate scale", label="qms-task")
    response = client.create_issue_link("Blocks", capa.key, task.key)
    assert response.status_code == 201
    links = client.issue(capa.key).fields.issuelinks
    assert [(link.type.name, link.outwardIssue.key) for link in links] == [("Blocks", "QMS-2")]
    assert client.issue(task.key).fields.issuelinks[0].inwardIssue.key == "QMS-1"
    with pytest.raises(JIRAError) as info:
        client.create_issue_link("Causes", capa.key, task.key)
    assert info.value.status_code == 404


def test_authentication(fake: FakeJira) -> None:
    with pytest.raises(JIRAError) as info:
        JIRA(server=fake.url, basic_auth=(fake.email, "wrong-token"), timeout=10)
    assert info.value.status_code == 401  # the very first call, serverInfo, is refused
    anonymous = JIRA(server=fake.url, timeout=10)  # serverInfo is served anonymously, as Jira does
    with pytest.raises(JIRAError) as info:
        anonymous.issue("QMS-1")
    assert info.value.status_code == 401
    assert info.value.response.json() == {
        "errorMessages": ["Client must be authenticated to access this resource."],
        "errors": {},
    }
    make_client(fake).myself()
    assert fake.calls[-1].headers["authorization"].startswith("Basic ")
    assert [c.status for c in fake.calls] == [401, 200, 401, 200, 200]


# ---------------------------------------------------------------------- 2. faults through the library


def test_429_with_retry_after_is_waited_out(fake: FakeJira, client: JIRA) -> None:
    issue = create(client)
    since = len(fake.calls)
    fake.fail_next(429, retry_after=1, path_prefix="/rest/api/2/issue/")
    started = time.monotonic()
    assert client.issue(issue.key).key == "QMS-1"
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 5  # it waited 2 * Retry-After * uniform(0.5, 1) seconds
    assert statuses_since(fake, since, "GET", "/rest/api/2/issue/QMS-1") == [429, 200]
    assert fake.calls[since].response == {"errorMessages": ["Rate limit exceeded."], "errors": {}}


def test_503_is_retried_only_with_retry_after(fake: FakeJira, client: JIRA) -> None:
    client._session.max_retry_delay = 0  # keep the library's sleeps short
    issue = create(client)
    since = len(fake.calls)
    fake.fail_next(503, retry_after=1, path_prefix="/rest/api/2/issue/")
    assert client.issue(issue.key).key == "QMS-1"
    fake.fail_next(503, path_prefix="/rest/api/2/issue/")  # no Retry-After: the library gives up at once
    with pytest.raises(JIRAError) as info:
        client.issue(issue.key)
    assert info.value.status_code == 503
    fake.fail_next(429, path_prefix="/rest/api/2/issue/")  # a 429 without Retry-After is retried (backoff)
    assert client.issue(issue.key).key == "QMS-1"
    assert statuses_since(fake, since, "GET", "/rest/api/2/issue/QMS-1") == [503, 200, 503, 429, 200]


def test_retries_run_out(fake: FakeJira, client: JIRA) -> None:
    client._session.max_retry_delay = 0
    issue = create(client)
    since = len(fake.calls)
    fake.fail_next(503, times=4, path_prefix="/rest/api/2/issue/", retry_after=1)
    with pytest.raises(JIRAError) as info:
        client.issue(issue.key)
    assert info.value.status_code == 503
    assert statuses_since(fake, since, "GET", "/rest/api/2/issue/QMS-1") == [503] * 4  # 1 + max_retries (3)


def test_drop_next_is_retried_as_a_connection_error(fake: FakeJira, client: JIRA) -> None:
    client._session.max_retry_delay = 0  # else 10-20 s: ConnectionError backoff is 10 * 2**attempt
    issue = create(client)
    since = len(fake.calls)
    fake.drop_next(path_prefix="/rest/api/2/issue/QMS-1")
    assert client.issue(issue.key).key == "QMS-1"
    assert [(c.status, c.dropped) for c in fake.calls[since:]] == [(0, True), (200, False)]
    assert "QMS-1" in fake.issues

    plain = make_client(fake, max_retries=0)
    fake.drop_next(path_prefix="/rest/api/2/issue/QMS-1")
    with pytest.raises(requests.ConnectionError):
        plain.issue(issue.key)


def test_lost_create_response_makes_a_duplicate_when_the_library_retries(fake: FakeJira, client: JIRA) -> None:
    """The create happens, its answer is lost, ResilientSession sends the POST again: two issues."""
    client._session.max_retry_delay = 0
    fake.lose_response_next()
    issue = create(client)
    assert issue.key == "QMS-2"
    posts = fake.calls_to("POST", "/rest/api/2/issue")
    assert [(c.status, c.dropped) for c in posts] == [(201, True), (201, False)]
    assert posts[0].body == posts[1].body
    assert [k for k, i in fake.issues.items() if LABEL in i["fields"]["labels"]] == ["QMS-1", "QMS-2"]


def test_lost_create_response_guarded_by_a_label_lookup(fake: FakeJira) -> None:
    """What the app must do instead: no library retry for the create, and on a connection error look for
    the record's label before creating again."""
    jira = make_client(fake, max_retries=0)
    fake.lose_response_next()
    with pytest.raises(requests.ConnectionError):
        create(jira)
    found = jira.enhanced_search_issues(f'project = QMS AND labels = "{LABEL}"', fields=["summary"])
    assert [i.key for i in found] == ["QMS-1"]  # it was created: adopt it, do not create again
    assert list(fake.issues) == ["QMS-1"]


def test_injections_match_path_and_order(fake: FakeJira, client: JIRA) -> None:
    client._session.max_retry_delay = 0
    issue = create(client)
    fake.fail_next(404, path_prefix="/rest/api/2/issue/QMS-1/comment")
    fake.fail_next(400, path_prefix="/rest/api/2/issue/QMS-1/comment")
    assert client.issue(issue.key).key == "QMS-1"  # other paths untouched
    for status in (404, 400):
        with pytest.raises(JIRAError) as info:
            client.add_comment(issue.key, "x")
        assert info.value.status_code == status
    client.add_comment(issue.key, "x")
    assert [c.status for c in fake.calls_to("POST", "/rest/api/2/issue/QMS-1/comment")] == [404, 400, 201]
    with pytest.raises(ValueError):
        fake.fail_next(200)


# ---------------------------------------------------------------------- 3. search


def test_search_jql_pages_with_next_page_token(fake: FakeJira, client: JIRA) -> None:
    for n in range(120):
        client.create_issue(
            fields={
                "project": {"key": "QMS"},
                "summary": f"record {n}",
                "issuetype": {"name": "Task"},
                "labels": ["qms-bulk"],
            },
            prefetch=False,
        )
        fake.clock.advance(seconds=1)
    jql = "project = QMS AND labels = qms-bulk ORDER BY updated ASC"

    keys, token, pages = [], None, []
    while True:
        page = client.enhanced_search_issues(
            jql, nextPageToken=token, maxResults=50, fields=["summary"], json_result=True
        )
        pages.append(len(page["issues"]))
        keys += [i["key"] for i in page["issues"]]
        assert page["isLast"] is ("nextPageToken" not in page)
        token = page.get("nextPageToken")
        if token is None:
            break
    assert pages == [50, 50, 20]
    assert keys == [f"QMS-{n}" for n in range(1, 121)]

    everything = client.enhanced_search_issues(jql, maxResults=0)  # the library follows the tokens itself
    assert [i.key for i in everything] == keys
    assert [len(c.response["issues"]) for c in fake.calls_to("GET", "/rest/api/2/search/jql")][-2:] == [100, 20]
    posted = client.enhanced_search_issues(jql, maxResults=0, use_post=True, fields=["summary"])
    assert [i.key for i in posted] == keys
    assert [len(c.response["issues"]) for c in fake.calls_to("POST", "/rest/api/2/search/jql")] == [100, 20]
    ids = client.enhanced_search_issues(jql, maxResults=500, fields=["key"], json_result=True)
    assert len(ids["issues"]) == 120 and ids["isLast"] is True  # keys only: pages of up to 5000
    capped = client.enhanced_search_issues(jql, maxResults=500, fields=["summary"], json_result=True)
    assert len(capped["issues"]) == 100 and capped["nextPageToken"]  # fewer than asked: follow the token

    first = client.enhanced_search_issues(jql, maxResults=10)
    assert len(first) == 10 and first.nextPageToken
    with pytest.raises(JIRAError) as info:
        client.enhanced_search_issues("project = QMS", nextPageToken=first.nextPageToken, json_result=True)
    assert info.value.status_code == 400  # a token belongs to its query


def test_jql_forms(fake: FakeJira, client: JIRA) -> None:
    def keys(jql: str) -> list[str]:
        return [i.key for i in client.enhanced_search_issues(jql, fields=["key"])]

    capa = create(client)
    fake.clock.advance(minutes=10)  # 10:10
    other = create(client, summary="other", label="qms-CAPA-2026-0002")
    fake.clock.advance(minutes=10)  # 10:20
    fake.set_status(capa.key, "In Progress")

    assert keys(f'project = QMS AND labels = "{LABEL}"') == ["QMS-1"]
    assert keys("labels = qms-CAPA-2026-0002") == ["QMS-2"]
    assert keys('labels in ("qms-CAPA-2026-0001", qms-CAPA-2026-0002) ORDER BY key ASC') == ["QMS-1", "QMS-2"]
    assert keys('updated >= "2026-11-26 10:05" ORDER BY updated ASC') == ["QMS-2", "QMS-1"]
    assert keys('project = QMS AND updated >= "2026/11/26 10:15"') == ["QMS-1"]
    assert keys('updated < "2026-11-26 10:15" ORDER BY updated DESC') == ["QMS-2"]
    assert keys('status = "In Progress"') == ["QMS-1"] and keys("status != 'In Progress'") == ["QMS-2"]
    assert keys("key in (QMS-1, QMS-2) ORDER BY created DESC") == ["QMS-2", "QMS-1"]
    assert keys(f"updated >= -5m AND issuetype = Task AND key = {other.key}") == []

    def error(jql: str) -> str:
        with pytest.raises(JIRAError) as info:
            client.enhanced_search_issues(jql)
        assert info.value.status_code == 400
        return info.value.text

    assert "Unbounded JQL" in error("ORDER BY updated ASC")
    assert "does not exist for the field 'project'" in error("project = NOPE")
    assert "An issue with key 'QMS-9' does not exist" in error("key = QMS-9")
    assert "Date value 'yesterday' for field 'updated' is invalid" in error("updated >= yesterday")
    assert "Field 'colour' does not exist" in error("colour = red")
    for unsupported in (
        "labels = a OR labels = b",
        "(labels = a)",
        "summary ~ calibration",
        "project = QMS ORDER BY updated",
        "labels is EMPTY",
        "updated >= startOfDay()",
    ):
        assert "FakeJira does not support" in error(unsupported), unsupported


def test_removed_search_answers_410(fake: FakeJira, client: JIRA) -> None:
    message = (
        "The requested API has been removed. Please migrate to the /rest/api/3/search/jql API. A full "
        "migration guideline is available at https://developer.atlassian.com/changelog/#CHANGE-2046"
    )
    auth = (fake.email, fake.token)
    with httpx.Client(base_url=fake.url, auth=auth, timeout=10) as http:
        for response in (
            http.get("/rest/api/2/search", params={"jql": "project = QMS"}),
            http.post("/rest/api/2/search", json={"jql": "project = QMS"}),
            http.get("/rest/api/3/search", params={"jql": "project = QMS"}),
            http.post("/rest/api/3/search", json={"jql": "project = QMS"}),
        ):
            assert response.status_code == 410
            assert response.json() == {"errorMessages": [message], "errors": {}}

    create(client)
    before = len(fake.calls)
    assert [i.key for i in client.search_issues("project = QMS")] == ["QMS-1"]  # Cloud: routed to /search/jql
    # /field first: the library maps JQL field names to ids with it, then it searches /search/jql.
    assert [c.path for c in fake.calls[before:]] == ["/rest/api/2/field", "/rest/api/2/search/jql"]
    with pytest.raises(JIRAError, match="deprecated"):
        client.search_issues("project = QMS", startAt=1)  # refused by the library, no request made
    assert len(fake.calls) == before + 2

    not_cloud = make_client(fake, get_server_info=False)  # does not know it talks to Cloud
    with pytest.raises(JIRAError) as info:
        not_cloud.search_issues("project = QMS")
    assert info.value.status_code == 410 and "CHANGE-2046" in info.value.text
    assert fake.calls[-1].path == "/rest/api/2/search"


# ---------------------------------------------------------------------- 4. webhooks


def test_webhook_payload_and_signature(spec: dict, fake: FakeJira, client: JIRA) -> None:
    issue = create(client)
    fake.clock.advance(minutes=3)
    fake.set_status(issue.key, "Done")
    payload = fake.webhook_payload(issue.key)
    assert payload["webhookEvent"] == "jira:issue_updated"
    assert payload["issue_event_type_name"] == "issue_generic"
    assert payload["timestamp"] == int(datetime(2026, 11, 26, 10, 3, tzinfo=timezone.utc).timestamp() * 1000)
    assert payload["user"]["displayName"] == "Quality Manager"
    assert payload["issue"]["key"] == "QMS-1" and payload["issue"]["fields"]["status"]["name"] == "Done"
    status_item = next(i for i in payload["changelog"]["items"] if i["field"] == "status")
    assert (status_item["fromString"], status_item["toString"], status_item["from"], status_item["to"]) == (
        "To Do",
        "Done",
        "1",
        "5",
    )
    assert not _problems(component("IssueBean"), as_v3(payload["issue"]))
    assert_issue_fields_conform(payload["issue"])
    assert not _problems(component("UserDetails"), payload["user"])

    secret = "webhook-s3cret"
    body = json.dumps(payload).encode("utf-8")
    header = FakeJira.sign(body, secret)
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(header, expected)
    tampered = body.replace(b'"Done"', b'"To Do"', 1)
    assert not hmac.compare_digest(FakeJira.sign(tampered, secret), header)
    # An RFC 4231-style known answer, independent of the fake's own code path.
    assert FakeJira.sign(b"The quick brown fox jumps over the lazy dog", "key") == (
        "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    )


def test_webhook_payload_variants(fake: FakeJira, client: JIRA) -> None:
    issue = create(client)
    created = fake.webhook_payload(issue.key, event="jira:issue_created")
    assert (created["webhookEvent"], created["issue_event_type_name"]) == ("jira:issue_created", "issue_created")
    assert "changelog" not in created

    explicit = fake.webhook_payload(issue.key, from_status="In Progress", to_status="In Review")
    assert explicit["changelog"]["items"] == [
        {
            "field": "status",
            "fieldtype": "jira",
            "fieldId": "status",
            "from": "3",
            "fromString": "In Progress",
            "to": "4",
            "toString": "In Review",
        }
    ]
    assert explicit["issue"]["fields"]["status"]["name"] == "In Review"
    assert fake.issues["QMS-1"]["fields"]["status"] == "To Do"  # building a payload changes nothing

    untouched = fake.webhook_payload(issue.key)
    assert untouched["changelog"]["items"] == [] and untouched["issue_event_type_name"] == "issue_updated"

    client.add_comment(issue.key, "CAPA closed by QA.")
    comment = fake.webhook_payload(issue.key, event="comment_created")
    assert comment["comment"]["body"] == "CAPA closed by QA." and comment["issue"]["key"] == "QMS-1"
    with pytest.raises(ValueError):
        fake.webhook_payload(issue.key, event="jira:worklog_updated")
    with pytest.raises(KeyError):
        fake.webhook_payload("QMS-99")


def test_reset_forgets_everything(fake: FakeJira, client: JIRA) -> None:
    calls, issues = fake.calls, fake.issues
    create(client)
    fake.fail_next(503)
    fake.reset()
    assert (fake.calls, fake.issues) == ([], {})
    assert calls is fake.calls and issues is fake.issues
    assert create(client).key == "QMS-1"  # keys start again; the injection is gone


def test_a_site_whose_workflow_lacks_a_status() -> None:
    with FakeJira(statuses=("To Do", "In Progress", "Done")) as site:
        jira = make_client(site)
        issue = create(jira)
        assert {t["to"]["name"] for t in jira.transitions(issue)} == {"In Progress", "Done"}
        with pytest.raises(JIRAError) as info:
            jira.transition_issue(issue, "21")  # "Review" leads to In Review, which this site does not have
        assert info.value.status_code == 400
        assert [s.name for s in jira.statuses()] == ["To Do", "In Progress", "Done"]
        with pytest.raises(ValueError, match="In Review"):
            site.set_status(issue.key, "In Review")
        jira.close()
    with pytest.raises(ValueError, match="To Do"):
        FakeJira(statuses=("In Progress", "Done"))
