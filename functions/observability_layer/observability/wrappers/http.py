"""The HTTP wrapper for API Gateway handlers (REST v1 and HTTP API v2 proxy events), and problem+json."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from observability.tracing import normalize_http_headers
from observability.wrappers.invocation import invocation_scope, lambda_context_of

if TYPE_CHECKING:
    from observability.provider import Telemetry

P = ParamSpec("P")
R = TypeVar("R")

PROBLEM_CONTENT_TYPE = "application/problem+json"
UNMATCHED_ROUTE = "unmatched"
"""The endpoint label when an event carries no route template: never the raw path (unbounded)."""


@dataclass(frozen=True)
class HttpRequest:
    """What the wrapper needs from an API Gateway proxy event, as plain values."""

    method: str
    route: str
    path: str
    version: str
    headers: dict[str, str] = field(default_factory=dict)
    request_id: str | None = None
    source_ip: str | None = None

    @property
    def correlation_id(self) -> str | None:
        return self.headers.get("x-correlation-id") or self.headers.get("x-request-id") or self.request_id


KNOWN_METHODS = frozenset({"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"})
OTHER_METHOD = "_OTHER"
"""What semantic conventions (and the metric label) use for a method outside the known set."""


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _method(value: object) -> str:
    method = (_text(value) or "").upper()
    return method if method in KNOWN_METHODS else OTHER_METHOD


def parse_api_gateway_event(event: object, route: str | None = None) -> HttpRequest:
    """REST (v1) or HTTP API (v2) proxy event -> HttpRequest. Tolerates anything: a non-API Gateway
    event gives method and route 'unknown'/'unmatched' rather than an exception."""
    data: Mapping[str, Any] = event if isinstance(event, Mapping) else {}
    request_context = data.get("requestContext")
    request_context = request_context if isinstance(request_context, Mapping) else {}
    http = request_context.get("http")
    http = http if isinstance(http, Mapping) else {}
    headers = normalize_http_headers(data.get("headers"), data.get("multiValueHeaders"))
    if data.get("version") == "2.0" or http:
        route_key = _text(data.get("routeKey"))
        template = route_key.split(" ", 1)[-1] if route_key else None
        return HttpRequest(
            method=_method(http.get("method")),
            route=route or template or UNMATCHED_ROUTE,
            path=_text(data.get("rawPath")) or _text(http.get("path")) or "",
            version="2.0",
            headers=headers,
            request_id=_text(request_context.get("requestId")),
            source_ip=_text(http.get("sourceIp")),
        )
    identity = request_context.get("identity")
    identity = identity if isinstance(identity, Mapping) else {}
    return HttpRequest(
        method=_method(data.get("httpMethod")),
        route=route or _text(data.get("resource")) or UNMATCHED_ROUTE,
        path=_text(data.get("path")) or "",
        version="1.0",
        headers=headers,
        request_id=_text(request_context.get("requestId")),
        source_ip=_text(identity.get("sourceIp")),
    )


def problem(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    problem_type: str = "about:blank",
    instance: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extensions: object,
) -> dict[str, Any]:
    """An API Gateway proxy response carrying an RFC 9457 problem document."""
    body: dict[str, object] = {
        "type": problem_type,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update(extensions)
    return {
        "statusCode": status,
        "headers": {"Content-Type": PROBLEM_CONTENT_TYPE, "X-Content-Type-Options": "nosniff", **(headers or {})},
        "body": json.dumps(body, separators=(",", ":")),
        "isBase64Encoded": False,
    }


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
