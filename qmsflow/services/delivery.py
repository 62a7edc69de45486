"""Which outbox targets are switched on, and one delivery pass over the outbox."""

from __future__ import annotations

import os
from datetime import datetime

from ..adapters import jira, slack
from ..adapters.base import Handler
from ..domain.organisation import QmsConfig, SlackIntegration
from ..store.db import Database
from .jira_outbox import JiraDelivery, config_fingerprint
from .outbox import DeliveryReport, deliver_pending, fingerprint


def handlers_for(db: Database, config: QmsConfig) -> dict[str, Handler]:
    handlers: dict[str, Handler] = {}
    settings = slack.settings(config)
    if settings is not None:
        handlers[slack.TARGET] = slack.SlackAdapter(slack.make_client(settings))
    jira_settings = jira.settings(config)
    if jira_settings is not None:
        handlers[jira.TARGET] = JiraDelivery(db, config, jira_settings)
    return handlers


def fingerprints(config: QmsConfig) -> dict[str, str]:
    """Per target, a digest of the configuration its messages are resolved against."""
    slack_cfg = config.integrations.slack or SlackIntegration()
    return {
        jira.TARGET: config_fingerprint(config),
        slack.TARGET: fingerprint(
            {
                "slack": slack_cfg.model_dump(mode="json"),
                "url": os.environ.get("QMS_SLACK_BASE_URL"),
                "base_url": config.web.base_url,
            }
        ),
    }


def deliver(db: Database, config: QmsConfig, now: datetime | None = None) -> DeliveryReport:
    handlers = handlers_for(db, config)
    if not handlers:
        return DeliveryReport()
    configs = {target: digest for target, digest in fingerprints(config).items() if target in handlers}
    return deliver_pending(db, handlers, now=now, park_after=config.integrations.outbox.park_after, configs=configs)
