"""Error capture: one reported error becomes a JSON log line with trace correlation, the exception on the active
span, the error counters, and a Sentry event when Sentry is configured. Composed by `Telemetry.capture_error`."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from lambda_event_bus.telemetry.errors.record import ErrorRecord, new_event_id
from lambda_event_bus.telemetry.errors.scrub import scrub, scrub_text
from lambda_event_bus.telemetry.invocation import current_invocation
from lambda_event_bus.telemetry.tracing import current_ids

if TYPE_CHECKING:
    from lambda_event_bus.telemetry.errors.sentry import SentryReporter
    from lambda_event_bus.telemetry.metrics import Metrics

EVENT_ID_ATTRIBUTE = "__eventbus_event_id__"
"""Set on a captured exception so that outer wrappers re-use its event id instead of capturing twice."""


class ErrorCapture:
    def __init__(
        self, service_name: str, logger: logging.Logger, metrics: Metrics, sentry: SentryReporter | None
    ) -> None:
        self.service_name = service_name
        self.logger = logger
        self.metrics = metrics
        self.sentry = sentry

    def capture(
        self,
        error: BaseException,
        component: str,
        operation: str,
        context: Mapping[str, Any] | None = None,
        *,
        handled: bool = True,
    ) -> str:
        """Report an error: a JSON log line, the exception on the current span, the error counters, and
        Sentry when configured. Returns the event id (Sentry's when Sentry took the event).

        Never raises. An exception that crosses several wrappers is reported (log line, Sentry,
        `errors_captured_total`) once, by the innermost, and keeps that event id; each outer scope still
        marks its own span failed and counts its own error metric.
        """
        scope_context = dict(context or {})
        known = getattr(error, EVENT_ID_ATTRIBUTE, None)
        if isinstance(known, str):
            try:
                self._mark_scope(error, component, scope_context, known)
            except Exception:
                self.logger.warning("capture_error failed", exc_info=True)
            return known
        event_id = new_event_id()
        try:
            event_id = self._capture(error, component, operation, scope_context, handled=handled)
        except Exception:  # error capture must never become the error
            self.logger.warning("capture_error failed", exc_info=True)
        with contextlib.suppress(Exception):  # an exception class may refuse new attributes
            setattr(error, EVENT_ID_ATTRIBUTE, event_id)
        return event_id

    def _capture(
        self,
        error: BaseException,
        component: str,
        operation: str,
        context: dict[str, Any],
        *,
        handled: bool,
    ) -> str:
        scrubbed = scrub(context)
        trace_id, span_id = current_ids()
        error_type, message, stack = ErrorRecord.describe(error)
        message, stack = scrub_text(message), scrub_text(stack)  # a URL's password, a `token=...` in the text
        event_id = None
        if self.sentry is not None:
            event_id = self.sentry.capture(
                error,
                tags={"component": component, "operation": operation, "service": self.service_name},
                context=scrubbed,
                trace_id=trace_id,
                span_id=span_id,
                handled=handled,
            )
        event_id = event_id or new_event_id()
        trace.get_current_span().record_exception(
            error,
            attributes={
                "event_id": event_id,
                "component": component,
                "exception.message": message,
                "exception.stacktrace": stack,
            },
        )
        invocation = current_invocation()
        record = ErrorRecord(
            event_id=event_id,
            component=component,
            operation=operation,
            error_type=error_type,
            error_message=message,
            handled=handled,
            service=self.service_name,
            trace_id=trace_id,
            span_id=span_id,
            request_id=invocation.request_id if invocation else None,
            correlation_id=str(context.get("correlation_id") or "")
            or (invocation.correlation_id if invocation else None),
            context=scrubbed,
            stacktrace=stack,
        )
        self.logger.error("%s: %s", error_type, message, extra={"fields": record.log_fields()})
        self.metrics.inc("errors_captured_total", component=component, error_type=error_type)
        self._mark_scope(error, component, context, event_id)
        return event_id

    def _mark_scope(self, error: BaseException, component: str, context: Mapping[str, Any], event_id: str) -> None:
        """What every scope an error crosses records: its span fails, and its own error counter counts."""
        error_type = type(error).__qualname__
        span = trace.get_current_span()
        span.set_status(Status(StatusCode.ERROR, scrub_text(f"{error_type}: {error}")[:256]))
        span.set_attribute("error.type", error_type)
        span.set_attribute("eventbus.error.event_id", event_id)
        if component == "event_processing" or "event_type" in context:
            self.metrics.inc(
                "event_processing_errors_total",
                event_type=context.get("event_type"),
                source=context.get("source"),
                error_type=error_type,
            )
