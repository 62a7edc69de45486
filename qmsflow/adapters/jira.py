"""Jira adapter on the ``jira`` library: the REST calls qmsflow makes, and the settings that switch it on.

Calls go through the library's session, one REST call each (no helper that reads the issue first).
Conventions that make every call idempotent: each issue of a record carries the labels ``qms`` and
``qms-<record id>`` and one remote link with globalId ``qmsflow:<record id>`` (Jira upserts remote
links by globalId). What to send (which status a stage means, which issue type, which link) is
decided at delivery by ``qmsflow.services.jira_outbox`` from the configuration of that moment.

Failures are classified for the outbox (see ``adapters.base``): a 4xx answer is ``JiraRejected``
(with Jira's field errors, so the caller can name the setting at fault); 401, 408, 409, 5xx and
connection problems are ``Unavailable``; 429 and Retry-After are ``RetryLater``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from ..domain.organisation import JiraIntegration, QmsConfig
from .base import DeliveryError, RetryLater, Unavailable

TARGET = "jira"
TRANSIENT = frozenset({401, 408, 409, 423, 425})


@dataclass(frozen=True)
class JiraSettings:
    cfg: JiraIntegration
    email: str | None
    token: str
    webhook_secret: str | None

    @property
    def url(self) -> str:
        return os.environ.get("QMS_JIRA_URL") or self.cfg.url

    def mirrors(self, kind: str | None) -> bool:
        """Whether records of ``kind`` become Jira issues (``integrations.jira.kinds``; CAPA by default)."""
        return kind is not None and self.cfg.kind(kind) is not None

    def issue_type(self, kind: str) -> str:
        resolved = self.cfg.kind(kind)
        return resolved.issue_type if resolved else "Task"

    def status_for(self, stage: str, kind: str = "capa") -> str | None:
        resolved = self.cfg.kind(kind)
        return resolved.statuses.get(stage) if resolved else None

    def stage_for(self, status: str, kind: str = "capa") -> str | None:
        resolved = self.cfg.kind(kind)
        if resolved is None:
            return None
        if status in resolved.inbound:
            return resolved.inbound[status]
        return next((stage for stage, name in resolved.statuses.items() if name == status), None)

    @property
    def on_refused(self) -> str:
        return self.cfg.on_refused


def settings(config: QmsConfig, env: dict[str, str] | None = None) -> JiraSettings | None:
    """Jira settings when switched on: a jira section in qms.yaml and credentials in the environment."""
    env = os.environ if env is None else env
    cfg = config.integrations.jira
    if cfg is None or not cfg.enabled:
        return None
    token = env.get(cfg.token_env)
    email = env.get(cfg.email_env)
    if not token or (cfg.deployment == "cloud" and not email):
        return None
    return JiraSettings(cfg, email, token, env.get(cfg.webhook_secret_env))


def make_client(s: JiraSettings, max_retries: int = 0):  # noqa: ANN201
    """A client that does not retry by itself: the outbox retries, after looking for the label."""
    from jira import JIRA

    options = {"server": s.url}
    auth = {"basic_auth": (s.email, s.token)} if s.cfg.deployment == "cloud" else {"token_auth": s.token}
    # get_server_info=False: no serverInfo call per cycle; qmsflow uses /search/jql itself
    return JIRA(options=options, max_retries=max_retries, timeout=20, get_server_info=False, **auth)


def label_of(record: str) -> str:
    return f"qms-{record}"


def global_id_of(record: str) -> str:
    return f"qmsflow:{record}"


class JiraRejected(DeliveryError):
    """Jira answered 4xx: ``errors`` maps fields to Jira's messages (e.g. ``issuetype``)."""

    def __init__(self, message: str, status: int, errors: dict[str, str], messages: list[str]):
        super().__init__(message)
        self.status = status
        self.errors = errors
        self.messages = messages


class NoTransition(DeliveryError):
    """The issue's workflow offers no transition to the status (and the issue is not in it)."""

    def __init__(self, key: str, status: str, current: str | None, offered: list[str]):
        super().__init__(
            f"{key} is in {current!r} and Jira offers no transition to {status!r} "
            f"(offered: {', '.join(offered) or 'none'})"
        )
        self.current = current
        self.offered = offered


