"""Benchmark: the local stack under load, measured from outside as a user would, and where the time goes.

    make up deploy && make bench-stack       # against the running stack; ARGS="--seconds 20 --rates 25,50,100"

8 clients POST order events through API Gateway (LocalStack's emulation) for `--seconds` at each offered rate
(each client paces itself to rate / 8), then a closed loop (each client sends its next event when the last was
answered) gives the most the stack takes. For each phase:

- achieved requests/s and the answer's median and p99 (202s only; anything else is counted);
- accept-to-delivery: from the 202 to the webhook receiver's arrival of the event (`orders-webhook`, the path
  `/hooks/bus`);
- where an answer's time goes: IngestFunction's own duration (its REPORT lines) and the rest (API Gateway
  emulation and the host executor, i.e. LocalStack's request handling and the runtime API);
- LocalStack's CPU per event (its process's user + system time over the phase; LocalStack is one Python
  process, so it tops out at one core) and its HTTP requests per event (from its request log: the gateway's
  /events, the runtime API's responses and logs, DynamoDB and SQS calls).

Goal (issue 11): 100 requests/s at 8 clients with p99 under 250 ms, accept-to-delivery under 2 s.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from hoststack import state as stack_state
from localbus.client import LocalBus
from localbus.ledger import Ledger

ROOT = Path(__file__).resolve().parents[2]

CLIENTS = 8
TICKS_PER_S = os.sysconf("SC_CLK_TCK")
REQUEST = re.compile(r"request\.http\s+: (\w+) (\S+) =>|AWS (\w+\.\w+) =>")
DURATION = re.compile(r"REPORT RequestId: \S+\s+Duration: ([\d.]+) ms")


@dataclass
class Phase:
    name: str
    sent: int = 0
    seconds: float = 0.0
    answers_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    delivery_s: list[float] = field(default_factory=list)
    undelivered: int = 0
    function_ms: list[float] = field(default_factory=list)
    localstack_cpu_s: float = 0.0
    requests: Counter[str] = field(default_factory=Counter)

    def row(self) -> str:
        rate = self.sent / self.seconds if self.seconds else 0.0
        per_event = self.localstack_cpu_s * 1000 / self.sent if self.sent else 0.0
        calls = sum(self.requests.values()) / self.sent if self.sent else 0.0
        gateway = _median(self.answers_ms) - _median(self.function_ms)
        others = sum(n for status, n in self.statuses.items() if status != 202)
        return (
            f"| {self.name} | {rate:.0f} | {_median(self.answers_ms):.0f} / {_p99(self.answers_ms):.0f} ms "
            f"| {_median(self.delivery_s):.2f} / {_p99(self.delivery_s):.2f} s"
            f"{f' ({self.undelivered} not delivered)' if self.undelivered else ''} "
            f"| {_median(self.function_ms):.0f} ms | {gateway:.0f} ms | {per_event:.1f} ms | {calls:.1f} "
            f"| {others} |"
        )


HEADER = (
    "| phase | achieved req/s | answer median / p99 | accept-to-delivery median / p99 | IngestFunction duration "
    "(median) | gateway + executor (median) | LocalStack CPU per event | LocalStack requests per event | non-202 |"
)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S  # utime, stime


class Offsets:
    """Where each log file ended: what is appended after is the phase's."""

    def __init__(self, paths: list[Path]) -> None:
        self.start = {path: path.stat().st_size for path in paths if path.exists()}

    def new_text(self, paths: list[Path]) -> str:
        chunks = []
        for path in paths:
            with path.open("rb") as text:
                text.seek(self.start.get(path, 0))
                chunks.append(text.read().decode(errors="replace"))
        return "".join(chunks)


