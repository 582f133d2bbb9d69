"""A delaying HTTP proxy for fault tests: every request goes to the real upstream at once, and the answers of the
requests a rule picks are held back before they reach the client, the way a slow network or an overloaded
service answers late after the work was done (botocore then times out and retries a write that succeeded)."""

from __future__ import annotations

import http.client
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"})


@dataclass(frozen=True)
class Seen:
    """One request the proxy forwarded: its method, path, headers (lower-cased names) and body."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def amz_target(self) -> str:
        """`X-Amz-Target` (`DynamoDB_20120810.PutItem`, ...): which operation a JSON-protocol AWS call is."""
        return self.headers.get("x-amz-target", "")


Rule = Callable[[Seen], float]  # seconds to hold the answer back (0: pass it on at once)


@dataclass
class DelayingProxy:
    upstream: str  # http://host:port
    rule: Rule = field(default=lambda seen: 0.0)
    seen: list[Seen] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the proxy is not started: call start() first")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> DelayingProxy:
        proxy = self
        target = urllib.parse.urlsplit(self.upstream)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with proxy._lock:
                    proxy.seen.append(seen)
                    delay = proxy.rule(seen)
                upstream = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    payload = answer.read()
                finally:
                    upstream.close()
                if delay > 0:
                    time.sleep(delay)
                try:
                    self.send_response(answer.status)
                    for name, value in answer.getheaders():
                        if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                            self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting: as intended
                    self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:
                return

        for method in ("GET", "POST", "PUT", "DELETE", "HEAD"):
            setattr(Handler, f"do_{method}", Handler._forward)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="delaying-proxy", daemon=True).start()
        return self

    def requests_for(self, amz_target: str) -> list[Seen]:
        with self._lock:
            return [seen for seen in self.seen if seen.amz_target == amz_target]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def first_n(amz_target: str, count: int, seconds: float) -> Rule:
    """Hold back the answers of the first `count` calls of one operation by `seconds`."""
    taken = 0

    def rule(seen: Seen) -> float:
        nonlocal taken
        if seen.amz_target != amz_target or taken >= count:
            return 0.0
        taken += 1
        return seconds

    return rule
