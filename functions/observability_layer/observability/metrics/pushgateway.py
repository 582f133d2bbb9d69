"""Pushgateway export: a full PUT of one execution environment's registry under its own grouping key.

The Pushgateway caches groups and never merges or expires them, so each execution environment owns
one group (job = service, function name, an instance id made at init) and replaces it whole at every
flush, the last one at shutdown. It never deletes its group (a delete would throw away what Prometheus has
not scraped yet): MaintenanceFunction removes groups of environments that are gone, once they are stale.

prometheus_client builds the URL and the body; the HTTP request goes through a handler of our own that
keeps one connection open across invocations. prometheus_client's default handler builds a new urllib
opener per push, which creates an SSL context (loading the CA bundle: ~20 ms) and a new TCP connection
(and TLS handshake for https) every time.
"""

from __future__ import annotations

import base64
import http.client
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit, urlunsplit

from prometheus_client import CollectorRegistry, push_to_gateway

RequestHandler = Callable[[str, str, float | None, Sequence[tuple[str, str]], bytes], Callable[[], None]]


def new_instance_id() -> str:
    return uuid.uuid4().hex[:16]


class PushgatewayError(OSError):
    """The Pushgateway answered with an error status, or the connection is in use."""


MAX_IDLE_S = 30.0
"""A connection idle for longer is not reused: across a long Lambda freeze a NAT or load balancer may have
dropped it silently, and a request on it would wait for its whole timeout instead of failing fast."""


class KeepAliveConnection:
    """One HTTP/1.1 connection to the Pushgateway, reopened when the server closed it or it sat idle."""

    def __init__(self, scheme: str, host: str, port: int | None, authorization: str | None) -> None:
        self._scheme = scheme
        self._host = host
        self._port = port
        self._authorization = authorization
        self._connection: http.client.HTTPConnection | None = None
        self._ssl_context: ssl.SSLContext | None = None
        self._lock = threading.Lock()
        self._last_used = 0.0
        self.opened = 0

    def _open(self, timeout: float | None) -> http.client.HTTPConnection:
        if self._scheme == "https":
            if self._ssl_context is None:
                self._ssl_context = ssl.create_default_context()
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout, context=self._ssl_context)
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def request(
        self, method: str, path: str, headers: Sequence[tuple[str, str]], body: bytes, timeout: float | None
    ) -> int:
        if not self._lock.acquire(timeout=timeout if timeout is not None else -1):
            raise PushgatewayError("the previous request to the Pushgateway is still running")
        try:
            reused = self._connection is not None
            try:
                return self._send(method, path, headers, body, timeout)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if not reused:
                    raise
                return self._send(method, path, headers, body, timeout)  # the server closed an idle connection
            except BaseException:
                self.close()
                raise
        finally:
            self._lock.release()

    def _send(
        self, method: str, path: str, headers: Sequence[tuple[str, str]], body: bytes, timeout: float | None
    ) -> int:
        if self._connection is not None and time.monotonic() - self._last_used > MAX_IDLE_S:
            self.close()
        if self._connection is None:
            self._connection = self._open(timeout)
            self.opened += 1
        connection = self._connection
        connection.timeout = timeout
        if connection.sock is not None:
            connection.sock.settimeout(timeout)
        all_headers = dict(headers)
        if self._authorization:
            all_headers["Authorization"] = self._authorization
        connection.request(method, path, body=body, headers=all_headers)
        response = connection.getresponse()
        response.read()
        self._last_used = time.monotonic()
        if response.will_close:
            self.close()
        return response.status

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


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
        authorization = None
        if parts.username is not None:  # credentials in the URL become basic auth
            token = base64.b64encode(f"{parts.username}:{parts.password or ''}".encode()).decode()
            authorization = f"Basic {token}"
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        self.url = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        self.job = job
        self.grouping_key = {"function_name": function_name, "instance": instance}
        self._registry = registry
        self._connection = KeepAliveConnection(parts.scheme, parts.hostname or "", parts.port, authorization)

    def _handler(
        self, url: str, method: str, timeout: float | None, headers: Sequence[tuple[str, str]], data: bytes
    ) -> Callable[[], None]:
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")

        def handle() -> None:
            status = self._connection.request(method, path, headers, data, timeout)
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

    def close(self) -> None:
        self._connection.close()
