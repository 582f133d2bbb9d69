"""The invocation scope every wrapped Lambda handler runs in: span, ids, cold start, error capture, flush."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind
from opentelemetry.util.types import AttributeValue

from lambda_event_bus.base.lambda_context import LambdaContext
from lambda_event_bus.telemetry.invocation import Invocation, reset_invocation, set_invocation

if TYPE_CHECKING:
    from lambda_event_bus.telemetry.provider import Telemetry

P = ParamSpec("P")
R = TypeVar("R")


def lambda_context_of(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> LambdaContext | None:
    candidate = kwargs.get("context", args[1] if len(args) > 1 else None)
    return candidate if hasattr(candidate, "get_remaining_time_in_millis") else None


def invocation_attributes(
    context: LambdaContext | None, *, cold_start: bool, trigger: str
) -> dict[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {"faas.trigger": trigger, "faas.coldstart": cold_start}
    if context is None:
        return attributes
    request_id = getattr(context, "aws_request_id", None)
    arn = getattr(context, "invoked_function_arn", None)
    if isinstance(request_id, str):
        attributes["faas.invocation_id"] = request_id
    if isinstance(arn, str):
        attributes["cloud.resource_id"] = arn
        parts = arn.split(":")
        if len(parts) > 4 and parts[4]:
            attributes["cloud.account.id"] = parts[4]
    return attributes


@contextmanager
def invocation_scope(
    telemetry: Telemetry,
    context: LambdaContext | None,
    *,
    name: str,
    kind: SpanKind,
    trigger: str,
    parent: Context | None = None,
    correlation_id: str | None = None,
    attributes: Mapping[str, AttributeValue] | None = None,
) -> Iterator[Span]:
    """One invocation: the root span (child of `parent` when a caller sent trace context), the request
    and correlation ids for logs and errors, and the flush once the span has ended (after the response, from
    the layer's extension, when it is registered). An exception is captured (handled=False) and re-raised
    untouched."""
    cold_start = telemetry.take_cold_start()
    request_id = getattr(context, "aws_request_id", None)
    token = set_invocation(
        Invocation(
            request_id=request_id,
            correlation_id=correlation_id or request_id,
            function_arn=getattr(context, "invoked_function_arn", None),
            cold_start=cold_start,
        )
    )
    if cold_start:
        telemetry.metrics.inc("lambda_cold_starts_total")
    span_attributes = invocation_attributes(context, cold_start=cold_start, trigger=trigger) | dict(attributes or {})
    outcome = "success"
    try:
        with telemetry.tracing.span(
            name, kind=kind, attributes=span_attributes, context=parent, record_exception=False
        ) as span:
            try:
                yield span
            except Exception as error:
                outcome = "error"
                telemetry.capture_error(error, component="lambda", operation=name, handled=False)
                raise
    finally:
        telemetry.metrics.inc("lambda_invocations_total", outcome=outcome)
        reset_invocation(token)
        telemetry.end_invocation(context)


def wrap_lambda_handler[**P, R](
    telemetry: Telemetry, handler: Callable[P, R], *, name: str | None, kind: SpanKind, trigger: str
) -> Callable[P, R]:
    span_name = name or telemetry.function_name
    telemetry.prepare_after_response()  # decorated at import, which is Lambda's init: the only time to register

    @functools.wraps(handler)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with invocation_scope(telemetry, lambda_context_of(args, kwargs), name=span_name, kind=kind, trigger=trigger):
            return handler(*args, **kwargs)

    return wrapper
