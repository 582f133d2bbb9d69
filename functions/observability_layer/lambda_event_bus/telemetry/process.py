"""The process-wide Telemetry: one per execution environment, built from the environment on first use, shared
with third-party instrumentation, and the module-level shortcuts onto it."""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace

from lambda_event_bus.telemetry import snapstart
from lambda_event_bus.telemetry.metrics.catalog import MetricKind
from lambda_event_bus.telemetry.provider import Telemetry

__all__ = ["capture_error", "get_telemetry", "record_business_metric", "reset_telemetry"]

_process_telemetry: Telemetry | None = None
_process_lock = threading.Lock()


def get_telemetry() -> Telemetry:
    """The process-wide Telemetry, built from the environment on first use.

    It also becomes OpenTelemetry's global tracer provider (and its propagator the global one, see
    `_share_propagator`), so that third-party instrumentation (botocore, requests, ...) joins the same traces.
    """
    global _process_telemetry  # noqa: PLW0603 - one provider per execution environment, by design
    with _process_lock:
        if _process_telemetry is None:
            telemetry = Telemetry.from_environment()
            if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):  # the first one wins
                trace.set_tracer_provider(telemetry.tracing.provider)
            _share_propagator(telemetry)
            if telemetry.settings.aws.function_name and telemetry.settings.aws.execution_env:
                telemetry.install_shutdown_hook()
            snapstart.register(telemetry.before_snapshot, telemetry.after_restore)
            _process_telemetry = telemetry
        return _process_telemetry


def _share_propagator(telemetry: Telemetry) -> None:
    """Make the layer's propagator the global one, for third-party instrumentation, when something already loaded
    `opentelemetry.propagate`. Otherwise leave it unloaded: its import looks up every OTEL_PROPAGATORS entry in the
    installed packages' entry points (~15 ms of the cold start), and whatever loads it later builds the same
    composite from the same variable."""
    propagate = sys.modules.get("opentelemetry.propagate")
    if propagate is not None:
        propagate.set_global_textmap(telemetry.tracing.propagator)


def reset_telemetry() -> None:
    """Forget the process-wide Telemetry (its exporters are shut down), so that the next `get_telemetry()`
    reads the environment again. For tests that load a handler under different settings."""
    global _process_telemetry  # noqa: PLW0603
    with _process_lock:
        if _process_telemetry is not None:
            _process_telemetry.tracing.shutdown()
        _process_telemetry = None


def capture_error(
    error: BaseException, component: str, operation: str, context: Mapping[str, Any] | None = None
) -> str:
    """`Telemetry.capture_error` on the process-wide Telemetry; returns the event id."""
    return get_telemetry().capture_error(error, component, operation, context)


def record_business_metric(
    name: str, value: float, labels: Mapping[str, str] | None = None, *, kind: MetricKind | None = None
) -> bool:
    """`Telemetry.record_business_metric` on the process-wide Telemetry."""
    return get_telemetry().record_business_metric(name, value, labels, kind=kind)
