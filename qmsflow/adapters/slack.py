"""Slack adapter: sends outbox messages with the real ``slack_sdk.WebClient``; renders message templates.

Switched on when the bot token is in the environment (``SLACK_BOT_TOKEN`` by default); without it
approvals go through the dashboard and the CLI.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..domain.organisation import QmsConfig, SlackIntegration
from .base import DeliveryError, Resolver, RetryLater

if TYPE_CHECKING:  # slack_sdk is imported when a client is made: flows that send nothing start faster
    from slack_sdk import WebClient

TARGET = "slack"


@dataclass(frozen=True)
class SlackSettings:
    bot_token: str
    signing_secret: str | None
    app_token: str | None
    socket_mode: bool
    base_url: str | None
    channel: str | None


def settings(config: QmsConfig, env: dict[str, str] | None = None) -> SlackSettings | None:
    """Slack settings when Slack is switched on (a bot token in the environment), else None."""
    env = os.environ if env is None else env
    cfg = config.integrations.slack or SlackIntegration()
    token = env.get(cfg.bot_token_env)
    if not cfg.enabled or not token:
        return None
    return SlackSettings(
        bot_token=token,
        signing_secret=env.get(cfg.signing_secret_env),
        app_token=env.get(cfg.app_token_env),
        socket_mode=cfg.socket_mode,
        base_url=env.get("QMS_SLACK_BASE_URL") or cfg.base_url,
        channel=cfg.channel,
    )


def signing_secret(config: QmsConfig, env: dict[str, str] | None = None) -> str | None:
    env = os.environ if env is None else env
    cfg = config.integrations.slack or SlackIntegration()
    return env.get(cfg.signing_secret_env)


def make_client(s: SlackSettings) -> WebClient:
    from slack_sdk import WebClient
    from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler

    kwargs: dict[str, Any] = {"token": s.bot_token, "timeout": 10}
    if s.base_url:
        kwargs["base_url"] = s.base_url if s.base_url.endswith("/") else s.base_url + "/"
    client = WebClient(**kwargs)
    # slack_sdk raises on 429 by default: wait Retry-After once, then let the outbox back off
    client.retry_handlers.append(RateLimitErrorRetryHandler(max_retry_count=1))
    client.retry_handlers.append(ConnectionErrorRetryHandler(max_retry_count=1))
    return client


class SlackAdapter:
    """Outbox handler for the ``slack`` target."""

    def __init__(self, client: WebClient):
        self.client = client
        self._user_ids: dict[str, str] = {}

    def __call__(self, action: str, payload: dict[str, Any], resolve: Resolver) -> dict[str, Any]:
        from slack_sdk.errors import SlackApiError

        try:
            if action == "post_dm":
                user = payload.get("slack_id") or self.user_id(payload["email"])
                channel = self.client.conversations_open(users=user)["channel"]["id"]
                sent = self.client.chat_postMessage(channel=channel, text=payload["text"], blocks=payload.get("blocks"))
                return {"channel": sent["channel"], "ts": sent["ts"], "user": user}
            if action == "post_ephemeral":  # only the clicker sees it, in the channel of the message
                sent = self.client.chat_postEphemeral(
                    channel=payload["channel"], user=payload["user"], text=payload["text"], blocks=payload.get("blocks")
                )
                return {"channel": payload["channel"], "message_ts": sent.get("message_ts")}
            if action == "post_channel":
                sent = self.client.chat_postMessage(
                    channel=payload["channel"], text=payload["text"], blocks=payload.get("blocks")
                )
                return {"channel": sent["channel"], "ts": sent["ts"]}
            if action == "update":
                original = resolve(payload["ref"])
                if original is None:
                    raise DeliveryError(f"the message {payload['ref']} was not delivered (yet)")
                self.client.chat_update(
                    channel=original["channel"], ts=original["ts"], text=payload["text"], blocks=payload.get("blocks")
                )
                return {"channel": original["channel"], "ts": original["ts"]}
        except SlackApiError as exc:
            status = exc.response.status_code
            if status in (429, 503):
                retry = exc.response.headers.get("Retry-After") or exc.response.headers.get("retry-after") or 30
                raise RetryLater(f"Slack answered {status}", float(retry)) from None
            error = exc.response.get("error") if isinstance(exc.response.data, dict) else exc.response.data
            raise DeliveryError(f"Slack {action} failed: {error} (HTTP {status})") from None
        raise DeliveryError(f"unknown Slack action {action!r}")

    def user_id(self, email: str) -> str:
        if email not in self._user_ids:
            self._user_ids[email] = self.client.users_lookupByEmail(email=email)["user"]["id"]
        return self._user_ids[email]

    def open_view(self, trigger_id: str, view: dict[str, Any]) -> None:
        self.client.views_open(trigger_id=trigger_id, view=view)


def template_env():  # noqa: ANN201
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    from ..paths import templates_dir

    return Environment(loader=FileSystemLoader(str(templates_dir())), undefined=StrictUndefined, autoescape=False)


def render(name: str, **context: Any) -> dict[str, Any]:
    """Render ``templates/slack/NAME.json.j2`` to a message dict (text, blocks) or a view."""
    return json.loads(template_env().get_template(f"slack/{name}.json.j2").render(**context))
