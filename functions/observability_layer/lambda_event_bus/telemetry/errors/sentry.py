"""Sentry reporting, built only when SENTRY_DSN is set: this module is the only one that imports sentry_sdk.

The client is the layer's own (not the global one an application may have configured), sends no PII (the default),
local variables or automatic integrations, and its transport reports what it drops so the layer can
count it. Its failures never escape: sentry_sdk's worker thread swallows them, and `capture` guards
the rest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import sentry_sdk
from sentry_sdk.transport import HttpTransport
from sentry_sdk.utils import event_from_exception

from lambda_event_bus.telemetry.config import SentrySettings
from lambda_event_bus.telemetry.errors.scrub import scrub_text

logger = logging.getLogger(__name__)

SEND_TIMEOUT_S = 5
"""The transport's request timeout. Sending happens on Sentry's worker thread; the flush bounds the wait."""


class SentryReporter:
    def __init__(
        self,
        settings: SentrySettings,
        *,
        server_name: str,
        on_dropped: Callable[[str], None],
    ) -> None:
        reporter = self
        self._dropped = 0

        class _CountingTransport(HttpTransport):
            TIMEOUT = SEND_TIMEOUT_S

            def on_dropped_event(self, reason: str) -> None:
                reporter._dropped += 1
                on_dropped(reason)

        self._client = sentry_sdk.Client(
            dsn=settings.dsn,
            environment=settings.environment,
            release=settings.release,
            sample_rate=settings.sample_rate,
            server_name=server_name,
            transport=_CountingTransport,
            default_integrations=False,
            auto_enabling_integrations=False,
            include_local_variables=False,
            max_breadcrumbs=0,
        )

    def capture(
        self,
        error: BaseException,
        *,
        tags: Mapping[str, str],
        context: Mapping[str, Any],
        trace_id: str | None,
        span_id: str | None,
        handled: bool,
    ) -> str | None:
        """Send `error`; Sentry's event id, or None when it was sampled out or could not be queued."""
        try:
            event, hint = event_from_exception(
                error,
                client_options=self._client.options,
                mechanism={"type": "eventbus", "handled": handled},
            )
            for exception in event.get("exception", {}).get("values", []):
                if isinstance(exception.get("value"), str):
                    exception["value"] = scrub_text(exception["value"])
            contexts = event.setdefault("contexts", {})
            contexts["eventbus"] = dict(context)
            if trace_id and span_id:
                # Sentry links events by this context: the same ids as the OpenTelemetry span
                contexts["trace"] = {"trace_id": trace_id, "span_id": span_id}
            with sentry_sdk.new_scope() as scope:
                scope.set_client(self._client)
                for key, value in tags.items():
                    scope.set_tag(key, value)
                return scope.capture_event(event, hint=hint)
        except Exception:
            logger.debug("sentry capture failed", exc_info=True)
            return None

    def flush(self, timeout: float) -> bool:
        """Wait up to `timeout` for queued events to be sent.

        False when the wait ran out (Sentry's flush does not say so itself) or when the transport
        dropped an event since the last flush.
        """
        started = time.monotonic()
        self._client.flush(timeout=timeout)
        timed_out = time.monotonic() - started >= timeout
        dropped, self._dropped = self._dropped, 0
        return not timed_out and dropped == 0

    def close(self, timeout: float) -> None:
        self._client.close(timeout=timeout)
