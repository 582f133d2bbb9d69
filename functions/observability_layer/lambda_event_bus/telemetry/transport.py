"""One kept-alive HTTP/1.1 connection per telemetry backend (the Pushgateway, the OTLP collector).

Both backends are called once per invocation from the same execution environment, so a connection opened once
and reused saves a TCP (and TLS) handshake per flush. http.client rather than urllib or requests: prometheus_client
loads it anyway, where `requests` costs ~45 ms and ~7 MiB of cold start. An SSL context (loading the CA bundle,
~20 ms) is made only for an https endpoint, on its first connection.
"""

from __future__ import annotations

import base64
import http.client
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from lambda_event_bus.telemetry.exceptions import TelemetryError

if TYPE_CHECKING:
    import ssl

MAX_IDLE_S = 30.0
"""A connection idle for longer is not reused: across a long Lambda freeze a NAT or load balancer may have
dropped it silently, and a request on it would wait for its whole timeout instead of failing fast."""


class ConnectionBusyError(TelemetryError, OSError):
    """The previous request on this connection is still running (a flush abandoned at its deadline)."""


class KeepAliveConnection:
    """One HTTP/1.1 connection to a backend, reopened when the server closed it or it sat idle."""

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int | None,
        *,
        authorization: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._scheme = scheme
        self._host = host
        self._port = port
        self._authorization = authorization
        self._connection: http.client.HTTPConnection | None = None
        self._ssl_context = ssl_context
        self._lock = threading.Lock()
        self._last_used = 0.0
        self.opened = 0

    @classmethod
    def for_url(cls, url: str, *, ssl_context: ssl.SSLContext | None = None) -> KeepAliveConnection:
        """A connection to the URL's host; credentials in the URL (`https://user:pass@host`, percent-decoded)
        become basic auth on every request."""
        parts = urlsplit(url)
        authorization = None
        if parts.username is not None:
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            authorization = f"Basic {base64.b64encode(credentials.encode()).decode()}"
        return cls(parts.scheme, parts.hostname or "", parts.port, authorization=authorization, ssl_context=ssl_context)

    def _open(self, timeout: float | None) -> http.client.HTTPConnection:
        if self._scheme == "https":
            if self._ssl_context is None:
                import ssl

                self._ssl_context = ssl.create_default_context()
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout, context=self._ssl_context)
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def request(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes, timeout: float | None
    ) -> tuple[int, bytes]:
        """Send one request and read the whole answer: (status, body). Raises OSError / HTTPException on a
        network failure, ConnectionBusyError while an abandoned request still holds the connection."""
        if not self._lock.acquire(timeout=timeout if timeout is not None else -1):
            raise ConnectionBusyError(f"the previous request to {self._host} is still running")
        try:
            reused = self._connection is not None
            try:
                return self._send(method, path, headers, body, timeout)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self._close()
                if not reused:
                    raise
                try:  # the server closed an idle connection: once more, on a new one
                    return self._send(method, path, headers, body, timeout)
                except BaseException:
                    self._close()
                    raise
            except BaseException:
                self._close()
                raise
        finally:
            self._lock.release()

    def _send(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes, timeout: float | None
    ) -> tuple[int, bytes]:
        if self._connection is not None and time.monotonic() - self._last_used > MAX_IDLE_S:
            self._close()
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
        answer = response.read()
        self._last_used = time.monotonic()
        if response.will_close:
            self._close()
        return response.status, answer

    def close(self, wait_s: float = 1.0) -> None:
        """Close the connection, after the request in flight if there is one (waiting at most `wait_s`)."""
        acquired = self._lock.acquire(timeout=wait_s)
        try:
            self._close()
        finally:
            if acquired:
                self._lock.release()

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
