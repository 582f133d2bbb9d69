"""The HTTP routes: POST /events, GET /health, and the demo routes. Each turns a request into plain values,
calls the service, and maps the outcome to a response; errors become problem+json through one table."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lambda_event_bus.base import HttpRequest, LambdaContext, parse_api_gateway_event
from lambda_event_bus.bus.contract import ContractError, make_event, timestamp
from lambda_event_bus.bus.producer import ProducerFailedError
from lambda_event_bus.telemetry import Telemetry

from ingest.errors import (
    IngestError,
    MalformedRequestError,
    MethodNotAllowedError,
    NotFoundError,
    UnavailableError,
    problem_response,
)
from ingest.parsing import parse_events, read_request
from ingest.service import EventResult, IngestService

logger = logging.getLogger(__name__)

RESPONSE_RESERVE_S = 0.1
"""Kept back from the invocation's remaining time for the response itself (the telemetry flush has its own)."""
CDC_OPERATIONS = ("create", "update", "delete", "snapshot", "truncate")
DEMO_ERRORS: dict[str, type[Exception]] = {
    "value": ValueError,
    "key": KeyError,
    "runtime": RuntimeError,
    "timeout": TimeoutError,
    "zero": ZeroDivisionError,
}
_TOPIC = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")


@dataclass(frozen=True)
class Call:
    """One request as the routes see it."""

    event: Mapping[str, Any]
    request: HttpRequest
    context: LambdaContext | None

    @property
    def query(self) -> dict[str, str]:
        query = self.event.get("queryStringParameters")
        if not isinstance(query, Mapping):
            return {}
        return {key: value for key, value in query.items() if isinstance(key, str) and isinstance(value, str)}

    def time_left_s(self, flush_budget_s: float) -> float:
        if self.context is None:
            return 30.0
        return self.context.get_remaining_time_in_millis() / 1000 - flush_budget_s - RESPONSE_RESERVE_S


Route = Callable[["Api", Call], dict[str, Any]]


def json_response(status: int, body: object, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json", "X-Content-Type-Options": "nosniff", **(headers or {})},
        "body": json.dumps(body, separators=(",", ":")),
        "isBase64Encoded": False,
    }


def accepted(results: list[EventResult]) -> dict[str, Any]:
    return json_response(
        202, {"accepted": [result.id for result in results], "results": [r.as_dict() for r in results]}
    )


class Api:
    def __init__(self, service: IngestService, telemetry: Telemetry, ping: Callable[[float], int]) -> None:
        self.service = service
        self.telemetry = telemetry
        self._ping = ping

    def dispatch(self, event: object, context: LambdaContext | None) -> dict[str, Any]:
        data: Mapping[str, Any] = event if isinstance(event, Mapping) else {}
        call = Call(data, parse_api_gateway_event(data), context)
        try:
            return self._route(call)(self, call)
        except IngestError as error:
            return problem_response(error, instance=call.request.path or None)

    def _route(self, call: Call) -> Route:
        methods = ROUTES.get(call.request.route)
        if call.request.route in DEMO_ROUTES and not self.service.settings.demo_routes:
            methods = (
                None  # off: as if the route did not exist (API Gateway still has it: SAM events are unconditional)
            )
        if methods is None:
            raise NotFoundError(f"no route for {call.request.path or call.request.route}")
        route = methods.get(call.request.method)
        if route is None:
            raise MethodNotAllowedError(f"{call.request.method} is not allowed here", allow=sorted(methods))
        return route

    def _time_left(self, call: Call) -> float:
        return call.time_left_s(self.telemetry.settings.flush_timeout_s)

    # routes

    def post_events(self, call: Call) -> dict[str, Any]:
        request = read_request(call.event, call.request.headers, self.service.settings.max_request_bytes)
        events = parse_events(request)
        return accepted(self.service.accept(events, self._time_left(call)))

    def health(self, call: Call) -> dict[str, Any]:
        if call.query.get("deep") not in ("1", "true"):
            return json_response(200, {"status": "ok"})
        timeout = min(self.service.settings.health_timeout_s, max(0.05, self._time_left(call)))
        started = time.monotonic()
        try:
            brokers = self._ping(timeout)
        except ProducerFailedError as error:  # the broker answers, but this producer could not have sent
            raise UnavailableError(str(error), retry_after_s=1) from None
        except Exception as error:
            raise UnavailableError(
                f"the broker did not answer within {timeout:.2f} s: {error}", retry_after_s=5
            ) from None
        latency_ms = round((time.monotonic() - started) * 1000, 1)
        return json_response(200, {"status": "ok", "kafka": {"brokers": brokers, "latency_ms": latency_ms}})

    def demo_events(self, call: Call) -> dict[str, Any]:
        """GET /api/events?type=&source=: produce a demo event through the same path as POST /events."""
        query = call.query
        try:
            event = make_event(
                {
                    "specversion": "1.0",
                    "id": str(uuid.uuid4()),
                    "type": query.get("type") or "demo.event",
                    "source": query.get("source") or "/demo",
                    "time": timestamp(datetime.now(UTC)),
                    "datacontenttype": "application/json",
                },
                {"message": "demo event", "requested_at": datetime.now(UTC).isoformat()},
            )
        except ContractError as error:
            raise MalformedRequestError(error.reason) from None
        return accepted(self.service.accept([event], self._time_left(call)))

    def demo_kafka(self, call: Call) -> dict[str, Any]:
        """GET /api/kafka?operation=produce&topic=: produce a demo record to a topic of the caller's choice."""
        operation = call.query.get("operation") or "produce"
        if operation != "produce":
            raise MalformedRequestError(f"operation must be 'produce' (got {operation!r})")
        topic = call.query.get("topic") or self.service.settings.default_topic
        if not _TOPIC.match(topic):
            raise MalformedRequestError(f"{topic!r} is not a Kafka topic name ([a-zA-Z0-9._-], 1-249 chars)")
        event = make_event(
            {"specversion": "1.0", "id": str(uuid.uuid4()), "type": "demo.kafka", "source": "/demo/kafka"},
            {"message": "demo record"},
        )
        return accepted(self.service.accept([event], self._time_left(call), topic=topic))

    def demo_cdc(self, call: Call) -> dict[str, Any]:
        """GET /api/cdc?connector=&table=&operation=: record a CDC operation in the metrics and a span."""
        query = call.query
        operation = query.get("operation") or "update"
        if operation not in CDC_OPERATIONS:
            raise MalformedRequestError(f"operation must be one of {', '.join(CDC_OPERATIONS)} (got {operation!r})")
        connector, table = query.get("connector") or "demo-connector", query.get("table") or "demo_table"
        with self.telemetry.cdc_operation(connector, table, operation) as change:
            change.record_lag(0.0)
        return json_response(200, {"recorded": {"connector": connector, "table": table, "operation": operation}})

    def demo_error(self, call: Call) -> dict[str, Any]:
        """GET /api/error?type=: raise, so the error is captured and answered as a 500 with its event id."""
        kind = call.query.get("type") or "runtime"
        error_type = DEMO_ERRORS.get(kind, RuntimeError)
        raise error_type(f"demo error requested with type={kind}")


DEMO_ROUTES = frozenset({"/api/events", "/api/kafka", "/api/cdc", "/api/error"})
ROUTES: dict[str, dict[str, Route]] = {
    "/events": {"POST": Api.post_events},
    "/health": {"GET": Api.health},
    "/api/events": {"GET": Api.demo_events},
    "/api/kafka": {"GET": Api.demo_kafka},
    "/api/cdc": {"GET": Api.demo_cdc},
    "/api/error": {"GET": Api.demo_error},
}
