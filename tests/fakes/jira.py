"""A fake Jira Cloud REST API (v2) over real HTTP on 127.0.0.1, for tests that drive the real ``jira.JIRA``::

    with FakeJira() as fake:
        jira = JIRA(server=fake.url, basic_auth=(fake.email, fake.token))
        issue = jira.create_issue(fields={"project": {"key": "QMS"}, "summary": "CAPA-2026-0001",
                                          "issuetype": {"name": "Task"}, "labels": ["qms-CAPA-2026-0001"]})
        fake.set_status(issue.key, "Done")          # a human moved it in Jira
        assert fake.issues["QMS-1"]["fields"]["status"] == "Done"

Standard library only: a ``ThreadingHTTPServer`` on a free port, served from a daemon thread. Every ``self``
URL it answers points at the fake, so the library can follow them.

Served (``/rest/api/2/...``, also reachable as ``/rest/api/latest/...``; HTTP Basic auth with ``email`` and
``token`` required, else 401 ``{"errorMessages": [...], "errors": {}}``. Wrong credentials answer 401
everywhere; *missing* credentials are allowed for ``GET serverInfo`` only, which Jira serves anonymously)::

    GET  serverInfo, field, myself, issuetype, status, project/{idOrKey}
    POST issue                                  201 {"id", "key", "self"}
    GET  issue/{idOrKey}  (by id and by key)    fields=..., expand=names,transitions,changelog
    PUT  issue/{idOrKey}                        204; {"fields": {...}, "update": {...}} (summary, description,
                                                labels, priority; update ops set/add/remove, comment add)
    DELETE issue/{idOrKey}                      204
    GET/POST issue/{idOrKey}/comment, GET issue/{idOrKey}/comment/{id}
    GET/POST issue/{idOrKey}/transitions        POST {"transition": {"id": ...}} -> 204
    GET/POST/DELETE issue/{idOrKey}/remotelink  (POST with a known globalId updates: 200, else 201; DELETE
                                                ?globalId=...), GET/PUT/DELETE issue/{idOrKey}/remotelink/{id}
    GET  issueLinkType; POST issueLink (201, empty body); GET/DELETE issueLink/{id}
    GET/POST search/jql                         Jira Cloud's enhanced search (see JQL below)
    GET/POST search, /rest/api/3/search         410 Gone, with Jira Cloud's removal message
    GET  /rest/applinks/latest/listApplicationlinks   401 (the bot is no Jira admin; ``JIRA.add_remote_link``
                                                asks for it first, warns "Unable to gather applicationlinks"
                                                and carries on, as against real Jira)

Anything else answers 404 (or 405) with an ``errorMessages`` text naming what the fake does not serve.

Workflow: statuses To Do (id 1, category new), In Progress (3), In Review (4), Done (5, category done; sets
resolution "Done"). Global transitions to every status but the current one: 11 "Start" -> In Progress,
21 "Review" -> In Review, 31 "Done" -> Done, 41 "Reopen" -> To Do. Issue types Task, Bug, Story, Epic,
Subtask; one project (``project``, id 10000). Issue ids count from 10000, keys from ``<project>-1``.
``FakeJira(statuses=("To Do", "In Progress", "Done"))`` gives a site whose workflow lacks the others (here
In Review): no transition leads there, ``GET status`` and JQL do not know it, ``set_status`` refuses it.

JQL (``search/jql``): clauses joined by AND, then optionally ``ORDER BY f ASC|DESC[, ...]`` (f: updated,
created, key, id; the direction is required by the fake). Clauses: ``project``, ``status``, ``issuetype``
(``type``), ``key`` (``issuekey``, ``id``) with ``= != in (..) not in (..)``; ``labels`` with ``=`` and
``in (..)``; ``updated``/``created`` with ``= != > >= < <=`` and "yyyy-MM-dd HH:mm", "yyyy/MM/dd HH:mm",
"yyyy-MM-dd", "yyyy/MM/dd", epoch millis or a single relative period ("-5m", "-2d"). Dates are in UTC (the
fake's users' time zone). Errors Jira itself makes are copied: an unbounded query (no clause) is rejected,
unknown projects/statuses/keys and malformed dates answer 400. Constructs the fake does not implement (OR,
NOT, parentheses, ``~``, ``IS``, functions, ORDER BY without direction) answer 400 with a message starting
"FakeJira does not support" -- a limitation of the fake, not of Jira. Without ORDER BY the fake answers
newest first (Jira leaves it unspecified; do not rely on it). Paging: ``nextPageToken`` is opaque, absent on
the last page, ``isLast`` always present. ``maxResults`` defaults to 50; a page holds at most 100 issues
when fields beyond id/key are asked for, else 5000 (Jira may likewise answer fewer than asked: follow the
token). Default ``fields`` is ``id`` (issues answer ``{"id": ...}`` only), as on Jira Cloud.

Faults (``path_prefix`` is matched against the request path as a plain prefix, so "/rest/api/2/issue" also
matches ".../issueLink"; injections are consumed in the order given, each by the first request it matches,
before authentication, like an edge proxy):

- ``fail_next(status, times, path_prefix, retry_after)``: answer ``status`` with a JSON error body (and an
  integer ``Retry-After`` header when given). jira's ``ResilientSession`` retries 429 always and 503 only
  when ``Retry-After`` is present (waiting ``2 * Retry-After`` seconds times a random 0.5..1).
- ``drop_next(times, path_prefix)``: close the connection without answering and without doing anything.
- ``lose_response_next(path_prefix, method)``: do the request (e.g. create the issue), then close the
  connection without answering. ``ResilientSession`` retries on connection errors, POST included.

Recording: ``calls`` lists every request as ``Call(method, path, query, body, headers, status, response,
dropped)``: ``query`` single values as str and repeated ones as lists, ``body`` the parsed JSON (or text),
``headers`` lower-cased, ``status`` what the fake answered (for a lost response: what it would have
answered; 0 for ``drop_next``), ``response`` the JSON it answered (None for no body).

State: ``issues`` maps key -> ``{"id", "key", "fields": {"summary", "description", "labels", "status"
(name), "issuetype" (name), "project" (key), "priority" (name), "resolution" (name or None), "created",
"updated", "statuscategorychangedate", "resolutiondate"}, "comments": [...], "remote_links": [...],
"changelog": [...]}``; times are Jira strings like "2026-11-26T10:00:00.000+0000". ``clock`` (a callable
returning an aware datetime, default the real UTC time) can be replaced to control ``created``/``updated``.

Webhooks: ``webhook_payload(key, event, from_status, to_status)`` builds the JSON Jira Cloud posts
(``jira:issue_created``, ``jira:issue_updated``, ``jira:issue_deleted``, ``comment_created``); without
``from_status``/``to_status`` an update payload carries the issue's latest status change, if any.
``FakeJira.sign(body, secret)`` gives the ``X-Hub-Signature`` header value ("sha256=" + HMAC-SHA256 hex of
the raw body) that Jira sends for webhooks registered with a secret.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .base import LocalHTTPFake

__all__ = ["Call", "FakeJira"]

JIRA_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f%z"  # parses "2026-11-26T10:00:00.000+0000"

_REMOVED_SEARCH_MESSAGE = (
    "The requested API has been removed. Please migrate to the /rest/api/3/search/jql API. "
    "A full migration guideline is available at https://developer.atlassian.com/changelog/#CHANGE-2046"
)
_NO_ISSUE = "Issue does not exist or you do not have permission to see it."

# Status categories as Jira Cloud has them (ids 2, 4, 3).
_CATEGORIES = {
    "new": {"id": 2, "key": "new", "colorName": "blue-gray", "name": "To Do"},
    "indeterminate": {"id": 4, "key": "indeterminate", "colorName": "yellow", "name": "In Progress"},
    "done": {"id": 3, "key": "done", "colorName": "green", "name": "Done"},
}
# name -> (id, category key, description)
_STATUSES = {
    "To Do": ("1", "new", "The work has not started."),
    "In Progress": ("3", "indeterminate", "The work is being done."),
    "In Review": ("4", "indeterminate", "The work is being reviewed."),
    "Done": ("5", "done", "The work is finished."),
}
# (id, name, target status)
_TRANSITIONS = (
    ("11", "Start", "In Progress"),
    ("21", "Review", "In Review"),
    ("31", "Done", "Done"),
    ("41", "Reopen", "To Do"),
)
# name -> (id, subtask, hierarchyLevel, avatarId, description)
_ISSUE_TYPES = {
    "Task": ("10001", False, 0, 10318, "A small, distinct piece of work."),
    "Bug": ("10002", False, 0, 10303, "A problem or error."),
    "Story": ("10003", False, 0, 10315, "A user story."),
    "Epic": ("10000", False, 1, 10307, "A big user story that needs to be broken down."),
    "Subtask": ("10004", True, -1, 10316, "A small piece of work that's part of a larger task."),
}
_PRIORITIES = {"Highest": "1", "High": "2", "Medium": "3", "Low": "4", "Lowest": "5"}
# (id, name, inward, outward)
_LINK_TYPES = (
    ("10000", "Blocks", "is blocked by", "blocks"),
    ("10001", "Cloners", "is cloned by", "clones"),
    ("10002", "Duplicate", "is duplicated by", "duplicates"),
    ("10003", "Relates", "relates to", "relates to"),
)
# (id, name, schema or None, clauseNames, navigable, orderable)
_FIELDS = (
    ("issuekey", "Key", None, ["id", "issue", "issuekey", "key"], True, False),
    ("summary", "Summary", {"type": "string", "system": "summary"}, ["summary"], True, True),
    ("description", "Description", {"type": "string", "system": "description"}, ["description"], True, True),
    ("labels", "Labels", {"type": "array", "items": "string", "system": "labels"}, ["labels"], True, True),
    ("status", "Status", {"type": "status", "system": "status"}, ["status"], True, False),
    ("issuetype", "Issue Type", {"type": "issuetype", "system": "issuetype"}, ["issuetype", "type"], True, True),
    ("project", "Project", {"type": "project", "system": "project"}, ["project"], True, False),
    ("priority", "Priority", {"type": "priority", "system": "priority"}, ["priority"], True, True),
    ("created", "Created", {"type": "datetime", "system": "created"}, ["created", "createdDate"], True, False),
    ("updated", "Updated", {"type": "datetime", "system": "updated"}, ["updated", "updatedDate"], True, False),
    (
        "statuscategorychangedate",
        "Status Category Changed",
        {"type": "datetime", "system": "statuscategorychangedate"},
        ["statusCategoryChangedDate"],
        True,
        False,
    ),
    ("resolution", "Resolution", {"type": "resolution", "system": "resolution"}, ["resolution"], True, True),
    (
        "resolutiondate",
        "Resolved",
        {"type": "datetime", "system": "resolutiondate"},
        ["resolutiondate", "resolved"],
        True,
        False,
    ),
    ("assignee", "Assignee", {"type": "user", "system": "assignee"}, ["assignee"], True, True),
    ("reporter", "Reporter", {"type": "user", "system": "reporter"}, ["reporter"], True, True),
    ("creator", "Creator", {"type": "user", "system": "creator"}, ["creator"], True, False),
    ("comment", "Comment", {"type": "comments-page", "system": "comment"}, ["comment"], False, True),
    (
        "issuelinks",
        "Linked Issues",
        {"type": "array", "items": "issuelinks", "system": "issuelinks"},
        ["issueLink"],
        True,
        True,
    ),
    (
        "customfield_10020",
        "Sprint",
        {"type": "array", "items": "json", "custom": "com.pyxis.greenhopper.jira:gh-sprint", "customId": 10020},
        ["Sprint", "cf[10020]"],
        True,
        True,
    ),
)
_ISSUE_FIELD_IDS = tuple(f[0] for f in _FIELDS if f[0] != "issuekey")
_NAVIGABLE = tuple(f[0] for f in _FIELDS if f[4] and f[0] != "issuekey")
_FIELD_NAMES = {f[0]: f[1] for f in _FIELDS}
_EDITABLE = ("summary", "description", "labels", "priority")
_CREATABLE = ("project", "issuetype", "summary", "description", "labels", "priority")
_ISSUE_EXPAND = "renderedFields,names,schema,operations,editmeta,changelog,versionedRepresentations"
_HUMAN = {"email": "quality.manager@example.com", "name": "Quality Manager"}
_MAX_PAGE_WITH_FIELDS = 100
_MAX_PAGE_IDS_ONLY = 5000


@dataclass
class Call:
    """One HTTP request the fake received (see the module docstring)."""

    method: str
    path: str
    query: dict[str, Any]
    body: Any
    headers: dict[str, str]
    status: int | None = None
    response: Any = None
    dropped: bool = False


@dataclass
class _Injection:
    kind: str  # "fail" | "drop" | "lose"
    times: int
    path_prefix: str = ""
    method: str | None = None
    status: int = 503
    retry_after: int | None = None


class _ApiError(Exception):
    def __init__(self, status: int, messages: list[str] | None = None, errors: dict[str, str] | None = None):
        super().__init__(status, messages, errors)
        self.status = status
        self.body = {"errorMessages": list(messages or []), "errors": dict(errors or {})}


def _jql_error(message: str) -> _ApiError:
    return _ApiError(400, [message])


def _unsupported(what: str) -> _ApiError:
    return _ApiError(400, [f"FakeJira does not support {what} in JQL (see tests/fakes/jira.py)."])


def _format_time(moment: datetime) -> str:
    moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def _parse_time(text: str) -> datetime:
    return datetime.strptime(text, JIRA_TIME_FORMAT)


def _account_id(email: str) -> str:
    return hashlib.sha1(email.lower().encode()).hexdigest()[:24]


class FakeJira(LocalHTTPFake):
    """A fake Jira Cloud REST API on ``http://127.0.0.1:<free port>``. See the module docstring."""

    project_id = "10000"
    server_title = "Fake Jira"

    def __init__(
        self,
        email: str = "qms@example.com",
        token: str = "jira-token",
        project: str = "QMS",
        statuses: tuple[str, ...] | None = None,
    ) -> None:
        super().__init__(_Handler)
        if not re.fullmatch(r"[A-Z][A-Z0-9_]+", project):
            raise ValueError(f"FakeJira project key {project!r} is not Jira-shaped ([A-Z][A-Z0-9_]+)")
        workflow = tuple(statuses or _STATUSES)
        unknown = [s for s in workflow if s not in _STATUSES]
        if unknown or "To Do" not in workflow:
            raise ValueError(f"FakeJira statuses must include 'To Do' and come from {sorted(_STATUSES)}: {unknown}")
        self.workflow = workflow
        self.email = email
        self.token = token
        self.project = project
        self.clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
        self._lock = threading.RLock()
        self._calls: list[Call] = []
        self._issues: dict[str, dict] = {}
        self._issue_links: dict[str, dict] = {}
        self._injections: list[_Injection] = []
        self._counters: dict[str, int] = {}
        self._reset_counters()

    # ------------------------------------------------------------------ addresses

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def _api(self) -> str:
        return self.url + "/rest/api/2"

    # ------------------------------------------------------------------ inspection

    @property
    def calls(self) -> list[Call]:
        return self._calls

    @property
    def issues(self) -> dict[str, dict]:
        return self._issues

    def calls_to(self, method: str, path_prefix: str) -> list[Call]:
        with self._lock:
            return [c for c in self._calls if c.method == method.upper() and c.path.startswith(path_prefix)]

    # ------------------------------------------------------------------ injections

    def fail_next(
        self, status: int = 503, times: int = 1, path_prefix: str = "", retry_after: int | None = None
    ) -> None:
        """The next ``times`` requests under ``path_prefix`` answer ``status`` (JSON error body; an integer
        ``Retry-After`` header when ``retry_after`` is given)."""
        if not 400 <= int(status) <= 599:
            raise ValueError(f"fail_next needs an HTTP error status, not {status}")
        self._inject(
            _Injection(
                "fail",
                times,
                path_prefix,
                status=int(status),
                retry_after=None if retry_after is None else int(retry_after),
            )
        )

    def drop_next(self, times: int = 1, path_prefix: str = "") -> None:
        """The next ``times`` requests under ``path_prefix`` get their connection closed, unanswered and
        without effect."""
        self._inject(_Injection("drop", times, path_prefix))

    def lose_response_next(self, path_prefix: str = "/rest/api/2/issue", method: str = "POST") -> None:
        """The next ``method`` request under ``path_prefix`` is carried out, then its connection is closed
        without an answer (the client cannot know whether it happened)."""
        self._inject(_Injection("lose", 1, path_prefix, method=method.upper()))

    def _inject(self, injection: _Injection) -> None:
        if injection.times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._injections.append(injection)

    def _take_injection(self, method: str, path: str) -> _Injection | None:
        for injection in self._injections:
            if path.startswith(injection.path_prefix) and injection.method in (None, method):
                injection.times -= 1
                if injection.times == 0:
                    self._injections.remove(injection)
                return injection
        return None

    # ------------------------------------------------------------------ simulated humans and webhooks

    def set_status(self, key: str, status_name: str) -> None:
        """A human moves the issue to ``status_name`` in Jira (bumps ``updated``, records the changelog, sets or
        clears the resolution). Nothing happens when the issue already has that status, as in Jira."""
        if status_name not in self.workflow:
            raise ValueError(f"unknown status {status_name!r}; this FakeJira knows {list(self.workflow)}")
        with self._lock:
            issue = self._issue_or_keyerror(key)
            self._change_status(issue, status_name, actor="human")

    def webhook_payload(
        self, key: str, event: str = "jira:issue_updated", from_status: str | None = None, to_status: str | None = None
    ) -> dict:
        """The JSON body Jira Cloud posts to a webhook for ``event`` on the issue (see the module docstring)."""
        for name in (from_status, to_status):
            if name is not None and name not in self.workflow:
                raise ValueError(f"unknown status {name!r}; this FakeJira knows {list(self.workflow)}")
        with self._lock:
            issue = self._issue_or_keyerror(key)
            now = self.clock()
            payload: dict[str, Any] = {"timestamp": int(now.timestamp() * 1000), "webhookEvent": event}
            issue_json = self._issue_json(issue)
            if event == "comment_created":
                if not issue["comments"]:
                    raise ValueError(f"{key} has no comment to announce")
                comment = issue["comments"][-1]
                payload["comment"] = self._comment_json(issue, comment)
                payload["issue"] = {
                    "id": issue["id"],
                    "self": issue_json["self"],
                    "key": issue["key"],
                    "fields": {
                        k: issue_json["fields"][k]
                        for k in ("summary", "issuetype", "project", "assignee", "priority", "status")
                    },
                }
                return payload
            if event not in ("jira:issue_created", "jira:issue_updated", "jira:issue_deleted"):
                raise ValueError(f"FakeJira builds no {event!r} webhook")
            payload["issue_event_type_name"] = {
                "jira:issue_created": "issue_created",
                "jira:issue_deleted": "issue_deleted",
            }.get(event, "issue_updated")
            actor = "api"
            if event == "jira:issue_updated":
                entry: dict | None = None
                if from_status is not None or to_status is not None:
                    old = from_status or issue["fields"]["status"]
                    new = to_status or issue["fields"]["status"]
                    entry = {"id": str(self._next("changelog")), "author": "human", "items": [_status_item(old, new)]}
                else:
                    entry = next(
                        (e for e in reversed(issue["changelog"]) if any(i["field"] == "status" for i in e["items"])),
                        None,
                    )
                    if entry is None and issue["changelog"]:
                        entry = issue["changelog"][-1]
                if entry is None:
                    payload["changelog"] = {"id": str(self._next("changelog")), "items": []}
                else:
                    actor = entry["author"]
                    payload["changelog"] = {"id": entry["id"], "items": copy.deepcopy(entry["items"])}
                    status_items = [i for i in entry["items"] if i["field"] == "status"]
                    if status_items:
                        payload["issue_event_type_name"] = "issue_generic"
                        issue_json["fields"]["status"] = self._status_json(status_items[-1]["toString"])
            payload["user"] = self._user_json(actor)
            payload["issue"] = issue_json
            return payload

    @staticmethod
    def sign(body: bytes, secret: str) -> str:
        """The ``X-Hub-Signature`` value Jira sends with a webhook registered with ``secret``."""
        return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()

    def reset(self) -> None:
        """Forget calls, issues, links and injections; ids and keys start again (the clock stays)."""
        with self._lock:  # cleared in place: lists/dicts held by a test stay the live ones
            self._calls.clear()
            self._issues.clear()
            self._issue_links.clear()
            self._injections.clear()
            self._reset_counters()

    def _reset_counters(self) -> None:
        self._counters.update(
            {
                "issue_id": 10000,
                "issue_num": 1,
                "comment": 10000,
                "remotelink": 10000,
                "changelog": 10000,
                "issuelink": 10000,
            }
        )

    def _next(self, name: str) -> int:
        value = self._counters[name]
        self._counters[name] = value + 1
        return value

    # ------------------------------------------------------------------ request handling

    def _handle(self, method: str, path: str, query_string: str, raw: bytes, headers: dict[str, str]):
        """(status, extra headers, JSON body or None) to answer, or None to drop the connection."""
        query = _flatten(parse_qs(query_string, keep_blank_values=True))
        body: Any = None
        body_error = None
        if raw:
            text = raw.decode("utf-8", "replace")
            try:
                body = json.loads(text)
            except json.JSONDecodeError as exc:
                body, body_error = text, f"Unexpected character in the JSON body: {exc}"
        call = Call(method=method, path=path, query=query, body=body, headers=headers)
        with self._lock:
            self._calls.append(call)
            injection = self._take_injection(method, path)
            if injection is not None and injection.kind == "drop":
                call.status, call.dropped = 0, True
                return None
            if injection is not None and injection.kind == "fail":
                extra = {} if injection.retry_after is None else {"Retry-After": str(injection.retry_after)}
                message = "Rate limit exceeded." if injection.status == 429 else HTTPStatus(injection.status).phrase
                status, answer = injection.status, {"errorMessages": [message], "errors": {}}
            else:
                extra = {}
                try:
                    status, answer = self._answer(method, path, query, body, body_error, headers)
                except _ApiError as exc:
                    status, answer = exc.status, exc.body
                answer = json.loads(json.dumps(answer)) if answer is not None else None  # detach from state
            call.status, call.response = status, answer
            if injection is not None and injection.kind == "lose":
                call.dropped = True
                return None
            return status, extra, answer

    def _authenticated(self, headers: dict[str, str]) -> bool | None:
        """True: right credentials; False: wrong ones; None: none given."""
        authorization = headers.get("authorization", "")
        if not authorization:
            return None
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return False
        return hmac.compare_digest(given, f"{self.email}:{self.token}")

    def _answer(
        self, method: str, path: str, query: dict, body: Any, body_error: str | None, headers: dict[str, str]
    ) -> tuple[int, Any]:
        auth = self._authenticated(headers)
        sub = None
        for prefix in ("/rest/api/2/", "/rest/api/latest/"):
            if path.startswith(prefix):
                sub = path[len(prefix) :].rstrip("/")
        if auth is False or (auth is None and not (sub == "serverInfo" and method == "GET")):
            raise _ApiError(401, ["Client must be authenticated to access this resource."])
        if path.rstrip("/") == "/rest/api/3/search":
            raise _ApiError(410, [_REMOVED_SEARCH_MESSAGE])
        if path.rstrip("/") == "/rest/applinks/latest/listApplicationlinks":
            raise _ApiError(401, ["You must be a Jira administrator to list application links."])
        if sub is None:
            raise _ApiError(404, [f"FakeJira serves /rest/api/2/... only, not {path}"])
        if method in ("POST", "PUT") and body_error:
            raise _ApiError(400, [body_error])
        for pattern, handlers in _ROUTES:
            match = pattern.fullmatch(sub)
            if match is None:
                continue
            handler = handlers.get(method)
            if handler is None:
                raise _ApiError(405, [f"{method} is not allowed on {path}"])
            return handler(self, query, body, **match.groupdict())
        raise _ApiError(404, [f"FakeJira does not serve {method} {path}"])

    # ------------------------------------------------------------------ rendering

    def _user_json(self, actor: str = "api", full: bool = False) -> dict:
        email, name = (self.email, "QMS Bot") if actor == "api" else (_HUMAN["email"], _HUMAN["name"])
        account_id = _account_id(email)
        avatar = f"https://avatar-management--avatars.us-west-2.prod.public.atl-paas.net/{account_id}/48"
        user = {
            "self": f"{self._api}/user?accountId={account_id}",
            "accountId": account_id,
            "emailAddress": email,
            "avatarUrls": {size: f"{avatar}?s={size.split('x')[0]}" for size in ("48x48", "24x24", "16x16", "32x32")},
            "displayName": name,
            "active": True,
            "timeZone": "Etc/UTC",
            "accountType": "atlassian",
        }
        if full:
            user.update(
                {
                    "locale": "en_US",
                    "groups": {"size": 1, "items": []},
                    "applicationRoles": {"size": 1, "items": []},
                    "expand": "groups,applicationRoles",
                }
            )
        return user

    def _status_json(self, name: str) -> dict:
        status_id, category, description = _STATUSES[name]
        cat = _CATEGORIES[category]
        return {
            "self": f"{self._api}/status/{status_id}",
            "description": description,
            "iconUrl": f"{self.url}/images/icons/statuses/generic.png",
            "name": name,
            "id": status_id,
            "statusCategory": {"self": f"{self._api}/statuscategory/{cat['id']}", **cat},
        }

    def _issuetype_json(self, name: str) -> dict:
        type_id, subtask, level, avatar_id, description = _ISSUE_TYPES[name]
        return {
            "self": f"{self._api}/issuetype/{type_id}",
            "id": type_id,
            "description": description,
            "iconUrl": f"{self.url}/rest/api/2/universal_avatar/view/type/issuetype/avatar/{avatar_id}?size=medium",
            "name": name,
            "subtask": subtask,
            "avatarId": avatar_id,
            "hierarchyLevel": level,
        }

    def _project_json(self, full: bool = False) -> dict:
        avatar = f"{self.url}/rest/api/2/universal_avatar/view/type/project/avatar/10400"
        project = {
            "self": f"{self._api}/project/{self.project_id}",
            "id": self.project_id,
            "key": self.project,
            "name": self.project,
            "projectTypeKey": "software",
            "simplified": False,
            "avatarUrls": {
                size: f"{avatar}?size={n}"
                for size, n in (("48x48", "large"), ("24x24", "small"), ("16x16", "xsmall"), ("32x32", "medium"))
            },
        }
        if full:
            project.update(
                {
                    "expand": "description,lead,issueTypes,url,projectKeys,permissions,insight",
                    "description": "Quality management records",
                    "lead": self._user_json("human"),
                    "components": [],
                    "issueTypes": [self._issuetype_json(n) for n in _ISSUE_TYPES],
                    "assigneeType": "UNASSIGNED",
                    "versions": [],
                    "roles": {},
                    "style": "classic",
                    "isPrivate": False,
                    "properties": {},
                }
            )
        return project

    def _priority_json(self, name: str) -> dict:
        pid = _PRIORITIES[name]
        return {
            "self": f"{self._api}/priority/{pid}",
            "iconUrl": f"{self.url}/images/icons/priorities/{name.lower()}.svg",
            "name": name,
            "id": pid,
        }

    def _comment_json(self, issue: dict, comment: dict) -> dict:
        body = {
            "self": f"{self._api}/issue/{issue['id']}/comment/{comment['id']}",
            "id": comment["id"],
            "author": self._user_json(comment["author"]),
            "body": comment["body"],
            "updateAuthor": self._user_json(comment["author"]),
            "created": comment["created"],
            "updated": comment["updated"],
            "jsdPublic": True,
        }
        if comment.get("visibility"):
            body["visibility"] = comment["visibility"]
        return body

    def _link_type_json(self, link_type: tuple) -> dict:
        type_id, name, inward, outward = link_type
        return {
            "id": type_id,
            "name": name,
            "inward": inward,
            "outward": outward,
            "self": f"{self._api}/issueLinkType/{type_id}",
        }

    def _linked_issue_json(self, issue: dict) -> dict:
        f = issue["fields"]
        return {
            "id": issue["id"],
            "key": issue["key"],
            "self": f"{self._api}/issue/{issue['id']}",
            "fields": {
                "summary": f["summary"],
                "status": self._status_json(f["status"]),
                "priority": self._priority_json(f["priority"]),
                "issuetype": self._issuetype_json(f["issuetype"]),
            },
        }

    def _issue_links_of(self, issue: dict) -> list[dict]:
        links = []
        for link in self._issue_links.values():
            if issue["id"] not in (link["inward"], link["outward"]):
                continue
            entry = {
                "id": link["id"],
                "self": f"{self._api}/issueLink/{link['id']}",
                "type": self._link_type_json(link["type"]),
            }
            if link["inward"] == issue["id"]:  # this issue <outward> the other one
                other = self._issue_by_id(link["outward"])
                if other is not None:
                    entry["outwardIssue"] = self._linked_issue_json(other)
            else:
                other = self._issue_by_id(link["inward"])
                if other is not None:
                    entry["inwardIssue"] = self._linked_issue_json(other)
            links.append(entry)
        return links

    def _all_fields_json(self, issue: dict) -> dict:
        f = issue["fields"]
        comments = [self._comment_json(issue, c) for c in issue["comments"]]
        resolution = None
        if f["resolution"]:
            resolution = {
                "self": f"{self._api}/resolution/10000",
                "id": "10000",
                "description": "Work has been completed on this issue.",
                "name": f["resolution"],
            }
        return {
            "statuscategorychangedate": f["statuscategorychangedate"],
            "issuetype": self._issuetype_json(f["issuetype"]),
            "project": self._project_json(),
            "created": f["created"],
            "updated": f["updated"],
            "priority": self._priority_json(f["priority"]),
            "labels": list(f["labels"]),
            "issuelinks": self._issue_links_of(issue),
            "assignee": None,
            "status": self._status_json(f["status"]),
            "creator": self._user_json("api"),
            "reporter": self._user_json("api"),
            "summary": f["summary"],
            "description": f["description"],
            "resolution": resolution,
            "resolutiondate": f["resolutiondate"],
            "comment": {
                "comments": comments,
                "self": f"{self._api}/issue/{issue['id']}/comment",
                "maxResults": len(comments),
                "total": len(comments),
                "startAt": 0,
            },
            "customfield_10020": None,
        }

    def _issue_json(
        self, issue: dict, fields: list[str] | None = None, expand: str = "", ids_only_default: bool = False
    ) -> dict:
        selected = _select_fields(fields, ids_only_default)
        if selected is None:
            return {"id": issue["id"]}
        all_fields = self._all_fields_json(issue)
        body: dict[str, Any] = {
            "expand": _ISSUE_EXPAND,
            "id": issue["id"],
            "self": f"{self._api}/issue/{issue['id']}",
            "key": issue["key"],
            "fields": {k: all_fields[k] for k in all_fields if k in selected},
        }
        expansions = {e.strip() for e in (expand or "").split(",")}
        if "names" in expansions:
            body["names"] = {k: _FIELD_NAMES[k] for k in body["fields"]}
        if "transitions" in expansions:
            body["transitions"] = self._transitions_json(issue)
        if "changelog" in expansions:
            histories = [
                {
                    "id": e["id"],
                    "author": self._user_json(e["author"]),
                    "created": e["created"],
                    "items": copy.deepcopy(e["items"]),
                }
                for e in reversed(issue["changelog"])
            ]
            body["changelog"] = {
                "startAt": 0,
                "maxResults": len(histories),
                "total": len(histories),
                "histories": histories,
            }
        return body

    def _transitions_json(self, issue: dict, transition_id: str | None = None) -> list[dict]:
        return [
            {
                "id": tid,
                "name": name,
                "to": self._status_json(target),
                "hasScreen": False,
                "isGlobal": True,
                "isInitial": False,
                "isAvailable": True,
                "isConditional": False,
                "isLooped": False,
            }
            for tid, name, target in _TRANSITIONS
            if target != issue["fields"]["status"] and target in self.workflow and transition_id in (None, tid)
        ]

    def _remote_link_json(self, issue: dict, link: dict) -> dict:
        body: dict[str, Any] = {"id": link["id"], "self": f"{self._api}/issue/{issue['key']}/remotelink/{link['id']}"}
        if link.get("globalId") is not None:
            body["globalId"] = link["globalId"]
        body["application"] = link.get("application") or {}
        if link.get("relationship") is not None:
            body["relationship"] = link["relationship"]
        body["object"] = link["object"]
        return body

    # ------------------------------------------------------------------ state helpers

    def _issue_by_id(self, issue_id: str) -> dict | None:
        return next((i for i in self._issues.values() if i["id"] == issue_id), None)

    def _find_issue(self, id_or_key: str) -> dict | None:
        id_or_key = unquote(str(id_or_key))
        if id_or_key.isdigit():
            return self._issue_by_id(id_or_key)
        return self._issues.get(id_or_key.upper())

    def _issue(self, id_or_key: str) -> dict:
        issue = self._find_issue(id_or_key)
        if issue is None:
            raise _ApiError(404, [_NO_ISSUE])
        return issue

    def _issue_or_keyerror(self, id_or_key: str) -> dict:
        issue = self._find_issue(id_or_key)
        if issue is None:
            raise KeyError(f"FakeJira has no issue {id_or_key!r}")
        return issue

    def _touch(self, issue: dict) -> str:
        now = _format_time(self.clock())
        issue["fields"]["updated"] = now
        return now

    def _log(self, issue: dict, actor: str, items: list[dict], when: str) -> None:
        issue["changelog"].append(
            {"id": str(self._next("changelog")), "author": actor, "created": when, "items": items}
        )

    def _change_status(self, issue: dict, status_name: str, actor: str) -> None:
        f = issue["fields"]
        old = f["status"]
        if old == status_name:
            return
        now = self._touch(issue)
        items = [_status_item(old, status_name)]
        if _STATUSES[old][1] != _STATUSES[status_name][1]:
            f["statuscategorychangedate"] = now
        done = _STATUSES[status_name][1] == "done"
        if done and not f["resolution"]:
            f["resolution"], f["resolutiondate"] = "Done", now
            items.append(
                {
                    "field": "resolution",
                    "fieldtype": "jira",
                    "fieldId": "resolution",
                    "from": None,
                    "fromString": None,
                    "to": "10000",
                    "toString": "Done",
                }
            )
        elif not done and f["resolution"]:
            items.append(
                {
                    "field": "resolution",
                    "fieldtype": "jira",
                    "fieldId": "resolution",
                    "from": "10000",
                    "fromString": f["resolution"],
                    "to": None,
                    "toString": None,
                }
            )
            f["resolution"], f["resolutiondate"] = None, None
        f["status"] = status_name
        self._log(issue, actor, items, now)

    def _apply_edits(self, issue: dict, fields: dict, update: dict, actor: str, creating: bool) -> None:
        """Validates ``fields``/``update`` (all or nothing) and applies them."""
        allowed = _CREATABLE if creating else _EDITABLE
        errors: dict[str, str] = {}
        new = dict(issue["fields"])
        new["labels"] = list(new["labels"])
        comments: list[str] = []
        for name, value in fields.items():
            if name not in allowed:
                errors[name] = f"Field '{name}' cannot be set. It is not on the appropriate screen, or unknown."
            elif name in ("project", "issuetype"):
                continue  # handled by the create handler
            else:
                error = _set_field(new, name, value)
                if error:
                    errors[name] = error
        for name, operations in (update or {}).items():
            if name in fields:
                errors[name] = f"Field '{name}' cannot be set in both 'fields' and 'update'."
                continue
            if name == "comment" and not creating:
                for op in operations if isinstance(operations, list) else [operations]:
                    text = op.get("add", {}).get("body") if isinstance(op, dict) else None
                    if not isinstance(text, str) or not text.strip():
                        errors["comment"] = "Comment body can not be empty!"
                    else:
                        comments.append(text)
                continue
            if name not in _EDITABLE:
                errors[name] = f"Field '{name}' cannot be set. It is not on the appropriate screen, or unknown."
                continue
            if not isinstance(operations, list):
                errors[name] = 'Operations must be a list of objects like {"set": ...}.'
                continue
            for op in operations:
                error = _apply_operation(new, name, op)
                if error:
                    errors[name] = error
                    break
        if errors:
            raise _ApiError(400, [], errors)
        changed = [k for k in _EDITABLE if new[k] != issue["fields"][k]]
        if not creating and (changed or comments):
            now = self._touch(issue)
            new["updated"] = now
            if changed:
                self._log(issue, actor, [_change_item(k, issue["fields"][k], new[k]) for k in changed], now)
        issue["fields"].update({k: new[k] for k in _EDITABLE})
        for text in comments:
            self._add_comment(issue, {"body": text}, actor)

    def _add_comment(self, issue: dict, body: Any, actor: str) -> dict:
        if not isinstance(body, dict):
            raise _ApiError(400, ["The request body must be a JSON object."])
        text = body.get("body")
        if isinstance(text, dict):  # an ADF document, which only the v3 API takes
            raise _ApiError(400, [], {"comment": "Operation value must be a string"})
        if not isinstance(text, str) or not text.strip():
            raise _ApiError(400, [], {"comment": "Comment body can not be empty!"})
        now = self._touch(issue)
        comment = {"id": str(self._next("comment")), "body": text, "author": actor, "created": now, "updated": now}
        if isinstance(body.get("visibility"), dict):
            comment["visibility"] = body["visibility"]
        issue["comments"].append(comment)
        return comment

    # ------------------------------------------------------------------ endpoints

    def _ep_server_info(self, query: dict, body: Any) -> tuple[int, Any]:
        return 200, {
            "baseUrl": self.url,
            "displayUrl": self.url,
            "version": "1001.0.0-SNAPSHOT",
            "versionNumbers": [1001, 0, 0],
            "deploymentType": "Cloud",
            "buildNumber": 100312,
            "buildDate": "2026-11-20T00:00:00.000+0000",
            "serverTime": _format_time(self.clock()),
            "scmInfo": "57a0ca5b4a0bb0ac5f3fee4764acb1c14e4d7e71",
            "serverTitle": self.server_title,
        }

    def _ep_fields(self, query: dict, body: Any) -> tuple[int, Any]:
        answer = []
        for fid, name, schema, clauses, navigable, orderable in _FIELDS:
            entry: dict[str, Any] = {
                "id": fid,
                "key": fid,
                "name": name,
                "custom": fid.startswith("customfield_"),
                "orderable": orderable,
                "navigable": navigable,
                "searchable": True,
                "clauseNames": clauses,
            }
            if schema is not None:
                entry["schema"] = schema
            answer.append(entry)
        return 200, answer

    def _ep_myself(self, query: dict, body: Any) -> tuple[int, Any]:
        return 200, self._user_json("api", full=True)

    def _ep_issue_types(self, query: dict, body: Any) -> tuple[int, Any]:
        return 200, [self._issuetype_json(n) for n in _ISSUE_TYPES]

    def _ep_statuses(self, query: dict, body: Any) -> tuple[int, Any]:
        return 200, [self._status_json(n) for n in self.workflow]

    def _ep_project(self, query: dict, body: Any, project: str) -> tuple[int, Any]:
        if project.upper() != self.project and project != self.project_id:
            raise _ApiError(404, [f"No project could be found with key '{project}'."])
        return 200, self._project_json(full=True)

    def _ep_create_issue(self, query: dict, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("fields"), dict):
            raise _ApiError(400, [], {"fields": "The request needs a 'fields' object."})
        fields, errors = body["fields"], {}
        project = fields.get("project")
        if not isinstance(project, dict) or not (
            str(project.get("key", "")).upper() == self.project or str(project.get("id", "")) == self.project_id
        ):
            errors["project"] = "Specify a valid project ID or key"
        issuetype = fields.get("issuetype")
        type_name = None
        if not isinstance(issuetype, dict) or not (issuetype.get("name") or issuetype.get("id")):
            errors["issuetype"] = "Specify an issue type"
        else:
            type_name = next(
                (n for n, t in _ISSUE_TYPES.items() if n == issuetype.get("name") or t[0] == str(issuetype.get("id"))),
                None,
            )
            if type_name is None:
                errors["issuetype"] = "Specify a valid issue type"
        if not isinstance(fields.get("summary"), str) or not fields["summary"].strip():
            errors["summary"] = "You must specify a summary of the issue."
        if errors:
            raise _ApiError(400, [], errors)
        now = _format_time(self.clock())
        key = f"{self.project}-{self._counters['issue_num']}"
        issue = {
            "id": str(self._counters["issue_id"]),
            "key": key,
            "fields": {
                "summary": "",
                "description": None,
                "labels": [],
                "status": "To Do",
                "issuetype": type_name,
                "project": self.project,
                "priority": "Medium",
                "resolution": None,
                "created": now,
                "updated": now,
                "statuscategorychangedate": now,
                "resolutiondate": None,
            },
            "comments": [],
            "remote_links": [],
            "changelog": [],
        }
        self._apply_edits(issue, fields, body.get("update") or {}, "api", creating=True)  # raises before storing
        self._next("issue_id")
        self._next("issue_num")
        self._issues[key] = issue
        return 201, {"id": issue["id"], "key": key, "self": f"{self._api}/issue/{issue['id']}"}

    def _ep_get_issue(self, query: dict, body: Any, issue: str) -> tuple[int, Any]:
        found = self._issue(issue)
        return 200, self._issue_json(found, _list_param(query.get("fields")), str(query.get("expand") or ""))

    def _ep_edit_issue(self, query: dict, body: Any, issue: str) -> tuple[int, Any]:
        found = self._issue(issue)
        if not isinstance(body, dict):
            raise _ApiError(400, ["The request body must be a JSON object."])
        self._apply_edits(found, body.get("fields") or {}, body.get("update") or {}, "api", creating=False)
        return 204, None

    def _ep_delete_issue(self, query: dict, body: Any, issue: str) -> tuple[int, Any]:
        found = self._issue(issue)
        del self._issues[found["key"]]
        for link_id in [i for i, link in self._issue_links.items() if found["id"] in (link["inward"], link["outward"])]:
            del self._issue_links[link_id]
        return 204, None

    def _ep_comments(self, query: dict, body: Any, issue: str) -> tuple[int, Any]:
        found = self._issue(issue)
        comments = [self._comment_json(found, c) for c in found["comments"]]
        if str(query.get("orderBy", "")).lstrip("+") == "-created":
            comments.reverse()
        start = _int_param(query, "startAt", 0)
        size = _int_param(query, "maxResults", 5000)
        return 200, {
            "startAt": start,
            "maxResults": size,
            "total": len(comments),
            "comments": comments[start : start + size],
        }

    def _ep_add_comment(self, query: dict, body: Any, issue: str) -> tuple[int, Any]:
        found = self._issue(issue)
        return 201, self._comment_json(found, self._add_comment(found, body, "api"))

    def _ep_comment(self, query: dict, body: Any, issue: str, comment: str) -> tuple[int, Any]:
        found = self._issue(issue)
        for c in found["comments"]:
            if c["id"] == comment:
                return 200, self._comment_json(found, c)
        raise _ApiError(404, [f"Can not find a comment for the id: {comment}."])

    def _ep_transitions(self, query: dict, body: Any, issue: str) -> tuple[int, Any]:
        found = self._issue(issue)
        wanted = query.get("transitionId")
        return 200, {"expand": "transitions", "transitions": self._transitions_json(found, wanted)}

    def _ep_do_transition(self, query: dict, body: Any, issue: str) -> tuple[int, Any]:
        found = self._issue(issue)
        transition = body.get("transition") if isinstance(body, dict) else None
        if not isinstance(transition, dict) or transition.get("id") in (None, ""):
            raise _ApiError(400, ["Missing 'transition' identifier"])
        tid = str(transition["id"])
        target = next((t for i, _, t in _TRANSITIONS if i == tid), None)
        if target is None or target == found["fields"]["status"] or target not in self.workflow:
            raise _ApiError(400, [f"Transition id '{tid}' is not valid for this issue."])
        extra_fields, update = body.get("fields") or {}, body.get("update") or {}
        if extra_fields or update:
            self._apply_edits(found, extra_fields, update, "api", creating=False)
        self._change_status(found, target, actor="api")
        return 204, None

    def _ep_remote_links(self, query: dict, body: Any, issue: str) -> tuple[int, Any]:
        found = self._issue(issue)
        global_id = query.get("globalId")
        if global_id is not None:
            for link in found["remote_links"]:
                if link.get("globalId") == global_id:
                    return 200, self._remote_link_json(found, link)
            raise _ApiError(404, [f"No remote link with globalId '{global_id}' exists on this issue."])
        return 200, [self._remote_link_json(found, link) for link in found["remote_links"]]

    def _ep_add_remote_link(self, query: dict, body: Any, issue: str) -> tuple[int, Any]:
        found = self._issue(issue)
        link = _remote_link_from(body)
        global_id = link.get("globalId")
        existing = next((x for x in found["remote_links"] if global_id and x.get("globalId") == global_id), None)
        if existing is not None:  # Jira upserts by globalId
            link["id"] = existing["id"]
            existing.clear()
            existing.update(link)
            return 200, {"id": link["id"], "self": self._remote_link_json(found, link)["self"]}
        link["id"] = self._next("remotelink")
        found["remote_links"].append(link)
        return 201, {"id": link["id"], "self": self._remote_link_json(found, link)["self"]}

    def _ep_delete_remote_links(self, query: dict, body: Any, issue: str) -> tuple[int, Any]:
        found = self._issue(issue)
        global_id = query.get("globalId")
        if not global_id:
            raise _ApiError(400, ["The globalId parameter is required."])
        kept = [x for x in found["remote_links"] if x.get("globalId") != global_id]
        if len(kept) == len(found["remote_links"]):
            raise _ApiError(404, [f"No remote link with globalId '{global_id}' exists on this issue."])
        found["remote_links"][:] = kept
        return 204, None

    def _remote_link(self, found: dict, link: str) -> dict:
        for x in found["remote_links"]:
            if str(x["id"]) == link:
                return x
        raise _ApiError(404, [f"No remote link with id '{link}' exists on this issue."])

    def _ep_remote_link(self, query: dict, body: Any, issue: str, link: str) -> tuple[int, Any]:
        found = self._issue(issue)
        return 200, self._remote_link_json(found, self._remote_link(found, link))

    def _ep_put_remote_link(self, query: dict, body: Any, issue: str, link: str) -> tuple[int, Any]:
        found = self._issue(issue)
        existing = self._remote_link(found, link)
        new = _remote_link_from(body)
        new["id"] = existing["id"]
        existing.clear()
        existing.update(new)
        return 204, None

    def _ep_delete_remote_link(self, query: dict, body: Any, issue: str, link: str) -> tuple[int, Any]:
        found = self._issue(issue)
        existing = self._remote_link(found, link)
        found["remote_links"].remove(existing)
        return 204, None

    def _ep_link_types(self, query: dict, body: Any) -> tuple[int, Any]:
        return 200, {"issueLinkTypes": [self._link_type_json(t) for t in _LINK_TYPES]}

    def _ep_create_link(self, query: dict, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict):
            raise _ApiError(400, ["The request body must be a JSON object."])
        wanted = body.get("type") or {}
        link_type = next((t for t in _LINK_TYPES if wanted.get("name") == t[1] or str(wanted.get("id")) == t[0]), None)
        if link_type is None:
            raise _ApiError(404, [f"No issue link type with name '{wanted.get('name') or wanted.get('id')}' found."])
        sides = []
        for side in ("inwardIssue", "outwardIssue"):
            ref = body.get(side) or {}
            found = self._find_issue(str(ref.get("key") or ref.get("id") or ""))
            if found is None:
                raise _ApiError(404, [_NO_ISSUE])
            sides.append(found)
        link_id = str(self._next("issuelink"))
        self._issue_links[link_id] = {
            "id": link_id,
            "type": link_type,
            "inward": sides[0]["id"],
            "outward": sides[1]["id"],
        }
        comment = body.get("comment")
        if isinstance(comment, dict) and comment.get("body"):
            self._add_comment(sides[0], comment, "api")
        return 201, None

    def _ep_issue_link(self, query: dict, body: Any, link: str) -> tuple[int, Any]:
        found = self._issue_links.get(link)
        if found is None:
            raise _ApiError(404, [f"No issue link with id '{link}' exists."])
        inward, outward = self._issue_by_id(found["inward"]), self._issue_by_id(found["outward"])
        return 200, {
            "id": link,
            "self": f"{self._api}/issueLink/{link}",
            "type": self._link_type_json(found["type"]),
            "inwardIssue": self._linked_issue_json(inward),
            "outwardIssue": self._linked_issue_json(outward),
        }

    def _ep_delete_issue_link(self, query: dict, body: Any, link: str) -> tuple[int, Any]:
        if self._issue_links.pop(link, None) is None:
            raise _ApiError(404, [f"No issue link with id '{link}' exists."])
        return 204, None

    def _ep_search_removed(self, query: dict, body: Any) -> tuple[int, Any]:
        raise _ApiError(410, [_REMOVED_SEARCH_MESSAGE])

    def _ep_search_jql(self, query: dict, body: Any) -> tuple[int, Any]:
        params = dict(query)
        if isinstance(body, dict):  # the POST form: the same parameters in a JSON object
            params.update({k: v for k, v in body.items() if v is not None})
        elif body is not None:
            raise _ApiError(400, ["The request body must be a JSON object."])
        jql = params.get("jql")
        if not isinstance(jql, str):
            jql = ""
        fields = _list_param(params.get("fields"))
        selected = _select_fields(fields, ids_only_default=True)
        ids_only = selected is None or not (selected - {"id", "key", "issuekey"})
        cap = _MAX_PAGE_IDS_ONLY if ids_only else _MAX_PAGE_WITH_FIELDS
        size = min(max(_int_param(params, "maxResults", 50), 1), cap)
        matches = self._run_jql(jql)
        digest = hashlib.sha256(jql.encode()).hexdigest()[:16]
        start = 0
        token = params.get("nextPageToken")
        if token:
            try:
                decoded = json.loads(base64.urlsafe_b64decode(str(token).encode() + b"==").decode())
                start, ok = int(decoded["o"]), decoded["q"] == digest
            except (ValueError, KeyError, TypeError):
                ok = False
            if not ok:
                raise _ApiError(400, ["The nextPageToken is invalid or was issued for another query."])
        page = matches[start : start + size]
        expand = str(params.get("expand") or "")
        answer: dict[str, Any] = {"issues": [self._issue_json(i, fields, expand, ids_only_default=True) for i in page]}
        if start + size < len(matches):
            raw = json.dumps({"o": start + size, "q": digest}, separators=(",", ":")).encode()
            answer["nextPageToken"] = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        answer["isLast"] = start + size >= len(matches)
        if "names" in {e.strip() for e in expand.split(",")}:
            answer["names"] = {k: _FIELD_NAMES[k] for k in sorted(selected or ()) if k in _FIELD_NAMES}
        return 200, answer

    # ------------------------------------------------------------------ JQL

    def _run_jql(self, jql: str) -> list[dict]:
        clauses, order = _parse_jql(jql)
        if not clauses:
            raise _jql_error(
                "Unbounded JQL queries are not allowed here. Please add a search restriction to your query."
            )
        predicates = [self._predicate(*clause) for clause in clauses]
        found = [i for i in self._issues.values() if all(p(i) for p in predicates)]
        found.sort(key=lambda i: int(i["id"]), reverse=not order)
        for name, descending in reversed(order):  # stable sorts, last key first
            found.sort(key=_SORT_KEYS[name], reverse=descending)
        return found

    def _predicate(self, name: str, op: str, values: list[str]) -> Callable[[dict], bool]:
        name_l = name.lower()
        field_name = {"type": "issuetype", "issuekey": "key", "updateddate": "updated", "createddate": "created"}.get(
            name_l, name_l
        )
        if field_name in ("project", "status", "issuetype", "key", "id"):
            if op not in ("=", "!=", "in", "not in"):
                raise _unsupported(f"the operator '{op}' for the field '{name}'")
            wanted = {self._resolve_jql_value(field_name, v) for v in values}
            attr = {
                "project": lambda i: i["fields"]["project"],
                "status": lambda i: i["fields"]["status"],
                "issuetype": lambda i: i["fields"]["issuetype"],
                "key": lambda i: i["id"],
                "id": lambda i: i["id"],
            }[field_name]
            if op in ("=", "in"):
                return lambda i: attr(i) in wanted
            return lambda i: attr(i) not in wanted
        if field_name == "labels":
            if op not in ("=", "in"):
                raise _unsupported(f"the operator '{op}' for labels (only = and in)")
            wanted = set(values)
            return lambda i: bool(wanted & set(i["fields"]["labels"]))
        if field_name in ("updated", "created"):
            if op not in ("=", "!=", ">", ">=", "<", "<="):
                raise _jql_error(f"The operator '{op}' is not supported by the '{name}' field.")
            if len(values) != 1:
                raise _jql_error(f"The operator '{op}' needs a single value for the '{name}' field.")
            bound = self._jql_date(values[0], name)
            compare = {
                "=": lambda a: a == bound,
                "!=": lambda a: a != bound,
                ">": lambda a: a > bound,
                ">=": lambda a: a >= bound,
                "<": lambda a: a < bound,
                "<=": lambda a: a <= bound,
            }[op]
            return lambda i: compare(_parse_time(i["fields"][field_name]))
        if field_name in _ISSUE_FIELD_IDS or field_name in ("summary", "description", "text"):
            raise _unsupported(f"searching by '{name}'")
        raise _jql_error(f"Field '{name}' does not exist or you do not have permission to view it.")

    def _resolve_jql_value(self, field_name: str, value: str) -> str:
        if field_name == "project":
            if value.upper() == self.project or value == self.project_id or value == self.project:
                return self.project
            raise _jql_error(f"The value '{value}' does not exist for the field 'project'.")
        if field_name == "status":
            found = next(
                (
                    n
                    for n, s in _STATUSES.items()
                    if n in self.workflow and (n.lower() == value.lower() or s[0] == value)
                ),
                None,
            )
            if found is None:
                raise _jql_error(f"The value '{value}' does not exist for the field 'status'.")
            return found
        if field_name == "issuetype":
            found = next((n for n, t in _ISSUE_TYPES.items() if n.lower() == value.lower() or t[0] == value), None)
            if found is None:
                raise _jql_error(f"The value '{value}' does not exist for the field 'issuetype'.")
            return found
        if field_name == "id" and value.isdigit():
            issue = self._issue_by_id(value)
            if issue is None:
                raise _jql_error(f"An issue with key '{value}' does not exist for field 'id'.")
            return issue["id"]
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*-\d+", value):
            raise _jql_error(f"The issue key '{value}' for field '{field_name}' is invalid.")
        issue = self._issues.get(value.upper())
        if issue is None:
            raise _jql_error(f"An issue with key '{value}' does not exist for field '{field_name}'.")
        return issue["id"]

    def _jql_date(self, value: str, name: str) -> datetime:
        text = value.strip()
        for fmt in ("%Y/%m/%d %H:%M", "%Y-%m-%d %H:%M", "%Y/%m/%d", "%Y-%m-%d"):
            try:
                return datetime.strptime(text, fmt).replace(tzinfo=timezone.utc)
            except ValueError:
                pass
        if text.isdigit():
            return datetime.fromtimestamp(int(text) / 1000, tz=timezone.utc)
        relative = re.fullmatch(r"([-+]?)(\d+)([wdhm])", text)
        if relative:
            sign, amount, unit = relative.groups()
            delta = timedelta(**{{"w": "weeks", "d": "days", "h": "hours", "m": "minutes"}[unit]: int(amount)})
            return self.clock() - delta if sign == "-" else self.clock() + delta
        raise _jql_error(
            f"Date value '{value}' for field '{name}' is invalid. Valid formats include: 'yyyy/MM/dd HH:mm', "
            "'yyyy-MM-dd HH:mm', 'yyyy/MM/dd', 'yyyy-MM-dd', or a period format e.g. '-5d', '4w 2d'."
        )


