"""The function's output for each invocation, read from the runtime's and the extensions' pipes."""

from __future__ import annotations

import contextlib
import os
import select
import sys
import threading

from eventbus_localstack.sandbox.settings import DRAIN_READS, MAX_LOG_BYTES, READ_CHUNK


class LogCollector:
    """The function's output for the current invocation, read from the runtime's and extensions' pipes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._chunks: list[str] = []
        self._size = 0
        self._fds: set[int] = set()

    def follow(self, fd: int) -> None:
        os.set_blocking(fd, False)
        with self._lock:
            self._fds.add(fd)
        threading.Thread(target=self._pump, args=(fd,), daemon=True, name=f"logs-{fd}").start()

    def _pump(self, fd: int) -> None:
        while True:
            with contextlib.suppress(OSError, ValueError):
                select.select([fd], [], [], 0.5)
            with self._lock:
                if fd not in self._fds:
                    return
                if not self._read(fd, reads=1):  # one read per hold: a chatty process cannot starve the others
                    self._fds.discard(fd)
                    with contextlib.suppress(OSError):
                        os.close(fd)
                    return

    def _drain(self) -> None:
        """Read what every pipe holds now: a process writes its output before its next API call. Holds the lock."""
        for fd in list(self._fds):
            self._read(fd, reads=DRAIN_READS)

    def _read(self, fd: int, reads: int) -> bool:
        """Read what the pipe holds (at most `reads` chunks); False once the writer is gone. Holds the lock."""
        for _ in range(reads):
            try:
                data = os.read(fd, READ_CHUNK)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not data:
                return False
            text = data.decode("utf-8", errors="replace")
            sys.stdout.write(text)
            sys.stdout.flush()
            self._keep(text)
        return True

    def _keep(self, text: str) -> None:
        """Keep an invocation's output up to MAX_LOG_BYTES (the sandbox's own log file gets all of it)."""
        if self._size < MAX_LOG_BYTES:
            self._chunks.append(text)
            self._size += len(text)
            if self._size >= MAX_LOG_BYTES:
                self._chunks.append(f"\n[output truncated at {MAX_LOG_BYTES} bytes for this invocation]\n")

    def add(self, line: str) -> None:
        """Append a line of the sandbox's own (START, END, REPORT) after everything the processes wrote before it."""
        with self._lock:
            self._drain()
            self._chunks.append(line + "\n")
            self._size += len(line) + 1
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def take(self) -> str:
        """Everything written so far, including what is still in the pipes."""
        with self._lock:
            self._drain()
            text = "".join(self._chunks)
            self._chunks.clear()
            self._size = 0
            return text
