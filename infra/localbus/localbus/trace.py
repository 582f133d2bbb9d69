"""`make trace ID=<trace id>`: one trace of the local stack as a waterfall, read from the OTLP receiver's output.

Each span on its own line, under its parent: when it started (ms after the trace's first span), how long it took,
a bar placing it on the trace's timeline, its name and its service. Without Docker there is no Jaeger here; this is
how to look at a trace (a trace id is in every record's `traceparent` header, every log line's `trace_id`, and
every webhook delivery's `traceparent`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from hoststack.state import DEFAULT_STATE_DIR
from hoststack.traces import ReceivedSpan, span_tree

from localbus.client import BusError, LocalBus

BAR_WIDTH = 30
ERROR = 2  # OTLP's STATUS_CODE_ERROR


def waterfall(spans: Sequence[ReceivedSpan], width: int = BAR_WIDTH) -> list[str]:
    """The trace's lines: start offset and duration in ms, a bar on the trace's timeline, name and service."""
    if not spans:
        return []
    start = min(span.start_ns for span in spans)
    total = max(max(span.end_ns for span in spans) - start, 1)
    lines = []
    for depth, span in span_tree(spans):
        offset, duration = span.start_ns - start, max(span.end_ns - span.start_ns, 0)
        first = min(int(offset * width / total), width - 1)
        length = max(1, round(duration * width / total))
        bar = (" " * first + "#" * length)[:width].ljust(width)
        failed = "  ERROR " + span.status_message if span.status_code == ERROR else ""
        service = span.resource.get("service.name", "?")
        lines.append(
            f"{offset / 1e6:9.1f} ms {duration / 1e6:9.1f} ms  |{bar}|  {'  ' * depth}{span.name}  [{service}]{failed}"
        )
    return lines


def main(argv: Sequence[str] | None = None, stdout: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(prog="make trace ID=<trace id>", description=__doc__.splitlines()[0])
    parser.add_argument("trace_id", help="32 hex digits")
    parser.add_argument("--wait", type=float, default=5.0, help="seconds to wait for spans still on their way")
    arguments = parser.parse_args(argv)
    trace_id = arguments.trace_id.strip().lower()
    if len(trace_id) != 32 or any(c not in "0123456789abcdef" for c in trace_id):
        print(f"error: {arguments.trace_id!r} is not a trace id (32 hex digits)", file=sys.stderr)
        return 2
    try:
        bus = LocalBus.of(Path(os.environ.get("LOCALBUS_STATE_DIR") or DEFAULT_STATE_DIR))
    except BusError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        deadline = time.monotonic() + arguments.wait
        spans = [span for span in bus.traces.read(1.0) if span.trace_id == trace_id]
        while not spans and time.monotonic() < deadline:
            spans = [span for span in bus.traces.read(0.5) if span.trace_id == trace_id]
    finally:
        bus.close()
    if not spans:
        print(f"no spans of trace {trace_id} reached the OTLP receiver", file=sys.stderr)
        return 1
    print(f"trace {trace_id}: {len(spans)} spans", file=stdout)
    for line in waterfall(spans):
        print(line, file=stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
