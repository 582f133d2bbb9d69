"""The kept-alive connection both telemetry backends use, against real local HTTP servers."""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

import pytest
from lambda_event_bus.telemetry.transport import KeepAliveConnection
from samhost.processes import free_port


class _Ok(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    opened: ClassVar[list[socket.socket]] = []

    def setup(self) -> None:
        super().setup()
        _Ok.opened.append(self.connection)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def server(port: int) -> Iterator[None]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Ok)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:  # gone as a restarting backend is: no listener, every open connection closed
        httpd.shutdown()
        httpd.server_close()
        for open_connection in _Ok.opened:
            with contextlib.suppress(OSError):
                open_connection.shutdown(socket.SHUT_RDWR)
        _Ok.opened.clear()


def test_a_backend_that_went_away_and_came_back_is_reached_on_the_next_request():
    """The kept connection is dead and the retry on a new one is refused (the backend restarting): that request
    fails, and the next one, once the backend is back, must not meet the half-used connection of the retry."""
    port = free_port()
    connection = KeepAliveConnection("http", "127.0.0.1", port)
    with server(port):
        assert connection.request("POST", "/x", {}, b"1", 2.0) == (200, b"ok")
    with pytest.raises(ConnectionRefusedError):  # the kept connection was closed by the server, the retry refused
        connection.request("POST", "/x", {}, b"2", 2.0)
    with server(port):
        assert connection.request("POST", "/x", {}, b"3", 2.0) == (200, b"ok")
    assert connection.opened >= 2
