"""The sandbox's reports to LocalStack's Lambda service (the executor protocol's status, logs and response calls)."""

from __future__ import annotations

import json
import urllib.request

from eventbus_localstack.sandbox.settings import Settings, log


class LocalStackClient:
    """Reports to LocalStack's executor endpoint; no proxies, as the Go init does."""

    def __init__(self, settings: Settings) -> None:
        self._base = settings.localstack_endpoint
        self._runtime_id = settings.runtime_id
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _post(self, path: str, body: bytes) -> None:
        request = urllib.request.Request(f"{self._base}/{path}", data=body, method="POST")  # noqa: S310 - http only
        request.add_header("Content-Type", "application/json")
        try:
            with self._opener.open(request, timeout=30) as response:
                response.read()
        except OSError as exc:
            log("report %s failed: %s", path, exc)

    def ready(self) -> None:
        self._post(f"status/{self._runtime_id}/ready", b"{}")

    def init_error(self, body: bytes) -> None:
        self._post(f"status/{self._runtime_id}/error", body)

    def finished(self, request_id: str, logs: str, body: bytes, *, error: bool) -> None:
        self._post(f"invocations/{request_id}/logs", json.dumps({"logs": logs}).encode())
        self._post(f"invocations/{request_id}/{'error' if error else 'response'}", body)


def error_body(request_id: str, error_type: str, message: str) -> bytes:
    return json.dumps({"errorType": error_type, "errorMessage": f"RequestId: {request_id} Error: {message}"}).encode()
