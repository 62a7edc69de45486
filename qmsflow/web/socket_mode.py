"""Slack Socket Mode: the same interactions over a websocket that qmsflow opens to Slack.

For deployments without public ingress (`integrations.slack.socket_mode: true` and an app-level
token in SLACK_APP_TOKEN). Slack authenticates the connection by the app token, so requests carry
no signature; each is acknowledged at once, then handled like an HTTP interaction.
"""

from __future__ import annotations

import logging
import threading

from slack_sdk.socket_mode import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from ..adapters import slack
from .slack_interactions import BadPayload, SlackInteractions, parse

log = logging.getLogger("qmsflow.slack.socket")


class SocketModeReceiver:
    def __init__(self, settings: slack.SlackSettings, interactions: SlackInteractions):
        if not settings.app_token:
            raise ValueError("Socket Mode needs an app-level token (xapp-…) in the environment (SLACK_APP_TOKEN)")
        self.interactions = interactions
        self.client = SocketModeClient(app_token=settings.app_token, web_client=slack.make_client(settings))
        self.client.socket_mode_request_listeners.append(self._on_request)

    def _on_request(self, client: SocketModeClient, request: SocketModeRequest) -> None:
        client.send_socket_mode_response(SocketModeResponse(envelope_id=request.envelope_id))  # ack within 3 s
        if request.type != "interactive":
            return
        try:
            interaction = parse(request.payload)
        except BadPayload as exc:
            log.warning("ignored a malformed Socket Mode payload: %s", exc)
            return
        threading.Thread(target=self.interactions.handle, args=(interaction,), daemon=True).start()

    def start(self) -> None:
        """Connect in the background, retrying while Slack cannot be reached."""
        self._stop = threading.Event()

        def run() -> None:
            while not self._stop.is_set():
                try:
                    self.client.connect()
                    log.info("Slack Socket Mode connected")
                    return
                except Exception as exc:  # noqa: BLE001 - Slack down or token refused: retry
                    log.warning("Slack Socket Mode connection failed (%s); retrying in 10 s", exc)
                    self._stop.wait(10)

        threading.Thread(target=run, name="slack-socket-mode", daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self.client.close()
