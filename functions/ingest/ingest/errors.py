"""The ingest's errors and the one table that maps them to HTTP statuses (RFC 9457 problem documents)."""

from __future__ import annotations

from typing import Any

from lambda_event_bus.base import problem


class IngestError(Exception):
    """Base of every error answered to the client. `detail` is safe to show; `errors` lists per-event
    problems ({"index", "id", "detail"}) for batches."""

    slug = "ingest-error"
    title: str | None = None

    def __init__(self, detail: str, *, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []


class MalformedRequestError(IngestError):
    slug = "malformed-event"


class NotFoundError(IngestError):
    slug = "not-found"


class MethodNotAllowedError(IngestError):
    slug = "method-not-allowed"

    def __init__(self, detail: str, *, allow: list[str]) -> None:
        super().__init__(detail)
        self.allow = allow


class ConflictError(IngestError):
    """Another request holds the claim on an event: retrying after `retry_after_s` is safe."""

    slug = "event-in-progress"

    def __init__(self, detail: str, *, retry_after_s: int = 1, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail, errors=errors)
        self.retry_after_s = retry_after_s


class PayloadTooLargeError(IngestError):
    slug = "payload-too-large"


class UnsupportedMediaTypeError(IngestError):
    slug = "unsupported-media-type"


class SchemaViolationError(IngestError):
    slug = "schema-violation"


class UnavailableError(IngestError):
    """The broker (or the idempotency store) did not answer in time: nothing of the failed events was
    accepted; `results` says which events of the request were."""

    slug = "service-unavailable"

    def __init__(self, detail: str, *, retry_after_s: int = 1, results: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s
        self.results = results or []


STATUS: dict[type[IngestError], int] = {
    MalformedRequestError: 400,
    NotFoundError: 404,
    MethodNotAllowedError: 405,
    ConflictError: 409,
    PayloadTooLargeError: 413,
    UnsupportedMediaTypeError: 415,
    SchemaViolationError: 422,
    UnavailableError: 503,
}


def status_of(error: IngestError) -> int:
    for error_type in type(error).__mro__:
        if error_type in STATUS:
            return STATUS[error_type]
    return 500


def problem_response(error: IngestError, *, instance: str | None = None) -> dict[str, Any]:
    """The API Gateway response for an IngestError."""
    extensions: dict[str, Any] = {}
    headers: dict[str, str] = {}
    if error.errors:
        extensions["errors"] = error.errors
    if isinstance(error, (UnavailableError, ConflictError)):
        headers["Retry-After"] = str(error.retry_after_s)
    if isinstance(error, UnavailableError) and error.results:
        extensions["results"] = error.results
    if isinstance(error, MethodNotAllowedError):
        headers["Allow"] = ", ".join(error.allow)
    return problem(
        status_of(error),
        error.detail,
        problem_type=f"urn:eventbus:problem:{error.slug}",
        instance=instance,
        headers=headers,
        **extensions,
    )
