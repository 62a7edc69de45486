"""What every outbound adapter (Slack, Jira) shares: its failure signals and the handler shape.

Three kinds of failure, because the outbox treats them differently:

- ``DeliveryError``: the target refused this message (HTTP 4xx, a setting that does not match the
  target, a record that no longer exists). Retrying the same message rarely helps: after
  ``integrations.outbox.park_after`` of these in a row the message is parked.
- ``Unavailable`` (and ``RetryLater``, which says how long to wait): the target could not be reached
  or failed on its side (connection, timeout, HTTP 5xx, 429, bad credentials). Retried with backoff
  and never parked: an outage delays messages, it does not make anyone retry them by hand.
- ``Waiting``: the message depends on another one that is not delivered yet (a Jira transition on
  an issue whose create is queued or parked). Nothing was attempted; no attempt is counted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class DeliveryError(Exception):
    """The target refused the message; counts towards parking."""


class Unavailable(Exception):
    """The target could not be reached or failed on its side; retried with backoff, never parked."""


class RetryLater(Unavailable):
    """The target asked us to wait (429/503 with Retry-After)."""

    def __init__(self, message: str, seconds: float):
        super().__init__(message)
        self.seconds = seconds


class Waiting(Exception):
    """The message needs another message delivered first; nothing was attempted."""


Resolver = Callable[[str], dict[str, Any] | None]
"""Result of an earlier outbox message by key (e.g. the channel and ts of a posted message): None when
there is no such message or it was dropped; raises ``Waiting`` while it is queued or parked."""
Handler = Callable[[str, dict[str, Any], Resolver], dict[str, Any]]
"""(action, payload, resolve) -> result to store; raises DeliveryError, Unavailable or Waiting."""
