"""OTLP/HTTP span export (binary protobuf) on a kept-alive http.client connection.

Why not opentelemetry-exporter-otlp-proto-http: it sends through `requests`, whose import alone costs ~45 ms and ~7
MiB of every cold start, opens a session whose pool is rebuilt after a failure, and retries 429/5xx answers with
sleeps up to its own 10 s timeout. Here the request is one POST per export on the connection the layer keeps
(lambda_event_bus.telemetry.transport), and retrying is left to the layer: a failed export's spans are kept and sent
with the next one (ObservedSpanExporter), and the flush backs off a failing backend
(lambda_event_bus.telemetry.flush). The body is written by lambda_event_bus.telemetry.tracing.otlp_encoding: the
bytes the SDK's `encode_spans` gives, at a third of its cost, and without importing protobuf.
"""

from __future__ import annotations

import gzip
import logging
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from lambda_event_bus.base.env import redact_userinfo
from lambda_event_bus.telemetry.tracing.otlp_encoding import OtlpSpanEncoder
from lambda_event_bus.telemetry.transport import KeepAliveConnection

if TYPE_CHECKING:
    import ssl

logger = logging.getLogger(__name__)

PROTOBUF = "application/x-protobuf"
COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda body: gzip.compress(body, compresslevel=6),
    "deflate": zlib.compress,
}


def tls_context(ca_file: str | None, client_certificate: str | None, client_key: str | None) -> ssl.SSLContext | None:
    """An SSL context for an https collector with its own CA or a client certificate; None for the defaults."""
    if not (ca_file or client_certificate):
        return None
    import ssl

    context = ssl.create_default_context(cafile=ca_file)
    if client_certificate:
        context.load_cert_chain(client_certificate, client_key)
    return context


class OtlpHttpSpanExporter(SpanExporter):
    """POSTs each export to the collector's traces endpoint; SUCCESS only for a 2xx answer."""

    def __init__(
        self,
        endpoint: str,
        *,
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
        compression: str = "none",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(endpoint)
        self.endpoint = redact_userinfo(endpoint)  # what logs show
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._timeout_s = timeout_s
        self._compression = compression
        self._headers = {"Content-Type": PROTOBUF, "User-Agent": "eventbus-observability", **(headers or {})}
        if compression in COMPRESSORS:
            self._headers["Content-Encoding"] = compression
        # credentials in the URL become basic auth, as requests made them
        self._connection = KeepAliveConnection.for_url(endpoint, ssl_context=ssl_context)
        self._encoder = OtlpSpanEncoder()
        self._shut_down = False
        self.bytes_sent = 0
        self.spans_sent = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shut_down:
            return SpanExportResult.FAILURE
        if not spans:
            return SpanExportResult.SUCCESS
        body = self._encoder.encode(spans)
        compress = COMPRESSORS.get(self._compression)
        if compress is not None:
            body = compress(body)
        try:
            status, answer = self._connection.request("POST", self._path, self._headers, body, self._timeout_s)
        except OSError as error:  # refused, reset, timed out, busy; http.client's errors are OSErrors or below
            logger.debug("OTLP export to %s failed: %s", self.endpoint, error)
            return SpanExportResult.FAILURE
        except Exception as error:  # http.client.HTTPException: a malformed answer
            logger.debug("OTLP export to %s failed: %s", self.endpoint, error)
            return SpanExportResult.FAILURE
        if not 200 <= status < 300:  # a redirect too: a collector's endpoint is configured, not discovered
            # the flush backs off this backend after a failure: at most one line per back-off period
            logger.warning("OTLP export to %s answered HTTP %s: %r", self.endpoint, status, answer[:200])
            return SpanExportResult.FAILURE
        self.bytes_sent += len(body)
        self.spans_sent += len(spans)
        return SpanExportResult.SUCCESS

    @property
    def connections_opened(self) -> int:
        return self._connection.opened

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True  # nothing is buffered here: the processor in front holds the spans

    def disconnect(self) -> None:
        """Close the kept-alive connection; the next export opens a new one."""
        self._connection.close()

    def shutdown(self) -> None:
        self._shut_down = True
        self._connection.close()
