"""The end-of-invocation flush: each backend's export in order, inside one bounded time budget.

Every step runs on a thread of its own and is abandoned at its deadline, so a backend that hangs
(a blackholed collector, a DNS stall) costs the invocation at most its share of the budget, however
its client library behaves. Steps share the budget fairly: a step may use what is left divided by the
steps still to run, so a slow first backend cannot starve the others. A backend that failed is skipped
for a back-off period: a down collector costs one bounded timeout, not one per invocation. Skipping
loses nothing for metrics (each push carries the whole registry) and delays spans (they stay queued,
within the queue's bound).

This is one callable step on purpose: a Lambda extension can run it after the response is sent.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Literal

logger = logging.getLogger(__name__)

Outcome = Literal["ok", "error", "timeout", "busy", "skipped", "no_time"]
FAILURES: frozenset[Outcome] = frozenset({"error", "timeout", "busy"})
MIN_STEP_S = 0.001


@dataclass(frozen=True)
class StepResult:
    backend: str
    outcome: Outcome
    seconds: float


@dataclass(frozen=True)
class FlushReport:
    results: tuple[StepResult, ...] = ()
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(result.outcome not in FAILURES for result in self.results)

    def outcome(self, backend: str) -> Outcome | None:
        return next((result.outcome for result in self.results if result.backend == backend), None)


class _BoundedRunner:
    """Runs a call on a daemon thread and stops waiting at a deadline; one call in flight at a time."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._straggler: threading.Thread | None = None

    def run(self, call: Callable[[], bool], timeout: float) -> Outcome:
        if self._straggler is not None:
            if self._straggler.is_alive():
                return "busy"
            self._straggler = None
        result: list[bool] = []

        def target() -> None:
            try:
                result.append(call() is True)
            except Exception:
                logger.debug("telemetry flush step %s raised", self._name, exc_info=True)
                result.append(False)

        thread = threading.Thread(target=target, name=f"telemetry-flush-{self._name}", daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            self._straggler = thread  # it finishes on its own, bounded by the client's own timeout
            return "timeout"
        return "ok" if result == [True] else "error"


@dataclass
class _Step:
    backend: str
    call: Callable[[float], bool]
    runner: _BoundedRunner
    backoff_until: float = 0.0


@dataclass
class Flusher:
    budget_s: float
    backoff_s: float
    clock: Callable[[], float] = time.monotonic
    _steps: list[_Step] = field(default_factory=list)

    def add(self, backend: str, call: Callable[[float], bool]) -> None:
        """Add a step; `call(timeout_s)` exports and returns True on success."""
        self._steps.append(_Step(backend, call, _BoundedRunner(backend)))

    def forget_failures(self) -> None:
        """No backend backs off any more (a restored environment starts with fresh connections)."""
        for step in self._steps:
            step.backoff_until = 0.0

    @property
    def backends(self) -> tuple[str, ...]:
        return tuple(step.backend for step in self._steps)

    def flush(
        self,
        available_s: float | None = None,
        *,
        exclude: Collection[str] = (),
        ignore_backoff: bool = False,
        budget_s: float | None = None,
    ) -> FlushReport:
        """Run every step (but the excluded backends) within min(budget, available_s) seconds, in order;
        backends that back off are skipped unless `ignore_backoff` (the last flush of an environment). `budget_s`
        replaces the invocation budget (a flush outside any invocation: before a SnapStart snapshot)."""
        started = self.clock()
        limit = self.budget_s if budget_s is None else budget_s
        budget = limit if available_s is None else max(0.0, min(limit, available_s))
        deadline = started + budget
        results: list[StepResult] = []
        steps = [step for step in self._steps if step.backend not in exclude]
        if ignore_backoff:
            for step in steps:
                step.backoff_until = 0.0
        for index, step in enumerate(steps):
            now = self.clock()
            if step.backoff_until > now:
                results.append(StepResult(step.backend, "skipped", 0.0))
                continue
            active_left = sum(1 for later in steps[index:] if later.backoff_until <= now)
            share = (deadline - now) / active_left
            if share < MIN_STEP_S:
                results.append(StepResult(step.backend, "no_time", 0.0))
                continue
            outcome = step.runner.run(functools.partial(step.call, share), share)
            elapsed = self.clock() - now
            if outcome in FAILURES:
                step.backoff_until = self.clock() + self.backoff_s
            results.append(StepResult(step.backend, outcome, elapsed))
        return FlushReport(tuple(results), self.clock() - started)


METRICS_BACKENDS = ("pushgateway", "otlp_metrics")
"""The backends metrics go to (one of them per environment); each export carries the whole registry."""

BATCHED_BACKENDS = ("otlp", *METRICS_BACKENDS)
"""What the flush after the response may hold back for a later one: spans wait in memory (bounded by the span
processor's queue) and a metrics export carries the whole registry, so a later one loses nothing. Errors
(Sentry) go out after every invocation."""


@dataclass
class ExportSchedule:
    """Whether the flush after this response exports spans and metrics, or leaves them for a later one.

    While invocations come closer together than `interval_s`, spans and metrics go out at most once per interval:
    fewer, larger requests (a resource is sent once per request, and compression finds the repeats across spans).
    An environment whose invocations are further apart exports after each, as does one whose interval is 0, and
    the first invocation always exports. Only the flush after the response is scheduled: that mode's extension
    makes Lambda send SIGTERM before it reaps the environment, and the shutdown flush sends what is held.

    The price: what the last invocations of a burst recorded waits for the next invocation (then it is overdue
    and goes) or for the shutdown, as Lambda freezes an idle environment and no timer can run in it."""

    interval_s: float
    clock: Callable[[], float] = time.monotonic
    _last_export: float | None = None
    _last_invocation: float | None = None

    def due(self) -> bool:
        """Called once per invocation, after it: True when this flush should export (then call `exported`)."""
        now = self.clock()
        previous, self._last_invocation = self._last_invocation, now
        if self.interval_s <= 0 or previous is None or self._last_export is None:
            return True
        return now - previous >= self.interval_s or now - self._last_export >= self.interval_s

    def exported(self) -> None:
        self._last_export = self.clock()
