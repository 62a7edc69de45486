"""Which outbox targets are switched on, and one delivery pass over the outbox."""

from __future__ import annotations

from ..adapters import jira, slack
from ..adapters.base import Handler
from ..domain.organisation import QmsConfig
from ..store.db import Database
from .outbox import DeliveryReport, deliver_pending


def handlers_for(config: QmsConfig) -> dict[str, Handler]:
    handlers: dict[str, Handler] = {}
    settings = slack.settings(config)
    if settings is not None:
        handlers[slack.TARGET] = slack.SlackAdapter(slack.make_client(settings))
    jira_settings = jira.settings(config)
    if jira_settings is not None:
        handlers[jira.TARGET] = _lazy_jira(jira_settings)
    return handlers


def _lazy_jira(settings: jira.JiraSettings) -> Handler:
    """Connect to Jira only when there is something to deliver (construction costs a call)."""
    adapter: list[jira.JiraAdapter] = []

    def handle(action, payload, resolve):  # noqa: ANN001, ANN202
        if not adapter:
            adapter.append(jira.JiraAdapter(jira.make_client(settings), settings))
        return adapter[0](action, payload, resolve)

    return handle


def deliver(db: Database, config: QmsConfig) -> DeliveryReport:
    handlers = handlers_for(config)
    return deliver_pending(db, handlers) if handlers else DeliveryReport()
