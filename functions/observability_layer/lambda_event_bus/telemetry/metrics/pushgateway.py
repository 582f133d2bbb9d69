"""Pushgateway export: a full PUT of one execution environment's registry under its own grouping key.

The Pushgateway caches groups and never merges or expires them, so each execution environment owns
one group (job = service, function name, an instance id made at init) and replaces it whole at every
flush, the last one at shutdown. It never deletes its group (a delete would throw away what Prometheus has
not scraped yet): MaintenanceFunction removes groups of environments that are gone, once they are stale.

prometheus_client builds the URL and the body; the HTTP request goes through a handler of our own that keeps one
connection open across invocations (lambda_event_bus.telemetry.transport). prometheus_client's default handler builds
a new urllib opener per push, which creates an SSL context (loading the CA bundle: ~20 ms) and a new TCP connection
(and TLS handshake for https) every time.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit, urlunsplit

from prometheus_client import CollectorRegistry, push_to_gateway

from lambda_event_bus.telemetry.exceptions import TelemetryError
from lambda_event_bus.telemetry.transport import ConnectionBusyError, KeepAliveConnection

RequestHandler = Callable[[str, str, float | None, Sequence[tuple[str, str]], bytes], Callable[[], None]]


def new_instance_id() -> str:
    return uuid.uuid4().hex[:16]


class PushgatewayError(TelemetryError, OSError):
    """The Pushgateway answered with an error status, or the connection is in use."""


class PushgatewayExporter:
    def __init__(
        self,
        url: str,
        *,
        job: str,
        function_name: str,
        instance: str,
        registry: CollectorRegistry,
    ) -> None:
        parts = urlsplit(url)
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        self.url = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        self.job = job
        self.grouping_key = {"function_name": function_name, "instance": instance}
        self._registry = registry
        self._connection = KeepAliveConnection.for_url(url)  # credentials in the URL become basic auth

    def _handler(
        self, url: str, method: str, timeout: float | None, headers: Sequence[tuple[str, str]], data: bytes
    ) -> Callable[[], None]:
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")

        def handle() -> None:
            try:
                status, _ = self._connection.request(method, path, dict(headers), data, timeout)
            except ConnectionBusyError as error:
                raise PushgatewayError(str(error)) from error
            if status >= 400:
                raise PushgatewayError(f"error talking to pushgateway: HTTP {status}")

        return handle

    def push(self, timeout: float) -> None:
        """PUT the registry (replaces the group). Raises on a network error or a non-2xx answer."""
        push_to_gateway(
            self.url,
            job=self.job,
            registry=self._registry,
            grouping_key=self.grouping_key,
            timeout=timeout,
            handler=self._handler,
        )

    def rename(self, instance: str) -> None:
        """Push under a new environment id from now on (an environment restored from a SnapStart snapshot)."""
        self.grouping_key = {**self.grouping_key, "instance": instance}

    def close(self) -> None:
        self._connection.close()
