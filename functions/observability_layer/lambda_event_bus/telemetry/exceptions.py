"""Exceptions raised by the telemetry (one base, names ending in Error)."""

from __future__ import annotations

from lambda_event_bus.base.exceptions import LayerError


class TelemetryError(LayerError):
    """Base of every error the telemetry raises on purpose (a backend's export failing is one)."""