@dataclass
class JiraAdapter:
    client: Any
    s: JiraSettings
    calls: int = 0
    _transition_ids: dict[str, str] = field(default_factory=dict)

    # -------------------------------------------------------------- writes

    def create_issue(self, record: str, fields: dict[str, Any], link: dict[str, str], look_first: bool) -> dict:
        """The record's issue with its remote link. ``look_first`` (a retry): an issue with the record's
        label, made by an attempt whose answer was lost, is taken instead of a second one; it gets its
        remote link too."""
        existing = self.find(record) if look_first else None
        if existing:
            result: dict[str, Any] = {"key": existing, "found": True}
        else:
            labels = ["qms", label_of(record)]
            created = self._request("POST", "issue", body={"fields": {**fields, "labels": labels}})
            result = {"key": created["key"], "id": created["id"]}  # the raw endpoint answers both: no read-back
        self.link(result["key"], record, link)
        return result

    def link(self, key: str, record: str, link: dict[str, str]) -> None:
        """Create or update (same globalId) the issue's link back to qmsflow."""
        self._request(
            "POST",
            f"issue/{key}/remotelink",
            body={"globalId": global_id_of(record), "relationship": "system of record", "object": link},
        )

    def move(self, key: str, status: str) -> str:
        """Put the issue in ``status``: "moved", or "already" when it is there. Raises ``NoTransition``.

        Transition ids are cached by target status (one lookup per pass when the workflow's transitions
        are global); a cached id the issue's status does not offer is looked up again for that issue.
        """
        cached = self._transition_ids.get(status)
        if cached is not None:
            try:
                self._request("POST", f"issue/{key}/transitions", body={"transition": {"id": cached}})
                return "moved"
            except JiraRejected as exc:
                if exc.status != 400:
                    raise
        offered = self.transitions(key)
        if status in offered:
            self._request("POST", f"issue/{key}/transitions", body={"transition": {"id": offered[status]}})
            return "moved"
        current = self.status_of(key)
        if current == status:
            return "already"
        raise NoTransition(key, status, current, sorted(offered))

    def comment(self, key: str, body: str) -> None:
        self._request("POST", f"issue/{key}/comment", body={"body": body})

    # -------------------------------------------------------------- reads

    def transitions(self, key: str) -> dict[str, str]:
        """Target status name -> transition id, as the issue's current status offers them."""
        offered = {t["to"]["name"]: t["id"] for t in self._request("GET", f"issue/{key}/transitions")["transitions"]}
        self._transition_ids.update(offered)
        return offered

    def status_of(self, key: str) -> str | None:
        issue = self._request("GET", f"issue/{key}", params={"fields": "status"})
        return ((issue.get("fields") or {}).get("status") or {}).get("name")

    def find(self, record: str) -> str | None:
        result = self._request(
            "GET",
            "search/jql",
            params={
                "jql": f'project = {self.s.cfg.project} AND labels = "{label_of(record)}"',
                "maxResults": 1,
                "fields": "key",
            },
        )
        issues = result.get("issues", [])
        return (issues[0].get("key") or issues[0].get("id")) if issues else None

    def changed_since(self, since: str) -> list[dict[str, Any]]:
        """Issues of qmsflow updated at or after ``since`` ("YYYY-MM-DD HH:MM"), all pages."""
        jql = f'project = {self.s.cfg.project} AND labels = "qms" AND updated >= "{since}" ORDER BY updated ASC'
        out, token = [], None
        while True:
            params: dict[str, Any] = {"jql": jql, "maxResults": 100, "fields": "labels,status,updated"}
            if token:
                params["nextPageToken"] = token
            page = self._request("GET", "search/jql", params=params)
            out.extend(page.get("issues", []))
            token = page.get("nextPageToken")
            if not token or page.get("isLast"):
                return out

    # -------------------------------------------------------------- raw REST

    def _request(self, method: str, path: str, params: dict | None = None, body: dict | None = None) -> Any:
        from jira.exceptions import JIRAError
        from requests.exceptions import RequestException

        self.calls += 1
        url = f"{self.s.url.rstrip('/')}/rest/api/2/{path}"
        try:
            response = self.client._session.request(
                method, url, params=params, data=None if body is None else json.dumps(body)
            )
        except JIRAError as exc:
            raise _classify(exc, f"{method} {path}") from None
        except RequestException as exc:
            raise Unavailable(f"Jira {method} {path}: {exc.__class__.__name__}: {exc}") from None
        return response.json() if response.content else None


def _classify(exc: Any, what: str) -> Exception:
    status = exc.status_code
    response = exc.response
    retry = response.headers.get("Retry-After") if response is not None else None  # exc.headers: the request's
    if status == 429 or retry:
        try:
            seconds = float(retry or 30)
        except ValueError:
            seconds = 30.0
        return RetryLater(f"Jira answered {status} to {what}", seconds)
    if status is None or status >= 500 or status in TRANSIENT:
        return Unavailable(f"Jira answered {status} to {what}: {exc.text}")
    errors: dict[str, str] = {}
    messages: list[str] = []
    try:
        body = response.json() if response is not None else {}
        errors = {str(k): str(v) for k, v in (body.get("errors") or {}).items()}
        messages = [str(m) for m in body.get("errorMessages") or []]
    except (ValueError, AttributeError):
        pass
    detail = "; ".join([*messages, *(f"{k}: {v}" for k, v in errors.items())]) or str(exc.text)
    return JiraRejected(f"Jira refused {what} (HTTP {status}): {detail}", status, errors, messages)
