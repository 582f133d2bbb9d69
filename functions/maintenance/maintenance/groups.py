"""Stale Pushgateway groups: read every group's `push_time_seconds` from `GET /api/v1/metrics`, delete the
groups older than the configured age.

The Pushgateway never expires a group, and each Lambda execution environment pushes under a grouping key of
its own, so the groups of environments that died without a graceful shutdown stay until someone deletes
them. The DELETE goes through prometheus_client's `delete_from_gateway`, which builds
`/metrics/job/<job>/<label>/<value>...` and switches a value with `/` (or a space, or an empty value) to the
`<label>@base64/<urlsafe base64>` form the Pushgateway documents.
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.exposition import delete_from_gateway

from maintenance.deadline import Deadline
from maintenance.exceptions import EndpointError, UnexpectedAnswerError
from maintenance.rest import Endpoint

GatewayHandler = Callable[[str, str, float | None, list[tuple[str, str]], bytes], Callable[[], None]]
"""prometheus_client's push handler signature: (url, method, timeout, headers, data) -> do-it."""


@dataclass(frozen=True)
class PushGroup:
    labels: Mapping[str, str]
    """The grouping key, `job` included."""
    push_time: float | None
    """Unix time of the last successful push; None when the group does not say."""

    @property
    def job(self) -> str:
        return self.labels.get("job", "")

    @property
    def grouping_key(self) -> dict[str, str]:
        return {name: value for name, value in self.labels.items() if name != "job"}


def parse_groups(answer: object) -> list[PushGroup]:
    """The Pushgateway's `GET /api/v1/metrics` answer as groups (metric families are ignored)."""
    if not isinstance(answer, Mapping) or answer.get("status") != "success" or not isinstance(answer.get("data"), list):
        raise UnexpectedAnswerError("GET /api/v1/metrics did not answer status success and a data list")
    groups = []
    for item in answer["data"]:
        labels = item.get("labels") if isinstance(item, Mapping) else None
        if not isinstance(labels, Mapping) or not all(isinstance(v, str) for v in labels.values()):
            raise UnexpectedAnswerError("a group in GET /api/v1/metrics has no labels")
        groups.append(PushGroup(dict(labels), _push_time(item)))
    return groups


def _push_time(group: Mapping[str, Any]) -> float | None:
    family = group.get("push_time_seconds")
    try:
        return float(family["metrics"][0]["value"])  # type: ignore[index]
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def select_stale(
    groups: Iterable[PushGroup], *, now: float, max_age_s: float, keep: Mapping[str, str] | None = None
) -> tuple[list[PushGroup], list[PushGroup]]:
    """(stale, kept). Stale: last pushed more than `max_age_s` before `now`. Kept as well: the group whose
    grouping key is `keep` (this function's own), groups without a push time and groups without a job (no
    DELETE URL can name them)."""
    stale: list[PushGroup] = []
    kept: list[PushGroup] = []
    for group in groups:
        old = group.push_time is not None and now - group.push_time > max_age_s
        mine = keep is not None and dict(group.labels) == dict(keep)
        (stale if old and not mine and group.job else kept).append(group)
    return stale, kept


@dataclass
class SweepResult:
    deleted: list[PushGroup] = field(default_factory=list)
    kept: int = 0
    """Groups the Pushgateway still holds after the sweep, of those it listed (fresh, own, not deleted)."""
    failures: list[tuple[str, Exception, PushGroup | None]] = field(default_factory=list)
    """(operation, error, group)."""


class PushgatewaySweeper:
    def __init__(
        self,
        url: str,
        *,
        max_age_s: float,
        timeout_s: float,
        own_group: Mapping[str, str] | None,
        clock: Callable[[], float] = time.time,
        handler: GatewayHandler | None = None,
    ) -> None:
        self._endpoint = Endpoint.parse(url)
        self._max_age_s = max_age_s
        self._timeout_s = timeout_s
        self._own_group = dict(own_group) if own_group is not None else None
        self._clock = clock
        self._handler = handler or self._default_handler

    @property
    def endpoint(self) -> str:
        return self._endpoint.base_url

    def _default_handler(
        self, url: str, method: str, timeout: float | None, headers: list[tuple[str, str]], data: bytes
    ) -> Callable[[], None]:
        """prometheus_client's own handlers build a urllib opener per request, and with it an SSL context: 18 of
        the 20 ms a DELETE took (tests/perf/bench_pushgateway.py). urlopen's shared opener is built once."""
        authorization = self._endpoint.authorization

        def handle() -> None:
            request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - http(s) only, checked at start-up
            for name, value in headers:
                request.add_header(name, value)
            if authorization:
                request.add_unredirected_header("Authorization", authorization)
            with urllib.request.urlopen(request, timeout=timeout):  # noqa: S310 - as above; >= 400 raises HTTPError
                pass

        return handle

    def list_groups(self, deadline: Deadline) -> list[PushGroup]:
        return parse_groups(self._endpoint.get_json("/api/v1/metrics", deadline.timeout(self._timeout_s)))

    def delete(self, group: PushGroup, deadline: Deadline) -> None:
        try:
            delete_from_gateway(
                self._endpoint.base_url,
                job=group.job,
                grouping_key=group.grouping_key,
                timeout=deadline.timeout(self._timeout_s),
                handler=self._handler,
            )
        except urllib.error.HTTPError as error:
            raise EndpointError(f"DELETE group {dict(group.labels)}: HTTP {error.code}") from error
        except (OSError, http.client.HTTPException) as error:
            raise EndpointError(f"DELETE group {dict(group.labels)}: {error}") from error

    def sweep(self, deadline: Deadline) -> SweepResult:
        """Delete the stale groups. Never raises: failures are in the result. A group that answers an error
        status is skipped; a Pushgateway that stops answering ends the sweep (the next run resumes it)."""
        result = SweepResult()
        try:
            groups = self.list_groups(deadline)
        except Exception as error:
            result.failures.append(("list_groups", error, None))
            return result
        stale, kept = select_stale(groups, now=self._clock(), max_age_s=self._max_age_s, keep=self._own_group)
        result.kept = len(kept)
        for position, group in enumerate(stale):
            try:
                self.delete(group, deadline)
            except EndpointError as error:
                result.failures.append(("delete_group", error, group))
                if isinstance(error.__cause__, urllib.error.HTTPError):
                    result.kept += 1
                    continue
                result.kept += len(stale) - position
                break
            except Exception as error:  # the deadline, or anything unforeseen: stop, keep the rest for next time
                result.failures.append(("delete_group", error, group))
                result.kept += len(stale) - position
                break
            result.deleted.append(group)
        return result


def describe(groups: Sequence[PushGroup]) -> list[dict[str, str]]:
    """Groups as their grouping keys, for the summary and logs."""
    return [dict(group.labels) for group in groups]
