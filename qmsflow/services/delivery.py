"""Which outbox targets are switched on, and one delivery pass over the outbox."""

from __future__ import annotations

from ..adapters import slack
from ..adapters.base import Handler
from ..domain.organisation import QmsConfig
from ..store.db import Database
from .outbox import DeliveryReport, deliver_pending


def handlers_for(config: QmsConfig) -> dict[str, Handler]:
    handlers: dict[str, Handler] = {}
    settings = slack.settings(config)
    if settings is not None:
        handlers[slack.TARGET] = slack.SlackAdapter(slack.make_client(settings))
    return handlers


def deliver(db: Database, config: QmsConfig) -> DeliveryReport:
    handlers = handlers_for(config)
    return deliver_pending(db, handlers) if handlers else DeliveryReport()
