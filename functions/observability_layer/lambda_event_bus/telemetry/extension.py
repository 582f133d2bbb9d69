"""The flush after the response: an internal Lambda extension, a thread in the runtime process.

Lambda freezes an execution environment only once the runtime and every registered extension wait for their next
event. So the layer registers itself for INVOKE events while the function initialises (a wrapped handler is
decorated at import, which is init), and when a wrapped handler returns it hands the flush to this thread instead
of running it before the response: the caller gets its answer first, and spans, metrics and errors are exported
while Lambda waits for the extension (still billed, like any extension's work; the flush keeps its budget,
TELEMETRY_FLUSH_TIMEOUT_MS, within the invocation's deadline).

Registering an extension is also what makes Lambda send SIGTERM to the runtime before it reaps the environment,
which runs the layer's shutdown hook: the last spans and this environment's final metric values go out.

When Lambda refuses the registration (say, a handler decorated after init), the wrapper flushes inline, as without
it. Once registered, the thread keeps asking for events whatever happens: an extension that stops asking would
hold every later invocation.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

EXTENSION_NAME = "eventbus-telemetry"
EXTENSION_API = "/2020-01-01/extension"
REGISTER_TIMEOUT_S = 1.0
# leave the runtime this long before the invocation's deadline when the handler never says it is done
DEADLINE_MARGIN_S = 0.05


class AfterResponseFlush:
    """Runs `flush(available_s)` once per invocation, after the wrapped handler has returned."""

    def __init__(self, runtime_api: str, identifier: str, flush: Callable[[float | None], object]) -> None:
        self.runtime_api = runtime_api
        self.identifier = identifier
        self._flush = flush
        self._done = threading.Event()
        self._logger = logging.getLogger("lambda_event_bus.telemetry.extension")

    @classmethod
    def register(cls, runtime_api: str, flush: Callable[[float | None], object]) -> AfterResponseFlush | None:
        """Register for INVOKE events and start the thread; None (inline flushing) when Lambda refuses."""
        logger = logging.getLogger("lambda_event_bus.telemetry.extension")
        connection = http.client.HTTPConnection(runtime_api, timeout=REGISTER_TIMEOUT_S)
        try:
            body = json.dumps({"events": ["INVOKE"]})
            connection.request(
                "POST", f"{EXTENSION_API}/register", body=body, headers={"Lambda-Extension-Name": EXTENSION_NAME}
            )
            answer = connection.getresponse()
            answer.read()
            identifier = answer.getheader("Lambda-Extension-Identifier")
        except (OSError, http.client.HTTPException) as error:
            logger.warning("telemetry extension not registered (%s): flushing before each response", error)
            return None
        finally:
            connection.close()
        if answer.status != 200 or not identifier:
            logger.warning("telemetry extension refused (HTTP %s): flushing before each response", answer.status)
            return None
        extension = cls(runtime_api, identifier, flush)
        threading.Thread(target=extension.run, name=EXTENSION_NAME, daemon=True).start()
        return extension

    def invocation_done(self) -> None:
        """The wrapped handler has returned (or raised): the flush may run once the response is on its way."""
        self._done.set()

    def run(self) -> None:
        """Forever: wait for an invocation, then for its handler, then flush. It must keep asking for events:
        Lambda starts no invocation while a registered extension does not wait for one."""
        connection = http.client.HTTPConnection(self.runtime_api)  # kept: event/next blocks until the next invoke
        failures = 0
        while True:
            try:
                event = self._next_event(connection)
            except Exception as error:  # a dropped connection or a bad answer: ask again, on a new connection
                failures += 1
                self._logger.warning("telemetry extension: event/next failed (%s)", error)
                connection.close()
                connection = http.client.HTTPConnection(self.runtime_api)
                time.sleep(min(1.0, 0.05 * 2**failures))
                continue
            failures = 0
            if event.get("eventType") == "INVOKE":
                self._after_handler(float(event.get("deadlineMs") or 0) / 1000)

    def _after_handler(self, deadline_s: float) -> None:
        left = deadline_s - time.time() - DEADLINE_MARGIN_S if deadline_s else None
        self._done.wait(timeout=max(0.0, left) if left is not None else None)
        self._done.clear()
        available = deadline_s - time.time() - DEADLINE_MARGIN_S if deadline_s else None
        try:
            self._flush(available)
        except Exception:  # the flush never raises by design; this keeps the loop alive if it ever does
            self._logger.warning("telemetry flush after the response failed", exc_info=True)

    def _next_event(self, connection: http.client.HTTPConnection) -> dict[str, Any]:
        connection.request(
            "GET", f"{EXTENSION_API}/event/next", headers={"Lambda-Extension-Identifier": self.identifier}
        )
        answer = connection.getresponse()
        payload = answer.read()
        if answer.status != 200:
            raise RuntimeError(f"event/next answered HTTP {answer.status}: {payload[:200]!r}")
        event = json.loads(payload)
        if not isinstance(event, dict):
            raise TypeError("event/next answered something other than a JSON object")
        return event
