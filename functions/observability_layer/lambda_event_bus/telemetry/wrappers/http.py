"""The HTTP wrapper for API Gateway handlers (REST v1 and HTTP API v2 proxy events), and problem+json."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from lambda_event_bus.base.http import HttpRequest, parse_api_gateway_event, problem
from lambda_event_bus.telemetry.wrappers.invocation import invocation_scope, lambda_context_of

if TYPE_CHECKING:
    from lambda_event_bus.telemetry.provider import Telemetry

P = ParamSpec("P")
R = TypeVar("R")


def response_status(response: object) -> int:
    """The status API Gateway will send: `statusCode` of a proxy response, else 200 (HTTP API's rule for
    a handler that returns a bare body)."""
    if isinstance(response, Mapping):
        status = response.get("statusCode", 200)
        if isinstance(status, int) and 100 <= status <= 599:
            return status
        if isinstance(status, str) and status.isdigit():
            return int(status)
        return 500  # API Gateway answers 502 to a malformed proxy response; count it as a server error
    return 200


def request_attributes(request: HttpRequest) -> dict[str, AttributeValue]:
    """HTTP server span attributes (OpenTelemetry semantic conventions)."""
    attributes: dict[str, AttributeValue] = {
        "http.request.method": request.method,
        "http.route": request.route,
        "url.path": request.path,
        # API Gateway's endpoints are HTTPS; behind a local emulator the forwarded header says otherwise
        "url.scheme": request.headers.get("x-forwarded-proto", "https").split(",")[0].strip(),
        "network.protocol.name": "http",
    }
    if request.source_ip:
        attributes["client.address"] = request.source_ip
    if "user-agent" in request.headers:
        attributes["user_agent.original"] = request.headers["user-agent"]
    if request.request_id:
        attributes["aws.request_id"] = request.request_id  # API Gateway's x-amzn-RequestId
    return attributes


def wrap_http_handler[**P, R](telemetry: Telemetry, handler: Callable[P, R], *, route: str | None) -> Callable[P, R]:
    telemetry.prepare_after_response()  # decorated at import, which is Lambda's init: the only time to register

    @functools.wraps(handler)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        event = kwargs.get("event", args[0] if args else None)
        request = parse_api_gateway_event(event, route)
        parent = telemetry.tracing.extract(request.headers)  # already normalized by the parser
        name = f"{request.method} {request.route}"
        with invocation_scope(
            telemetry,
            lambda_context_of(args, kwargs),
            name=name,
            kind=SpanKind.SERVER,
            trigger="http",
            parent=parent,
            correlation_id=request.correlation_id,
            attributes=request_attributes(request),
        ) as span:
            telemetry.metrics.inc("http_active_connections", 1)
            started = time.perf_counter()
            status = 500
            try:
                try:
                    response: Any = handler(*args, **kwargs)
                except Exception as error:
                    event_id = telemetry.capture_error(
                        error,
                        component="http",
                        operation=name,
                        context={"method": request.method, "route": request.route, "path": request.path},
                        handled=False,
                    )
                    response = problem(
                        500,
                        "The request failed unexpectedly. Quote the event id when you report it.",
                        instance=request.path or None,
                        event_id=event_id,
                    )
                    status = 500
                else:
                    status = response_status(response)
                    if status >= 500:  # a 5xx the handler chose to answer: still a failed request
                        span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
                span.set_attribute("http.response.status_code", status)
                return response  # type: ignore[no-any-return]
            finally:
                labels = {"method": request.method, "endpoint": request.route, "status": str(status)}
                seconds = time.perf_counter() - started
                telemetry.metrics.inc("http_requests_total", 1.0, **labels)
                telemetry.metrics.observe("http_request_duration_seconds", seconds, **labels)
                telemetry.metrics.inc("http_active_connections", -1)

    return wrapper