# ---------------------------------------------------------------------- helpers


def _status_item(old: str, new: str) -> dict:
    return {
        "field": "status",
        "fieldtype": "jira",
        "fieldId": "status",
        "from": _STATUSES[old][0],
        "fromString": old,
        "to": _STATUSES[new][0],
        "toString": new,
    }


def _change_item(name: str, old: Any, new: Any) -> dict:
    def text(value: Any) -> str | None:
        if isinstance(value, list):
            return " ".join(value)
        return value

    return {
        "field": name,
        "fieldtype": "jira",
        "fieldId": name,
        "from": None,
        "fromString": text(old),
        "to": None,
        "toString": text(new),
    }


def _label_error(labels: Any) -> str | None:
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        return "Labels must be a list of strings."
    for label in labels:
        if not label:
            return "Labels cannot be empty."
        if re.search(r"\s", label):
            return f"The label '{label}' contains spaces which is invalid."
        if len(label) > 255:
            return f"The label '{label[:20]}...' exceeds the 255 character limit."
    return None


def _set_field(fields: dict, name: str, value: Any) -> str | None:
    """Sets a field in ``fields`` (the stored simple form); returns an error text instead when invalid."""
    if name == "summary":
        if not isinstance(value, str) or not value.strip():
            return "You must specify a summary of the issue."
        if "\n" in value or "\r" in value:
            return "The summary is invalid because it contains newline characters."
        if len(value) > 255:
            return "Summary must be less than 255 characters."
        fields["summary"] = value
    elif name == "description":
        if value is not None and not isinstance(value, str):  # e.g. an ADF document: v3 only
            return "Operation value must be a string"
        fields["description"] = value
    elif name == "labels":
        error = _label_error(value)
        if error:
            return error
        fields["labels"] = list(dict.fromkeys(value))
    elif name == "priority":
        wanted = value if isinstance(value, dict) else {}
        found = next((n for n, p in _PRIORITIES.items() if n == wanted.get("name") or p == str(wanted.get("id"))), None)
        if found is None:
            return "Specify a valid priority"
        fields["priority"] = found
    return None


