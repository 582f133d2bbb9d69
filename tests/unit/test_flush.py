"""The bounded flush: order, fair shares of the budget, abandoning hung steps, back-off."""

from __future__ import annotations

import threading
import time

import pytest
from lambda_event_bus.telemetry.flush import Flusher


def test_steps_run_in_order_and_report_their_outcomes():
    calls: list[str] = []
    flusher = Flusher(budget_s=1.0, backoff_s=30)
    flusher.add("otlp", lambda timeout: calls.append("otlp") or True)
    flusher.add("pushgateway", lambda timeout: calls.append("pushgateway") or False)

    def raising(timeout: float) -> bool:
        raise ConnectionError("refused")

    flusher.add("sentry", raising)
    report = flusher.flush()
    assert calls == ["otlp", "pushgateway"]
    assert [(r.backend, r.outcome) for r in report.results] == [
        ("otlp", "ok"),
        ("pushgateway", "error"),
        ("sentry", "error"),
    ]
    assert not report.ok


def test_a_hung_step_is_abandoned_at_its_share_and_the_next_still_runs():
    release = threading.Event()
    shares: list[float] = []
    flusher = Flusher(budget_s=0.3, backoff_s=30)
    flusher.add("otlp", lambda timeout: shares.append(timeout) or release.wait(5))
    flusher.add("pushgateway", lambda timeout: shares.append(timeout) or True)
    started = time.monotonic()
    report = flusher.flush()
    elapsed = time.monotonic() - started
    release.set()
    assert report.outcome("otlp") == "timeout"
    assert report.outcome("pushgateway") == "ok"
    assert shares[0] == pytest.approx(0.15, abs=0.01)
    assert shares[1] > 0.1, "the second step gets what the first left"
    assert elapsed < 0.3 + 0.05


def test_a_failed_backend_is_skipped_during_back_off_then_retried():
    now = [100.0]
    attempts: list[float] = []
    flusher = Flusher(budget_s=0.5, backoff_s=30, clock=lambda: now[0])
    flusher.add("pushgateway", lambda timeout: attempts.append(now[0]) and False)
    assert flusher.flush().outcome("pushgateway") == "error"
    now[0] += 10
    assert flusher.flush().outcome("pushgateway") == "skipped"
    now[0] += 25
    assert flusher.flush().outcome("pushgateway") == "error"
    assert attempts == [100.0, 135.0]


def test_a_step_still_running_from_the_previous_flush_is_busy_not_doubled():
    release = threading.Event()
    started = threading.Event()

    def slow(timeout: float) -> bool:
        started.set()
        return release.wait(5)

    flusher = Flusher(budget_s=0.05, backoff_s=0)
    flusher.add("otlp", slow)
    assert flusher.flush().outcome("otlp") == "timeout"
    assert started.wait(1)
    assert flusher.flush().outcome("otlp") == "busy"
    release.set()
    time.sleep(0.05)
    assert flusher.flush().outcome("otlp") == "ok"


def test_no_time_left_runs_nothing():
    called: list[bool] = []
    flusher = Flusher(budget_s=0.5, backoff_s=30)
    flusher.add("otlp", lambda timeout: called.append(True) or True)
    assert flusher.flush(available_s=-0.2).outcome("otlp") == "no_time"
    assert called == []
