"""Notices to a person in Slack (queued in the outbox; nothing while Slack is off)."""

from __future__ import annotations

from typing import Any

from ..adapters import slack
from ..domain.organisation import QmsConfig
from ..store.tables import PersonRow
from ..store.uow import UnitOfWork
from .outbox import enqueue


def notify(
    uow: UnitOfWork, config: QmsConfig, person_id: str, key: str, stream: str, template: str, **context: Any
) -> None:
    """Queue a Slack DM to a person, when Slack is on (else the dashboard and CLI show it)."""
    if slack.settings(config) is None:
        return
    person = uow.session.get(PersonRow, person_id)
    if person is None:
        return
    message = slack.render(template, web_url=config.web.base_url.rstrip("/"), **context)
    enqueue(
        uow,
        key,
        slack.TARGET,
        "post_dm",
        stream,
        {"email": person.email, "slack_id": person.slack_id, "text": message["text"], "blocks": message["blocks"]},
    )