def _apply_operation(fields: dict, name: str, op: Any) -> str | None:
    if not isinstance(op, dict) or len(op) != 1:
        return 'Each operation must be an object like {"set": ...}, {"add": ...} or {"remove": ...}.'
    verb, value = next(iter(op.items()))
    if verb == "set":
        return _set_field(fields, name, value)
    if name != "labels" or verb not in ("add", "remove"):
        return f"The operation '{verb}' is not supported for the field '{name}'."
    error = _label_error([value])
    if error:
        return error
    if verb == "add" and value not in fields["labels"]:
        fields["labels"].append(value)
    elif verb == "remove" and value in fields["labels"]:
        fields["labels"].remove(value)
    return None


def _remote_link_from(body: Any) -> dict:
    if not isinstance(body, dict):
        raise _ApiError(400, ["The request body must be a JSON object."])
    obj = body.get("object")
    errors = {}
    if not isinstance(obj, dict):
        errors["object"] = "'object' is required."
    else:
        for key in ("url", "title"):
            if not isinstance(obj.get(key), str) or not obj[key].strip():
                errors[key] = f"'{key}' is required."
    if errors:
        raise _ApiError(400, [], errors)
    link: dict[str, Any] = {"object": copy.deepcopy(obj)}
    for key in ("globalId", "relationship"):
        if isinstance(body.get(key), str):
            link[key] = body[key]
    link["application"] = copy.deepcopy(body["application"]) if isinstance(body.get("application"), dict) else {}
    return link


