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
from .base import DeliveryError, Resolver, RetryLater, Unavailable

if TYPE_CHECKING:  # slack_sdk is imported when a client is made: flows that send nothing start faster
    from slack_sdk import WebClient

TARGET = "slack"
# Slack errors about the app or the workspace, not about the message: retried, never parked
UNAVAILABLE = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "team_access_not_granted",
        "fatal_error",
        "internal_error",
        "service_unavailable",
        "request_timeout",
        "ratelimited",
    }
)


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
                original = resolve(payload["ref"])  # raises Waiting while that message is queued or parked
                if original is None:  # the message was dropped: there is nothing to update
                    return {"skipped": f"{payload['ref']} was never sent"}
                self.client.chat_update(
                    channel=original["channel"], ts=original["ts"], text=payload["text"], blocks=payload.get("blocks")
                )
                return {"channel": original["channel"], "ts": original["ts"]}
        except SlackApiError as exc:
            status = exc.response.status_code
            retry = exc.response.headers.get("Retry-After") or exc.response.headers.get("retry-after")
            if status == 429 or (status == 503 and retry):
                raise RetryLater(f"Slack answered {status}", _seconds(retry)) from None
            error = exc.response.get("error") if isinstance(exc.response.data, dict) else exc.response.data
            if status >= 500 or error in UNAVAILABLE:
                raise Unavailable(f"Slack {action}: {error} (HTTP {status})") from None
            raise DeliveryError(f"Slack {action} failed: {error} (HTTP {status})") from None
        except OSError as exc:  # connection refused or reset, timeout: the outbox backs off
            raise Unavailable(f"Slack {action}: {exc.__class__.__name__}: {exc}") from None
        raise DeliveryError(f"unknown Slack action {action!r}")

    def user_id(self, email: str) -> str:
        if email not in self._user_ids:
            self._user_ids[email] = self.client.users_lookupByEmail(email=email)["user"]["id"]
        return self._user_ids[email]

    def open_view(self, trigger_id: str, view: dict[str, Any]) -> None:
        self.client.views_open(trigger_id=trigger_id, view=view)


def _seconds(value: str | None) -> float:
    try:
        return float(value) if value else 30.0
    except ValueError:
        return 30.0


def template_env():  # noqa: ANN201
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    from ..paths import templates_dir

    return Environment(loader=FileSystemLoader(str(templates_dir())), undefined=StrictUndefined, autoescape=False)


def render(name: str, **context: Any) -> dict[str, Any]:
    """Render ``templates/slack/NAME.json.j2`` to a message dict (text, blocks) or a view."""
    return json.loads(template_env().get_template(f"slack/{name}.json.j2").render(**context))
