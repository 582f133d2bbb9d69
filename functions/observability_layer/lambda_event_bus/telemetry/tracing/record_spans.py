"""Spans for the records of a batch, at a third of what the SDK's spans cost.

A consumer starts one span per record, as a child of the record's producer span, and ends it once the record's
deliveries are settled; nothing else touches it but its status. The SDK makes each a full `Span` (a lock, attribute
validation through `BoundedAttributes`, the processors' `on_start`, a `ReadableSpan` copy at the end): ~13 us a
record here, most of a sampled record's cost. When nothing can observe the difference, a record span is made of
plain values instead and handed to the span processors as the `ReadableSpan` the SDK would have made at its end:

- the parent is a sampled remote span context and the sampler is parent-based, so the decision is the parent's
  (record and sample; the SDK's `ParentBased` keeps the parent's trace state and its random-trace-id flag);
- the provider's span processors are only the layer's own (their `on_start` does nothing: no third-party processor
  expects a writable span), and the attributes fit the span limits with no value length limit set;
- the attributes are plain values (text, numbers, booleans) and are not changed after the start.

Anything else gets an SDK span behind the same small interface. `tests/unit/test_record_spans.py` checks that both
paths give the same span for the same record.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Protocol

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util.types import AttributeValue

_UNSET = Status(StatusCode.UNSET)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_RANDOM = getattr(TraceFlags, "RANDOM_TRACE_ID", 0)


class RecordSpan(Protocol):
    context: Context
    """The context with this span current: its children's parent (the record's deliveries)."""

    def set_error(self, description: str) -> None: ...

    def end(self) -> None: ...


class _SdkRecordSpan:
    """An SDK span behind the record span interface."""

    __slots__ = ("_span", "context")

    def __init__(self, span: trace.Span) -> None:
        self._span = span
        self.context = trace.set_span_in_context(span)

    def set_error(self, description: str) -> None:
        self._span.set_status(Status(StatusCode.ERROR, description))

    def end(self) -> None:
        self._span.end()


class _PlainRecordSpan:
    """A sampled span of plain values, handed to the processors as a ReadableSpan at its end."""

    __slots__ = (
        "_attributes",
        "_kind",
        "_name",
        "_owner",
        "_parent",
        "_processor",
        "_span_context",
        "_start",
        "_status",
        "context",
    )

    def __init__(
        self,
        owner: RecordSpans,
        processor: SpanProcessor,
        *,
        name: str,
        kind: SpanKind,
        span_context: SpanContext,
        parent: SpanContext,
        attributes: Mapping[str, AttributeValue],
    ) -> None:
        self._owner = owner
        self._processor = processor
        self._name = name
        self._kind = kind
        self._span_context = span_context
        self._parent = parent
        self._attributes = attributes
        self._status = _UNSET
        self._start = time.time_ns()
        self.context = trace.set_span_in_context(trace.NonRecordingSpan(span_context))

    def set_error(self, description: str) -> None:
        self._status = Status(StatusCode.ERROR, description)

    def end(self) -> None:
        owner = self._owner
        self._processor.on_end(
            ReadableSpan(
                name=self._name,
                context=self._span_context,
                parent=self._parent,
                resource=owner.resource,
                attributes=self._attributes,
                kind=self._kind,
                status=self._status,
                start_time=self._start,
                end_time=time.time_ns(),
                instrumentation_scope=owner.scope,
            )
        )


class RecordSpans:
    """Starts record spans on `tracer`; plain ones where the rules above allow (`plain`), SDK ones otherwise."""

    def __init__(
        self,
        tracer: trace.Tracer,
        *,
        plain: bool,
        own_processor: Callable[[], SpanProcessor | None],
        resource: Resource,
        scope: InstrumentationScope,
        limits: SpanLimits,
        new_span_id: Callable[[], int],
    ) -> None:
        """`plain`: the sampler follows a sampled parent; `own_processor()`: what the provider ends spans on while
        that is the layer's own processors alone, else None (then record spans are the SDK's)."""
        self._tracer = tracer
        self._plain = plain and limits.max_span_attribute_length is None
        self._own_processor = own_processor
        self.resource = resource
        self.scope = scope
        self._max_attributes = limits.max_span_attributes or 0
        self._new_span_id = new_span_id

    def start(self, name: str, parent: Context, kind: SpanKind, attributes: Mapping[str, AttributeValue]) -> RecordSpan:
        parent_span = trace.get_current_span(parent).get_span_context()
        processor = self._own_processor() if self._plain else None
        if (
            processor is not None
            and parent_span.is_remote
            and parent_span.trace_flags.sampled
            and parent_span.is_valid
            and len(attributes) <= self._max_attributes
        ):
            flags = TraceFlags(_SAMPLED | (parent_span.trace_flags & _RANDOM))
            span_context = SpanContext(
                parent_span.trace_id,
                self._new_span_id(),
                is_remote=False,
                trace_flags=flags,
                trace_state=parent_span.trace_state,
            )
            return _PlainRecordSpan(
                self,
                processor,
                name=name,
                kind=kind,
                span_context=span_context,
                parent=parent_span,
                attributes=attributes,
            )
        return _SdkRecordSpan(self._tracer.start_span(name, context=parent, kind=kind, attributes=attributes))
