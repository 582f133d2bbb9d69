"""Pushgateway export: a full PUT of one execution environment's registry under its own grouping key.

The Pushgateway caches groups and never merges or expires them, so each execution environment owns
one group (job = service, function name, an instance id made at init), replaces it whole at every
flush, and deletes it at shutdown; MaintenanceFunction removes the groups of environments that died.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

from prometheus_client import CollectorRegistry, delete_from_gateway, push_to_gateway
from prometheus_client.exposition import basic_auth_handler, default_handler

Handler = Callable[..., Callable[[], None]]


def new_instance_id() -> str:
    return uuid.uuid4().hex[:16]


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
        # credentials in the URL become basic auth: urllib would otherwise send them nowhere
        self._username = parts.username
        self._password = parts.password or ""
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        self.url = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        self.job = job
        self.grouping_key = {"function_name": function_name, "instance": instance}
        self._registry = registry

    def _handler(self) -> Handler:
        if self._username is None:
            return default_handler
        username, password = self._username, self._password

        def with_auth(
            url: str, method: str, timeout: float | None, headers: list[tuple[str, str]], data: bytes
        ) -> Callable[[], None]:
            return basic_auth_handler(url, method, timeout, headers, data, username, password)

        return with_auth

    def push(self, timeout: float) -> None:
        """PUT the registry (replaces the group). Raises on a network error or a non-2xx answer."""
        push_to_gateway(
            self.url,
            job=self.job,
            registry=self._registry,
            grouping_key=self.grouping_key,
            timeout=timeout,
            handler=self._handler(),
        )

    def delete(self, timeout: float) -> None:
        """DELETE the group, for a graceful shutdown of the execution environment."""
        delete_from_gateway(
            self.url, job=self.job, grouping_key=self.grouping_key, timeout=timeout, handler=self._handler()
        )
