"""Slack Socket Mode: the real slack_sdk SocketModeClient opens apps.connections.open on the fake
Slack, connects to a websocket on 127.0.0.1, acknowledges an interactive envelope and signs."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator

import identityutil
import pytest
from fakes.slack import FakeSlack
from websockets.sync.server import serve

from qmsflow.adapters import slack as slack_adapter
from qmsflow.context import QmsContext
from qmsflow.services import approvals, contents
from qmsflow.services.sync import sync_config
from qmsflow.store import UnitOfWork
from qmsflow.store.tables import ApprovalRequestRow
from qmsflow.web.slack_interactions import SlackInteractions
from qmsflow.web.socket_mode import SocketModeReceiver

USERS = [
    {"id": "U0ANA0001", "email": "ana@example.com", "name": "ana"},
    {"id": "U0BEN0001", "email": "ben@example.com", "name": "ben"},
]


class FakeSocket:
    """A websocket endpoint speaking Slack's Socket Mode envelope protocol."""

    def __init__(self) -> None:
        self.outgoing: queue.Queue[dict] = queue.Queue()
        self.acks: queue.Queue[dict] = queue.Queue()
        self.server = serve(self._handler, "127.0.0.1", 0)
        self.url = f"ws://127.0.0.1:{self.server.socket.getsockname()[1]}/link"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _handler(self, websocket) -> None:  # noqa: ANN001
        websocket.send(
            json.dumps(
                {
                    "type": "hello",
                    "num_connections": 1,
                    "connection_info": {"app_id": "A0QMS"},
                    "debug_info": {"host": "fake"},
                }
            )
        )
        while True:
            try:
                envelope = self.outgoing.get(timeout=0.1)
                websocket.send(json.dumps(envelope))
            except queue.Empty:
                pass
            try:
                message = websocket.recv(timeout=0.1)
            except TimeoutError:
                continue
            except Exception:  # noqa: BLE001 - client went away
                return
            if isinstance(message, str) and message.startswith("{"):
                self.acks.put(json.loads(message))

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def socket_world(ctx: QmsContext, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple]:
    with FakeSlack(users=USERS) as fake:
        sock = FakeSocket()
        fake.socket_url = sock.url
        monkeypatch.setenv("SLACK_BOT_TOKEN", fake.token)
        monkeypatch.setenv("SLACK_APP_TOKEN", fake.app_token)
        monkeypatch.setenv("QMS_SLACK_BASE_URL", fake.base_url)
        with UnitOfWork(ctx.db, "qmsflow") as uow:
            sync_config(uow, ctx.config, ctx.root)
            uow.commit()
        settings = slack_adapter.settings(ctx.config)
        receiver = SocketModeReceiver(settings, SlackInteractions(ctx))
        receiver.start()
        try:
            yield ctx, fake, sock
        finally:
            receiver.close()
            sock.close()


def test_interaction_over_socket_mode_is_acked_and_signed(socket_world: tuple) -> None:
    ctx, fake, sock = socket_world
    identityutil.account(ctx.db, "ben")  # Slack signs with ben's own account
    with UnitOfWork(ctx.db, "ana") as uow:
        row, _ = approvals.open_request(
            uow,
            ctx.config,
            key="sm-1",
            subject="test-step:T-1@1",
            required=1,
            title="SOP-RSK-001 v1.0",
            content_sha256=contents.store(uow, b"# SOP-DES-001\n\nThe text under review.\n", contents.MARKDOWN),
            approvers=["ben"],
            meaning="approve SOP-RSK-001 v1.0",
            author="ana",
        )
        uow.commit()
        request_id = row.id
    deadline = time.monotonic() + 15
    while not fake.calls_to("apps.connections.open") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert fake.calls_to("apps.connections.open"), "the client never asked for a websocket URL"
    sock.outgoing.put(
        {
            "envelope_id": "env-1",
            "type": "interactive",
            "accepts_response_payload": False,
            "payload": {
                "type": "block_actions",
                "user": {"id": "U0BEN0001"},
                "trigger_id": "1.2",
                "actions": [{"action_id": "approve", "value": request_id}],
            },
        }
    )
    ack = sock.acks.get(timeout=10)
    assert ack["envelope_id"] == "env-1"
    deadline = time.monotonic() + 15
    status = None
    while time.monotonic() < deadline and status != "approved":
        with ctx.db.read() as s:
            status = s.get(ApprovalRequestRow, request_id).status
        time.sleep(0.1)
    assert status == "approved"
