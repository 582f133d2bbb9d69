"""Exceptions of MaintenanceFunction (one base, names ending in Error)."""

from __future__ import annotations


class MaintenanceError(Exception):
    """Base of every error this package raises on purpose."""


class EndpointError(MaintenanceError):
    """An HTTP endpoint (Kafka Connect, Pushgateway) could not be reached or answered with an error status."""


class UnexpectedAnswerError(MaintenanceError):
    """An endpoint answered, but not in the shape its API documents."""


class DeadlineExceededError(MaintenanceError):
    """The invocation's time for this work ran out before the request could start."""
