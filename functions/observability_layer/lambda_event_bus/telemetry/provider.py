"""The telemetry provider: one object per execution environment that composes tracing, metrics, errors
and the flush. Functions use it through its methods and the wrappers; nothing else is global."""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol, overload

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.trace import Span, SpanKind
from opentelemetry.util.types import Attributes, AttributeValue

from lambda_event_bus.base.lambda_context import LambdaContext
from lambda_event_bus.telemetry.config import TelemetrySettings
from lambda_event_bus.telemetry.errors.capture import ErrorCapture
from lambda_event_bus.telemetry.flush import (
    BATCHED_BACKENDS,
    FAILURES,
    METRICS_BACKENDS,
    ExportSchedule,
    Flusher,
    FlushReport,
)
from lambda_event_bus.telemetry.logs import get_logger
from lambda_event_bus.telemetry.metrics import Metrics, PushgatewayExporter, new_instance_id
from lambda_event_bus.telemetry.metrics.catalog import MetricKind
from lambda_event_bus.telemetry.metrics.exporter import metrics_exporter_for
from lambda_event_bus.telemetry.tracing import Tracing, current_ids, links_for

if TYPE_CHECKING:
    from lambda_event_bus.telemetry.errors.sentry import SentryReporter
    from lambda_event_bus.telemetry.extension import AfterResponseFlush
    from lambda_event_bus.telemetry.wrappers.operations import CdcOperation, EventProcessing, KafkaOperation


class HandlerDecorator(Protocol):
    """What `@telemetry.lambda_handler(...)` returns: a decorator that keeps the handler's signature."""

    def __call__[**P, R](self, handler: Callable[P, R], /) -> Callable[P, R]: ...


RESPONSE_MARGIN_S = 0.05
"""Time kept back from the invocation's remaining time for returning the response."""

SNAPSHOT_FLUSH_S = 5.0
"""What init's telemetry gets to be exported before a SnapStart snapshot."""

SHUTDOWN_BUDGET_S = 0.4
"""Lambda's shutdown phase lasts 500 ms when only internal extensions are registered."""


_LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
}


