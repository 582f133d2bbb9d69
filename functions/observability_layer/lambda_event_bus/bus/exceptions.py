"""The bus's exception base: every error `lambda_event_bus.bus` raises on purpose derives from `BusError` (and keeps
the built-in base its callers catch: `ContractError` is a `ValueError`, `ProducerFailedError` a `RuntimeError`)."""

from __future__ import annotations

from lambda_event_bus.base.exceptions import LayerError


class BusError(LayerError):
    """Base of every error the bus's shared pieces raise on purpose."""
