"""What every outbound adapter (Slack, Jira) shares: its failure signals and the handler shape."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class RetryLater(Exception):
    """The target asked us to wait (429/503 with Retry-After)."""

    def __init__(self, message: str, seconds: float):
        super().__init__(message)
        self.seconds = seconds


class DeliveryError(Exception):
    """Delivery failed; the outbox retries it with backoff."""


Resolver = Callable[[str], dict[str, Any] | None]
"""Result of an earlier, delivered outbox row by key (e.g. the channel and ts of a posted message)."""
Handler = Callable[[str, dict[str, Any], Resolver], dict[str, Any]]
"""(action, payload, resolve) -> result to store; raises RetryLater or DeliveryError."""
