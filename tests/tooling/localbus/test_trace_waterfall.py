"""`make trace`'s waterfall: spans under their parents, in the order they started, placed on the trace's timeline."""

from __future__ import annotations

from hoststack.traces import ReceivedSpan
from localbus.trace import waterfall

MS = 1_000_000


def span(name: str, span_id: str, parent: str, start_ms: float, end_ms: float, service: str, status: int = 0):
    return ReceivedSpan(
        name=name,
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        span_id=span_id,
        parent_span_id=parent,
        kind=1,
        attributes={},
        resource={"service.name": service},
        links=(),
        events=(),
        status_code=status,
        status_message="refused" if status else "",
        start_ns=int(1_800_000_000_000 * MS + start_ms * MS),
        end_ns=int(1_800_000_000_000 * MS + end_ms * MS),
    )


def test_children_follow_their_parent_in_start_order_with_offsets_durations_and_bars():
    spans = [  # as they arrive: out of order, from two services
        span("deliver hook", "d", "c", 40, 100, "event-bus-consumer", status=2),
        span("produce orders", "b", "a", 5, 15, "event-bus-ingest"),
        span("POST /events", "a", "", 0, 20, "event-bus-ingest"),
        span("process order.created", "c", "b", 30, 100, "event-bus-consumer"),
        span("deliver queue", "e", "c", 35, 60, "event-bus-consumer"),
    ]
    lines = waterfall(spans, width=10)
    assert [line.split("|")[2].strip() for line in lines] == [
        "POST /events  [event-bus-ingest]",
        "produce orders  [event-bus-ingest]",
        "process order.created  [event-bus-consumer]",
        "deliver queue  [event-bus-consumer]",
        "deliver hook  [event-bus-consumer]  ERROR refused",
    ]
    assert [line.split("|")[0].split() for line in lines] == [
        ["0.0", "ms", "20.0", "ms"],
        ["5.0", "ms", "10.0", "ms"],
        ["30.0", "ms", "70.0", "ms"],
        ["35.0", "ms", "25.0", "ms"],
        ["40.0", "ms", "60.0", "ms"],
    ]
    assert [line.split("|")[1] for line in lines] == [
        "##        ",
        "#         ",
        "   #######",
        "   ##     ",
        "    ######",
    ]
    assert lines[3].split("|")[2] == "  " + "      deliver queue  [event-bus-consumer]", "indented under its parent"


def test_a_span_whose_parent_is_elsewhere_is_a_root():
    (line,) = waterfall([span("process", "c", "missing-parent", 0, 1, "event-bus-consumer")])
    assert line.split("|")[2].strip() == "process  [event-bus-consumer]"
    assert waterfall([]) == []