def run_phase(bus: LocalBus, name: str, *, seconds: float, rate: float | None) -> Phase:
    """`rate` None: a closed loop (each client sends again once answered)."""
    logs = bus.state_dir_path / "logs"
    ingest_logs = lambda: sorted((logs / "lambda").glob("*IngestFunction*.log"))  # noqa: E731
    localstack_log = logs / "localstack.log"
    offsets = Offsets([*ingest_logs(), localstack_log])
    pid = stack_state.current(bus.state_dir_path).pieces["localstack"].pid  # type: ignore[union-attr]
    cpu_before = _cpu_s(pid)
    ledger = Ledger(bus, f"bench-{name.replace(' ', '-')}")
    accepted_at: dict[str, float] = {}
    lock = threading.Lock()
    phase = Phase(name)
    started = time.monotonic()
    interval = CLIENTS / rate if rate else 0.0

    def client(number: int) -> None:
        next_at = started + number * interval / CLIENTS
        while time.monotonic() - started < seconds:
            (event_id,) = ledger.new_ids(1)
            if interval:
                time.sleep(max(0.0, next_at - time.monotonic()))
                next_at += interval
            sent = ledger.send_one(event_id, retries=0)
            with lock:
                phase.statuses[sent.statuses[-1]] += 1
                if sent.accepted:
                    accepted_at[event_id] = time.time()
                    phase.answers_ms.append(sent.seconds[-1] * 1000)

    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(client, range(CLIENTS)))
    phase.seconds = time.monotonic() - started
    phase.sent = sum(phase.statuses.values())
    deadline = time.monotonic() + 120
    arrived: dict[str, float] = {}
    while time.monotonic() < deadline and len(arrived) < len(accepted_at):
        arrived = {
            d["event"]["id"]: d["received_at"]
            for d in bus.webhook_deliveries()
            if d["event"].get("id") in accepted_at and d.get("path", "/hooks/bus") == "/hooks/bus"
        }
        time.sleep(0.5)
    phase.delivery_s = [arrived[event_id] - accepted_at[event_id] for event_id in arrived]
    phase.undelivered = len(accepted_at) - len(arrived)
    phase.localstack_cpu_s = _cpu_s(pid) - cpu_before
    text = offsets.new_text([localstack_log])
    for match in REQUEST.finditer(text):
        method, path, operation = match.groups()
        phase.requests[operation or _request_kind(method, path)] += 1
    phase.function_ms = [float(ms) for ms in DURATION.findall(offsets.new_text(ingest_logs()))]
    return phase


def _request_kind(method: str, path: str) -> str:
    if "/execute-api/" in path:
        return "api gateway"
    if "/_localstack_lambda/" in path:
        return "runtime api " + path.rsplit("/", 1)[-1]
    return f"{method} {path.split('?', maxsplit=1)[0][:40]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per phase")
    parser.add_argument("--rates", default="25,50,100", help="offered rates (requests/s), then a closed loop")
    parser.add_argument(
        "--state-dir", type=Path, default=Path(os.environ.get("LOCALBUS_STATE_DIR") or stack_state.DEFAULT_STATE_DIR)
    )
    args = parser.parse_args()
    bus = LocalBus.of(args.state_dir)
    try:
        Ledger(bus, "bench-warm-up").send(16)  # every client's environment warm
        time.sleep(5)
        phases = []
        for rate in [float(r) for r in args.rates.split(",") if r]:
            phases.append(run_phase(bus, f"{rate:.0f} req/s offered", seconds=args.seconds, rate=rate))
            print(phases[-1].row(), file=sys.stderr, flush=True)
            time.sleep(5)  # the backlog of one phase must not slow the next
        phases.append(run_phase(bus, "closed loop", seconds=args.seconds, rate=None))
    finally:
        bus.close()
    print(f"\nPOST /events through API Gateway, {CLIENTS} clients, {args.seconds:.0f} s per phase\n")
    print(HEADER)
    print("|" + "---|" * (HEADER.count("|") - 1))
    for phase in phases:
        print(phase.row())
    busiest = phases[-1]
    print("\nLocalStack requests per event in the closed loop:")
    for kind, count in busiest.requests.most_common(8):
        print(f"  {count / max(1, busiest.sent):5.2f}  {kind}")


if __name__ == "__main__":
    main()