def _select_fields(fields: list[str] | None, ids_only_default: bool) -> set[str] | None:
    """The issue fields to answer, or None for "the id only" (search/jql's default)."""
    items = [f.strip() for f in (fields or []) if f and f.strip()]
    if not items:
        return None if ids_only_default else set(_ISSUE_FIELD_IDS)
    if items == ["id"]:
        return None
    include: set[str] = set()
    exclude: set[str] = set()
    base: set[str] = set()
    for item in items:
        if item == "*all":
            base |= set(_ISSUE_FIELD_IDS)
        elif item == "*navigable":
            base |= set(_NAVIGABLE)
        elif item.startswith("-"):
            exclude.add(item[1:])
        else:
            include.add(item)
    if exclude and not base and not include:
        base = set(_NAVIGABLE)
    return ((base | include) - exclude) | ({"id"} if "id" in include else set())


def _list_param(value: Any) -> list[str] | None:
    if value is None:
        return None
    values = value if isinstance(value, list) else [value]
    return [part for v in values for part in str(v).split(",")]


def _int_param(params: dict, name: str, default: int) -> int:
    value = params.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _ApiError(400, [f"The '{name}' parameter must be an integer, not '{value}'."]) from None


def _flatten(query: dict[str, list[str]]) -> dict[str, Any]:
    return {k: (v[0] if len(v) == 1 else v) for k, v in query.items()}


