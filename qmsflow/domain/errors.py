"""Errors raised by domain rules. Every message is meant to be shown to a user as is."""


class DomainError(Exception):
    """A rule of the QMS refused an operation."""


class InvalidTransition(DomainError):
    """A state machine refused a transition."""


class RetentionError(DomainError):
    """A record is still under its retention period and may not be deleted."""