class Telemetry:
    """Tracing, metrics and error capture for one execution environment.

    Build it once at init (module level in the handler file) with `Telemetry.from_environment()` or
    share the process-wide one with `get_telemetry()`.
    """

    def __init__(
        self,
        settings: TelemetrySettings,
        *,
        otlp_exporter: SpanExporter | None = None,
        instance_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.instance_id = instance_id or new_instance_id()
        self.function_name = settings.aws.function_name or settings.service_name
        self.logger = get_logger(settings.service_name)
        logging.getLogger("opentelemetry").setLevel(_LOG_LEVELS.get(settings.log_level, logging.ERROR))
        self.tracing = Tracing(settings, otlp_exporter=otlp_exporter)
        self.metrics = Metrics(settings.label_value_limit, enabled=not settings.disabled)
        self.sentry: SentryReporter | None = None
        if settings.sentry is not None:
            from lambda_event_bus.telemetry.errors.sentry import SentryReporter  # sentry_sdk only with a DSN

            self.sentry = SentryReporter(
                settings.sentry, server_name=self.function_name, on_dropped=self._count_sentry_drop
            )
        self.metrics_exporter, self.metrics_backend = metrics_exporter_for(
            settings,
            self.metrics.registry,
            function_name=self.function_name,
            instance_id=self.instance_id,
            resource_attributes=self.tracing.resource.attributes,
        )
        self.pushgateway = self.metrics_exporter if isinstance(self.metrics_exporter, PushgatewayExporter) else None
        self.errors = ErrorCapture(settings.service_name, self.logger, self.metrics, self.sentry)
        self.flusher = Flusher(settings.flush_timeout_s, settings.backoff_s)
        if self.tracing.exports:
            self.flusher.add("otlp", lambda _timeout: self.tracing.flush())
        if self.metrics_exporter is not None:
            self.flusher.add(self.metrics_backend, self._push_metrics)
        if self.sentry is not None:
            self.flusher.add("sentry", self.sentry.flush)
        self.export_schedule = ExportSchedule(settings.export_interval_s)
        self._cold_start = True
        self._cold_lock = threading.Lock()
        self._after_response: AfterResponseFlush | None = None
        self._after_response_tried = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Telemetry:
        """Read the settings (a bad value raises ConfigError with one line naming the variable)."""
        return cls(TelemetrySettings.from_env(environ))

    # spans

    def span(
        self,
        name: str,
        *,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, AttributeValue] | None = None,
        links: Sequence[trace.Link] | None = None,
        context: Context | None = None,
    ) -> AbstractContextManager[Span]:
        """A custom span, current inside the `with` block; an exception is recorded on it and re-raised."""
        return self.tracing.span(name, kind=kind, attributes=attributes, links=links, context=context)

    @staticmethod
    def set_attributes(attributes: Mapping[str, AttributeValue]) -> None:
        """Add attributes to the current span (no-op outside a span)."""
        trace.get_current_span().set_attributes(attributes)

    @staticmethod
    def current_ids() -> tuple[str | None, str | None]:
        return current_ids()

    def context_from_http_headers(
        self, headers: Mapping[str, object] | None, multi_value_headers: Mapping[str, object] | None = None
    ) -> Context:
        return self.tracing.context_from_http_headers(headers, multi_value_headers)

    def context_from_kafka_headers(self, headers: object) -> Context:
        return self.tracing.context_from_kafka_headers(headers)

    @staticmethod
    def links(contexts: Iterable[Context], attributes: Attributes = None) -> list[trace.Link]:
        """One span link per record context that carries a valid trace: for a batch span."""
        return links_for(contexts, attributes)

    def kafka_headers(self, context: Context | None = None) -> list[tuple[str, bytes]]:
        """`traceparent` (and baggage) of the current span as Kafka record headers."""
        return self.tracing.kafka_headers(context)

    def http_headers(self, context: Context | None = None) -> dict[str, str]:
        return self.tracing.http_headers(context)

    # metrics

    def record_business_metric(
        self,
        name: str,
        value: float,
        labels: Mapping[str, str] | None = None,
        *,
        kind: MetricKind | None = None,
    ) -> bool:
        return self.metrics.record_business_metric(name, value, labels, kind=kind)

    # errors

    def capture_error(
        self,
        error: BaseException,
        component: str,
        operation: str,
        context: Mapping[str, Any] | None = None,
        *,
        handled: bool = True,
    ) -> str:
        """Report an error: a JSON log line, the exception on the current span, the error counters, and
        Sentry when configured. Returns the event id (Sentry's when Sentry took the event). Never raises;
        an exception that crosses several wrappers is reported once (lambda_event_bus.telemetry.errors.capture)."""
        return self.errors.capture(error, component, operation, context, handled=handled)

    def _count_sentry_drop(self, reason: str) -> None:
        self.metrics.inc("sentry_events_dropped_total", reason=reason)

    # invocation lifecycle

    def take_cold_start(self) -> bool:
        """True for the first invocation of this execution environment, False afterwards."""
        with self._cold_lock:
            cold, self._cold_start = self._cold_start, False
        return cold

    def _push_metrics(self, timeout: float) -> bool:
        if self.metrics_exporter is None:
            return True
        self.metrics_exporter.push(timeout)
        return True

    def prepare_after_response(self) -> None:
        """Called when a handler is wrapped, which is at init: inside Lambda (TELEMETRY_FLUSH `auto` or
        `after_response`), register the internal extension that flushes after the response
        (lambda_event_bus.telemetry.extension). Once per Telemetry; elsewhere, or when Lambda refuses, flushes stay
        inline."""
        with self._cold_lock:
            if self._after_response_tried:
                return
            self._after_response_tried = True
        api = self.settings.aws.runtime_api
        if self.settings.flush_mode == "inline" or not api:
            return
        from lambda_event_bus.telemetry.extension import AfterResponseFlush

        self._after_response = AfterResponseFlush.register(api, self.flush_after_response)

    @property
    def flushes_after_response(self) -> bool:
        return self._after_response is not None

    def end_invocation(self, context: LambdaContext | None = None) -> None:
        """The invocation's telemetry is complete: flush now, or let the extension flush after the response."""
        if self._after_response is not None:
            self._after_response.invocation_done()
        else:
            self.flush(context)

    def flush(self, context: LambdaContext | None = None) -> FlushReport:
        """End-of-invocation flush: spans, then metrics, then errors, inside the time the invocation has
        left (minus a margin for the response) and never longer than TELEMETRY_FLUSH_TIMEOUT_MS.

        Never raises; outcomes are counted in telemetry_* metrics (pushed with the next flush).
        """
        available = None
        if context is not None:
            try:
                available = context.get_remaining_time_in_millis() / 1000 - RESPONSE_MARGIN_S
            except Exception:  # a foreign context object
                available = None
        return self._flush_within(available)

    def flush_after_response(self, available: float | None) -> FlushReport:
        """The extension's flush, once the response is on its way: errors every time, spans and metrics when the
        export schedule says so (TELEMETRY_EXPORT_INTERVAL_MS; by default after every invocation)."""
        if self.export_schedule.due():
            report = self._flush_within(available)
            self.export_schedule.exported()
            return report
        return self._flush_within(available, exclude=BATCHED_BACKENDS)

    def _flush_within(self, available: float | None, exclude: tuple[str, ...] = ()) -> FlushReport:
        try:
            report = self.flusher.flush(available, exclude=exclude)
        except Exception:
            self.logger.warning("telemetry flush failed", exc_info=True)
            return FlushReport()
        self._record_flush(report)
        return report

    def _record_flush(self, report: FlushReport) -> None:
        """Count the outcomes (they travel with the next push), and the spans kept or given up."""
        if self.tracing.exports:
            self.metrics.set("telemetry_spans_retained", self.tracing.kept_spans)
            for reason, count in self.tracing.take_dropped_spans().items():
                self.metrics.inc("telemetry_spans_dropped_total", count, reason=reason)
        for result in report.results:
            if result.outcome in FAILURES:
                self.metrics.inc("telemetry_export_failures_total", backend=result.backend, reason=result.outcome)
                self.logger.warning(
                    "telemetry backend %s: %s after %.1f ms (skipping it for %.0f s)",
                    result.backend,
                    result.outcome,
                    result.seconds * 1000,
                    self.settings.backoff_s,
                )
            elif result.outcome == "skipped":
                self.metrics.inc("telemetry_export_skipped_total", backend=result.backend)
            if result.outcome not in ("skipped", "no_time"):
                self.metrics.observe("telemetry_flush_duration_seconds", result.seconds, backend=result.backend)

    def shutdown(self, timeout_s: float = SHUTDOWN_BUDGET_S) -> None:
        """Graceful end of the execution environment, inside `timeout_s`: export the last spans and errors and
        push the final metric values, every backend tried even while it backs off (this is the last chance),
        then close the exporters. Never raises.

        The Pushgateway group is left in place: deleting it would throw away whatever was pushed since
        Prometheus last scraped it. MaintenanceFunction deletes it once it is stale (several scrape
        intervals after this final push)."""
        deadline = time.monotonic() + timeout_s
        self._record_flush(self.flusher.flush(timeout_s * 0.8, ignore_backoff=True))

        def close() -> None:
            self.tracing.shutdown()
            if self.sentry is not None:
                self.sentry.close(max(0.0, deadline - time.monotonic()))

        closer = threading.Thread(target=close, name="telemetry-shutdown", daemon=True)
        closer.start()
        closer.join(max(0.0, deadline - time.monotonic()))

    def before_snapshot(self) -> None:
        """SnapStart is about to snapshot this environment: send what init recorded (spans, errors) and close the
        backends' connections, which a restored environment could not use. No push: a group named after the
        snapshot's environment id would outlive it, and each restored environment pushes under its own."""
        # init may take minutes under SnapStart: a collector far away gets more than an invocation's budget. The
        # outcome is not counted: counters in the snapshot would be pushed by every environment restored from it.
        report = self.flusher.flush(exclude=METRICS_BACKENDS, ignore_backoff=True, budget_s=SNAPSHOT_FLUSH_S)
        lost = self.tracing.discard_kept()
        if lost or not report.ok:
            outcomes = ", ".join(f"{result.backend} {result.outcome}" for result in report.results)
            self.logger.warning("before the snapshot: %d spans of init not exported (%s)", lost, outcomes)
        self.tracing.disconnect()
        if self.metrics_exporter is not None:
            self.metrics_exporter.close()

    def after_restore(self) -> None:
        """This environment was restored from a snapshot that others are restored from too: seed the ids' random
        source again (OpenTelemetry draws trace and span ids from `random`, whose state is in the snapshot), take a
        new environment id (its own Pushgateway group), and let every backend be tried afresh."""
        random.seed()  # from os.urandom
        self.instance_id = new_instance_id()
        if self.metrics_exporter is not None:
            self.metrics_exporter.rename(self.instance_id)
        self.flusher.forget_failures()
        with self._cold_lock:
            self._cold_start = True  # this environment's first invocation is its cold start, restored or not

    def install_shutdown_hook(self) -> bool:
        """Run `shutdown()` on SIGTERM, then hand over to the previous handler (or exit).

        Lambda sends SIGTERM before it reaps an execution environment when an extension is registered.
        `os._exit` rather than `sys.exit`: the runtime's main thread is blocked waiting for the next event,
        and `sys.exit` from the handler would wait for it. False when not called from the main thread.
        """
        previous = signal.getsignal(signal.SIGTERM)

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            self.shutdown()
            if callable(previous):
                previous(signum, frame)
            else:
                os._exit(0)

        try:
            signal.signal(signal.SIGTERM, on_sigterm)
        except ValueError:  # not the main thread
            return False
        return True

    # wrappers (see lambda_event_bus.telemetry.wrappers)

    @overload
    def lambda_handler[**P, R](self, handler: Callable[P, R], /) -> Callable[P, R]: ...

    @overload
    def lambda_handler(
        self,
        handler: None = None,
        /,
        *,
        name: str | None = None,
        kind: SpanKind = SpanKind.SERVER,
        trigger: str = "other",
    ) -> HandlerDecorator: ...

    def lambda_handler(
        self,
        handler: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        kind: SpanKind = SpanKind.SERVER,
        trigger: str = "other",
    ) -> Callable[..., Any] | HandlerDecorator:
        """Decorate a Lambda handler: invocation span, cold start, error capture, flush at the end."""
        from lambda_event_bus.telemetry.wrappers.invocation import wrap_lambda_handler

        def decorate[**Q, T](function: Callable[Q, T], /) -> Callable[Q, T]:
            return wrap_lambda_handler(self, function, name=name, kind=kind, trigger=trigger)

        return decorate if handler is None else decorate(handler)

    @overload
    def http_handler[**P, R](self, handler: Callable[P, R], /) -> Callable[P, R]: ...

    @overload
    def http_handler(self, handler: None = None, /, *, route: str | None = None) -> HandlerDecorator: ...

    def http_handler(
        self, handler: Callable[..., Any] | None = None, /, *, route: str | None = None
    ) -> Callable[..., Any] | HandlerDecorator:
        """Decorate an API Gateway (REST or HTTP API) handler: server span from `traceparent`, the HTTP
        metrics by route template, and any unhandled exception answered as a 500 problem+json."""
        from lambda_event_bus.telemetry.wrappers.http import wrap_http_handler

        def decorate[**Q, T](function: Callable[Q, T], /) -> Callable[Q, T]:
            return wrap_http_handler(self, function, route=route)

        return decorate if handler is None else decorate(handler)

    def event_processing(
        self,
        event_type: str,
        source: str,
        *,
        kind: SpanKind = SpanKind.INTERNAL,
        context: Context | None = None,
    ) -> EventProcessing:
        """Context manager and decorator around the processing of one event."""
        from lambda_event_bus.telemetry.wrappers.operations import EventProcessing

        return EventProcessing(self, event_type=event_type, source=source, kind=kind, parent=context)

    def kafka_operation(
        self, operation: str, topic: str, partition: int | None = None, *, context: Context | None = None
    ) -> KafkaOperation:
        """Context manager and decorator around one Kafka operation (produce, consume, commit, ...)."""
        from lambda_event_bus.telemetry.wrappers.operations import KafkaOperation

        return KafkaOperation(self, operation=operation, topic=topic, partition=partition, parent=context)

    def cdc_operation(
        self,
        connector: str,
        table: str,
        operation: str,
        *,
        context: Context | None = None,
        links: Sequence[trace.Link] | None = None,
    ) -> CdcOperation:
        """Context manager and decorator around handling one change event (`context` is its parent; a change
        without one can start a new trace `links`-ed to its batch)."""
        from lambda_event_bus.telemetry.wrappers.operations import CdcOperation

        return CdcOperation(self, connector=connector, table=table, operation=operation, parent=context, links=links)