_SORT_KEYS: dict[str, Callable[[dict], Any]] = {
    "updated": lambda i: _parse_time(i["fields"]["updated"]),
    "created": lambda i: _parse_time(i["fields"]["created"]),
    "key": lambda i: (i["key"].rsplit("-", 1)[0], int(i["key"].rsplit("-", 1)[1])),
    "id": lambda i: int(i["id"]),
}
_JQL_TOKEN = re.compile(
    r"""\s*(?:(?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|(?P<op>!=|>=|<=|!~|~|=|>|<)|(?P<punct>[(),])"""
    r"""|(?P<word>[^\s"'(),=!<>~]+))"""
)


def _tokenize(jql: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    while pos < len(jql):
        if not jql[pos:].strip():
            break
        match = _JQL_TOKEN.match(jql, pos)
        if match is None:
            raise _jql_error(
                f"Error in the JQL Query: the character '{jql[pos:].strip()[0]}' is a reserved JQL "
                f"character. (line 1, character {pos + 1})"
            )
        kind = match.lastgroup or "word"
        value = match.group(kind)
        if kind == "str":
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        tokens.append((kind, value))
        pos = match.end()
    return tokens


def _parse_jql(jql: str) -> tuple[list[tuple[str, str, list[str]]], list[tuple[str, bool]]]:
    """(clauses as (field, operator, values), order as (field, descending))."""
    tokens = _tokenize(jql)
    pos = 0

    def peek(offset: int = 0) -> tuple[str, str] | None:
        return tokens[pos + offset] if pos + offset < len(tokens) else None

    def is_word(token: tuple[str, str] | None, *words: str) -> bool:
        return token is not None and token[0] == "word" and token[1].lower() in words

    def value_token() -> str:
        nonlocal pos
        token = peek()
        if token is None or token[0] not in ("str", "word"):
            raise _jql_error(
                f"Error in the JQL Query: expecting a value but got "
                f"{'the end of the query' if token is None else repr(token[1])}."
            )
        if token[0] == "word" and peek(1) is not None and peek(1) == ("punct", "("):
            raise _unsupported(f"JQL functions such as {token[1]}()")
        if token[0] == "word" and token[1].lower() in ("empty", "null"):
            raise _unsupported("EMPTY/NULL")
        pos += 1
        return token[1]

    clauses: list[tuple[str, str, list[str]]] = []
    order: list[tuple[str, bool]] = []
    while pos < len(tokens):
        token = peek()
        if is_word(token, "order") and is_word(peek(1), "by"):
            pos += 2
            while True:
                name = value_token()
                if name.lower() not in _SORT_KEYS and name.lower() not in ("issuekey", "updateddate", "createddate"):
                    if name.lower() in _ISSUE_FIELD_IDS:
                        raise _unsupported(f"ORDER BY {name}")
                    raise _jql_error(f"Field '{name}' does not exist or you do not have permission to view it.")
                key = {"issuekey": "key", "updateddate": "updated", "createddate": "created"}.get(
                    name.lower(), name.lower()
                )
                direction = peek()
                if not is_word(direction, "asc", "desc"):
                    raise _unsupported("ORDER BY without an explicit ASC or DESC")
                pos += 1
                order.append((key, direction[1].lower() == "desc"))
                if peek() == ("punct", ","):
                    pos += 1
                    continue
                break
            if pos < len(tokens):
                raise _jql_error(f"Error in the JQL Query: unexpected '{peek()[1]}' after the ORDER BY clause.")
            break
        if clauses:
            if is_word(token, "or"):
                raise _unsupported("OR")
            if not is_word(token, "and"):
                raise _jql_error(f"Error in the JQL Query: Expecting either 'OR' or 'AND' but got '{token[1]}'.")
            pos += 1
            token = peek()
        if token is None:
            raise _jql_error("Error in the JQL Query: expecting a field name at the end of the query.")
        if token == ("punct", "("):
            raise _unsupported("parentheses")
        if is_word(token, "not"):
            raise _unsupported("NOT")
        name = value_token()
        op_token = peek()
        if op_token is None:
            raise _jql_error(f"Error in the JQL Query: expecting an operator after '{name}'.")
        if op_token[0] == "op":
            pos += 1
            op = op_token[1]
            if op in ("~", "!~"):
                raise _unsupported("the text operators ~ and !~")
            clauses.append((name, op, [value_token()]))
        elif is_word(op_token, "in") or (is_word(op_token, "not") and is_word(peek(1), "in")):
            op = "not in" if is_word(op_token, "not") else "in"
            pos += 2 if op == "not in" else 1
            if peek() != ("punct", "("):
                raise _jql_error(f"Error in the JQL Query: expecting '(' after '{op.upper()}'.")
            pos += 1
            values = [value_token()]
            while peek() == ("punct", ","):
                pos += 1
                values.append(value_token())
            if peek() != ("punct", ")"):
                raise _jql_error("Error in the JQL Query: expecting ')' to close the list.")
            pos += 1
            clauses.append((name, op, values))
        elif is_word(op_token, "is", "was", "changed"):
            raise _unsupported(f"the operator {op_token[1].upper()}")
        else:
            raise _jql_error(f"Error in the JQL Query: expecting an operator after '{name}' but got '{op_token[1]}'.")
    return clauses, order


# ---------------------------------------------------------------------- routes

_I = r"(?P<issue>[^/]+)"
_ROUTES: list[tuple[re.Pattern[str], dict[str, Callable[..., tuple[int, Any]]]]] = [
    (re.compile(p), h)
    for p, h in (
        ("serverInfo", {"GET": FakeJira._ep_server_info}),
        ("field", {"GET": FakeJira._ep_fields}),
        ("myself", {"GET": FakeJira._ep_myself}),
        ("issuetype", {"GET": FakeJira._ep_issue_types}),
        ("status", {"GET": FakeJira._ep_statuses}),
        (r"project/(?P<project>[^/]+)", {"GET": FakeJira._ep_project}),
        ("issue", {"POST": FakeJira._ep_create_issue}),
        (
            f"issue/{_I}",
            {"GET": FakeJira._ep_get_issue, "PUT": FakeJira._ep_edit_issue, "DELETE": FakeJira._ep_delete_issue},
        ),
        (f"issue/{_I}/comment", {"GET": FakeJira._ep_comments, "POST": FakeJira._ep_add_comment}),
        (f"issue/{_I}/comment/(?P<comment>[^/]+)", {"GET": FakeJira._ep_comment}),
        (f"issue/{_I}/transitions", {"GET": FakeJira._ep_transitions, "POST": FakeJira._ep_do_transition}),
        (
            f"issue/{_I}/remotelink",
            {
                "GET": FakeJira._ep_remote_links,
                "POST": FakeJira._ep_add_remote_link,
                "DELETE": FakeJira._ep_delete_remote_links,
            },
        ),
        (
            f"issue/{_I}/remotelink/(?P<link>[^/]+)",
            {
                "GET": FakeJira._ep_remote_link,
                "PUT": FakeJira._ep_put_remote_link,
                "DELETE": FakeJira._ep_delete_remote_link,
            },
        ),
        ("issueLinkType", {"GET": FakeJira._ep_link_types}),
        ("issueLink", {"POST": FakeJira._ep_create_link}),
        (r"issueLink/(?P<link>[^/]+)", {"GET": FakeJira._ep_issue_link, "DELETE": FakeJira._ep_delete_issue_link}),
        ("search/jql", {"GET": FakeJira._ep_search_jql, "POST": FakeJira._ep_search_jql}),
        ("search", {"GET": FakeJira._ep_search_removed, "POST": FakeJira._ep_search_removed}),
    )
]


# ---------------------------------------------------------------------- HTTP


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeJira/1.0"

    def do_GET(self) -> None:  # noqa: N802
        self._serve()

    def do_POST(self) -> None:  # noqa: N802
        self._serve()

    def do_PUT(self) -> None:  # noqa: N802
        self._serve()

    def do_DELETE(self) -> None:  # noqa: N802
        self._serve()

    def _serve(self) -> None:
        fake: FakeJira = self.server.fake  # type: ignore[attr-defined]
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        outcome = fake._handle(self.command, unquote(url.path), url.query, raw, headers)
        if outcome is None:  # drop: close the connection without a status line
            self.close_connection = True
            return
        status, extra, body = outcome
        self.send_response(status)
        for name, value in extra.items():
            self.send_header(name, value)
        if body is None:
            if status != 204:  # a 204 carries no Content-Length (RFC 9110)
                self.send_header("Content-Length", "0")
            self.end_headers()
            return
        payload = json.dumps(body).encode("utf-8")
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # keep test output quiet
