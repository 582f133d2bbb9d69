"""JSON over HTTP GET with a bounded timeout and basic auth taken from the URL's userinfo.

Only stdlib urllib: the answers are small JSON documents and the function runs once per schedule tick,
so a keep-alive pool would buy nothing.
"""

from __future__ import annotations

import base64
import http.client
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

from maintenance.exceptions import EndpointError, UnexpectedAnswerError

MAX_RESPONSE_BYTES = 64 * 1024 * 1024
"""A Pushgateway holding many groups answers /api/v1/metrics with megabytes; anything beyond this is not an answer."""


@dataclass(frozen=True)
class Endpoint:
    """A base URL without credentials (safe to log) and the basic-auth credentials its userinfo carried."""

    base_url: str
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        netloc = parts.hostname or ""
        if ":" in netloc:  # an IPv6 literal
            netloc = f"[{netloc}]"
        if parts.port:
            netloc += f":{parts.port}"
        base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        if parts.username is None:
            return cls(base)
        return cls(base, unquote(parts.username), unquote(parts.password or ""))

    @property
    def authorization(self) -> str | None:
        if self.username is None:
            return None
        token = base64.b64encode(f"{self.username}:{self.password or ''}".encode()).decode()
        return f"Basic {token}"

    def get_json(self, path: str, timeout: float) -> object:
        """GET base_url + path and decode its JSON body. Raises EndpointError (network, status, size) or
        UnexpectedAnswerError (not JSON)."""
        url = self.base_url + path
        request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310 - http(s) only, checked at start-up
        if self.authorization:
            request.add_unredirected_header("Authorization", self.authorization)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - as above
                body = response.read(MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as error:
            raise EndpointError(f"GET {url}: HTTP {error.code}") from error
        except (OSError, http.client.HTTPException) as error:  # refused, reset, timeout, DNS, bad status line
            raise EndpointError(f"GET {url}: {error}") from error
        if len(body) > MAX_RESPONSE_BYTES:
            raise EndpointError(f"GET {url}: answer larger than {MAX_RESPONSE_BYTES} bytes")
        try:
            return json.loads(body)
        except ValueError as error:
            raise UnexpectedAnswerError(f"GET {url}: not JSON ({error})") from error
