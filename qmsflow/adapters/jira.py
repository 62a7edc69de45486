"""Jira adapter on the ``jira`` library: delivers outbox rows for CAPAs, searches for reconciliation.

Calls go through the library's session; creates, updates, transitions and comments use the REST
endpoints directly (one call each) instead of helpers that read the issue first. Idempotency: every
issue carries the label ``qms-<record id>`` and a remote link with globalId ``qmsflow:<record id>``;
a create that is retried looks for the label first, so a lost response never makes a duplicate.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from ..domain.organisation import JiraIntegration, QmsConfig
from .base import DeliveryError, Resolver, RetryLater

TARGET = "jira"


@dataclass(frozen=True)
class JiraSettings:
    cfg: JiraIntegration
    email: str | None
    token: str
    webhook_secret: str | None

    @property
    def url(self) -> str:
        return os.environ.get("QMS_JIRA_URL") or self.cfg.url

    def issue_type(self, kind: str) -> str:
        return self.cfg.issue_types.get(kind, "Task")

    def status_for(self, stage: str) -> str | None:
        return self.cfg.statuses.get(stage)

    def stage_for(self, status: str) -> str | None:
        if status in self.cfg.inbound:
            return self.cfg.inbound[status]
        return next((stage for stage, name in self.cfg.statuses.items() if name == status), None)

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


@dataclass
class JiraAdapter:
    client: Any
    s: JiraSettings
    calls: int = 0
    _transition_ids: dict[str, str] = field(default_factory=dict)

    # -------------------------------------------------------------- outbox handler

    def __call__(self, action: str, payload: dict[str, Any], resolve: Resolver) -> dict[str, Any]:
        from jira.exceptions import JIRAError
        from requests.exceptions import RequestException

        try:
            if action == "create":
                return self._create(payload)
            key = self._key(payload, resolve)
            if action == "transition":
                self._transition(key, payload["status"])
            elif action == "comment":
                self._post(f"issue/{key}/comment", {"body": payload["body"]})
            elif action == "update":
                self._put(f"issue/{key}", {"fields": payload["fields"]})
            else:
                raise DeliveryError(f"unknown Jira action {action!r}")
            return {"key": key}
        except JIRAError as exc:
            # exc.headers are the request's; Retry-After is on the response
            headers = exc.response.headers if exc.response is not None else {}
            retry = headers.get("Retry-After")
            if exc.status_code in (429, 503) or retry:
                raise RetryLater(f"Jira answered {exc.status_code}", float(retry or 30)) from None
            raise DeliveryError(f"Jira {action} failed: HTTP {exc.status_code}: {exc.text}") from None
        except RequestException as exc:
            raise DeliveryError(f"Jira {action}: {exc.__class__.__name__}: {exc}") from None

    def _key(self, payload: dict[str, Any], resolve: Resolver) -> str:
        created = resolve(payload["create_key"])
        if created:
            return created["key"]
        found = self.find(payload["record"])
        if found is None:
            raise DeliveryError(f"no Jira issue for {payload['record']} yet")
        return found

    def _create(self, payload: dict[str, Any]) -> dict[str, Any]:
        record = payload["record"]
        if payload.get("_attempt", 0) > 0:  # a retry: the first attempt may have created it
            existing = self.find(record)
            if existing:
                return {"key": existing, "found": True}
        created = self._post(
            "issue",
            {
                "fields": {
                    "project": {"key": self.s.cfg.project},
                    "summary": payload["summary"],
                    "description": payload["description"],
                    "issuetype": {"name": payload["issue_type"]},
                    "labels": payload["labels"],
                }
            },
        )  # one call: the raw endpoint answers id and key, no read-back needed
        issue_key, issue_id = created["key"], created["id"]
        self._post(
            f"issue/{issue_key}/remotelink",
            {
                "globalId": f"qmsflow:{record}",
                "relationship": "system of record",
                "object": {
                    "url": f"{os.environ.get('QMS_WEB_URL', 'http://127.0.0.1:8000')}/capas#{record}",
                    "title": f"qmsflow {record}",
                },
            },
        )
        return {"key": issue_key, "id": issue_id}

    def _transition(self, key: str, status: str) -> None:
        if status not in self._transition_ids:
            self.calls += 1
            for t in self._get(f"issue/{key}/transitions")["transitions"]:
                self._transition_ids[t["to"]["name"]] = t["id"]
        transition = self._transition_ids.get(status)
        if transition is None:
            raise DeliveryError(f"Jira offers no transition to {status!r} (check integrations.jira.statuses)")
        self._post(f"issue/{key}/transitions", {"transition": {"id": transition}})

    # -------------------------------------------------------------- reads

    def find(self, record: str) -> str | None:
        self.calls += 1
        result = self._get(
            "search/jql",
            params={
                "jql": f'project = {self.s.cfg.project} AND labels = "qms-{record}"',
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
            self.calls += 1
            params: dict[str, Any] = {"jql": jql, "maxResults": 100, "fields": "labels,status,updated"}
            if token:
                params["nextPageToken"] = token
            page = self._get("search/jql", params=params)
            out.extend(page.get("issues", []))
            token = page.get("nextPageToken")
            if not token or page.get("isLast"):
                return out

    # -------------------------------------------------------------- raw REST

    def _url(self, path: str) -> str:
        return f"{self.s.url.rstrip('/')}/rest/api/2/{path}"

    def _get(self, path: str, params: dict | None = None) -> dict:
        response = self.client._session.get(self._url(path), params=params)
        return response.json()

    def _post(self, path: str, body: dict) -> dict | None:
        self.calls += 1
        response = self.client._session.post(self._url(path), data=json.dumps(body))
        return response.json() if response.content else None

    def _put(self, path: str, body: dict) -> None:
        self.calls += 1
        self.client._session.put(self._url(path), data=json.dumps(body))
