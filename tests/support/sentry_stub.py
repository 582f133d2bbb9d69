"""Local HTTP endpoints standing in for Sentry's ingest: one that records envelopes, one that never answers."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Envelope:
    headers: dict[str, Any]
    items: list[tuple[dict[str, Any], bytes]]

    @property
    def event_id(self) -> str | None:
        return self.headers.get("event_id")

    def event(self) -> dict[str, Any] | None:
        for header, payload in self.items:
            if header.get("type") == "event":
                return dict(json.loads(payload))
        return None


def parse_envelope(body: bytes) -> Envelope:
    lines = body.split(b"\n")
    headers = json.loads(lines[0])
    items: list[tuple[dict[str, Any], bytes]] = []
    index = 1
    while index < len(lines) and lines[index].strip():
        item_header = json.loads(lines[index])
        items.append((item_header, lines[index + 1]))
        index += 2
    return Envelope(headers, items)


@dataclass
class SentryIngest:
    """Records every envelope POSTed to /api/<project>/envelope/."""

    envelopes: list[Envelope] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def start(self) -> str:
        store = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                if self.path.endswith("/envelope/"):
                    store.envelopes.append(parse_envelope(body))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://publickey@127.0.0.1:{self.server.server_address[1]}/42"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


class SilentServer:
    """Accepts TCP connections and never answers: a backend that hangs."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(64)
        self.port = int(self._socket.getsockname()[1])
        self._held: list[socket.socket] = []
        self._running = True
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while self._running:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            self._held.append(connection)

    def close(self) -> None:
        self._running = False
        self._socket.close()
        for connection in self._held:
            connection.close()
