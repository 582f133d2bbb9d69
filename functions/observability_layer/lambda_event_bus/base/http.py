"""API Gateway's shapes as plain values: the proxy event read into an `HttpRequest` (REST v1 and HTTP API v2),
its headers normalised, and a problem+json proxy response (RFC 9457)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, NotRequired, TypedDict


class ProxyResponse(TypedDict):
    """What a handler behind API Gateway's proxy integration returns."""

    statusCode: int
    headers: dict[str, str]
    body: str
    isBase64Encoded: NotRequired[bool]


def normalize_http_headers(
    headers: Mapping[str, Any] | None, multi_value_headers: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """Lower-cased single-valued headers from API Gateway's `headers`, completed from `multiValueHeaders`
    (joined with commas) for names `headers` lacks. Anything that is not text is ignored."""
    normalized: dict[str, str] = {}
    if isinstance(headers, Mapping):
        for name, value in headers.items():
            if isinstance(name, str) and isinstance(value, str):
                normalized[name.lower()] = value
    if isinstance(multi_value_headers, Mapping):
        for name, values in multi_value_headers.items():
            if isinstance(name, str) and isinstance(values, list) and name.lower() not in normalized:
                normalized[name.lower()] = ",".join(str(value) for value in values if value is not None)
    return normalized


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
