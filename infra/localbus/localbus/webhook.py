"""A local HTTP webhook receiver that checks the bus's HMAC-SHA256 signature on every delivery."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class WebhookReceiver:
    secret: str
    status: int = 200
    delay_s: float = 0.0
    received: list[dict[str, Any]] = field(default_factory=list)
    rejected: int = 0
    server: ThreadingHTTPServer | None = None
    record_to: Path | None = None  # each verified delivery also appended here as a JSON line
    failures: list[int] = field(default_factory=list)  # statuses for the next deliveries (a subscriber in trouble)
    down_until: float = 0.0  # until then (time.time()) every delivery gets 503: a subscriber that is down
    refuse: Callable[[dict[str, Any]], int | None] | None = None  # a status for chosen events (tests)
    in_flight: int = 0  # deliveries being answered now
    peak_in_flight: int = 0  # the most at once so far
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def fail_next(self, count: int, status: int = 503) -> None:
        with self._lock:
            self.failures[:] = [status] * count

    def answer(self, event: dict[str, Any] | None = None) -> int:
        with self._lock:
            if self.failures:
                return self.failures.pop(0)
        if time.time() < self.down_until:
            return 503
        chosen = self.refuse(event or {}) if self.refuse is not None else None
        return chosen if chosen is not None else self.status

    @property
    def delivered(self) -> list[dict[str, Any]]:
        """The events it took (answered 2xx), in the order they came."""
        with self._lock:
            return [d["event"] for d in self.received if 200 <= d["status"] < 300]

    def go_down(self, seconds: float) -> None:
        """Answer 503 to every delivery for `seconds` from now."""
        self.down_until = time.time() + seconds

    def verify(self, signature: str | None, body: bytes) -> bool:
        """The MAC first (constant time), then the timestamp's age (replays older than 5 minutes fail)."""
        if not signature:
            return False
        parts = dict(part.split("=", 1) for part in signature.split(",") if "=" in part)
        expected = hmac.new(self.secret.encode(), f"{parts.get('t')}.".encode() + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, parts.get("v1", "")):
            return False
        try:
            return abs(time.time() - int(parts.get("t", ""))) < 300
        except ValueError:
            return False

    @property
    def url(self) -> str:
        if self.server is None:
            raise RuntimeError("the receiver is not started")
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/bus"

    def start(self) -> str:
        if self.server is not None:
            return self.url
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as subscribers' servers do

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path.startswith("/hooks/bus/fail?"):  # POST .../fail?count=N&status=503
                    query = dict(urllib.parse.parse_qsl(self.path.split("?", 1)[1]))
                    receiver.fail_next(int(query.get("count", "1")), int(query.get("status", "503")))
                    status = 204
                elif self.path.startswith("/hooks/bus/down?"):  # POST .../down?seconds=120
                    query = dict(urllib.parse.parse_qsl(self.path.split("?", 1)[1]))
                    receiver.go_down(float(query.get("seconds", "60")))
                    status = 204
                elif receiver.verify(self.headers.get("X-Eventbus-Signature"), body):
                    with receiver._lock:
                        receiver.in_flight += 1
                        receiver.peak_in_flight = max(receiver.peak_in_flight, receiver.in_flight)
                    time.sleep(receiver.delay_s)
                    event = json.loads(body)
                    status = receiver.answer(event)
                    with receiver._lock:
                        receiver.in_flight -= 1
                    delivery = {
                        "event": event,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "status": status,
                        "received_at": time.time(),
                        "peer": self.client_address[1],
                        "path": self.path,  # subscriptions can share the receiver under paths of their own
                    }
                    with receiver._lock:  # one whole line at a time: readers never see two interleaved
                        receiver.received.append(delivery)
                        if receiver.record_to is not None:
                            with receiver.record_to.open("a") as out:
                                out.write(json.dumps(delivery) + "\n")
                else:
                    receiver.rejected += 1
                    status = 401
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self.url

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def stack_receiver(state_dir: Path) -> WebhookReceiver:
    """The local stack's webhook receiver, an extra of hoststack's supervisor (`localbus.stack up` names it): a
    fresh signing secret per stack, each verified delivery appended to `<state dir>/webhook.jsonl`."""
    receiver = WebhookReceiver(secrets.token_hex(16), record_to=state_dir / "webhook.jsonl")
    receiver.start()
    return receiver
