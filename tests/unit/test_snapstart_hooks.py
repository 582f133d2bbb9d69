"""The layer's SnapStart hooks on their own: what goes into the snapshot, and what a restored environment changes."""

from __future__ import annotations

import random

from lambda_event_bus.telemetry import Telemetry, TelemetrySettings, snapstart


def test_nothing_is_registered_outside_snapstart():
    assert snapstart.register(lambda: None, lambda: None) is False


def test_before_the_snapshot_nothing_init_failed_to_send_is_kept_or_counted():
    """Spans a failed export kept would be sent again by every restored environment, and counters in the snapshot
    would be pushed by each: neither goes into it."""
    closed = "http://127.0.0.1:9"  # nothing listens
    settings = TelemetrySettings.from_env(
        {"OTEL_SERVICE_NAME": "snap", "OTEL_EXPORTER_OTLP_ENDPOINT": closed, "PUSHGATEWAY_URL": closed}
    )
    telemetry = Telemetry(settings)
    with telemetry.span("init work"):
        pass

    telemetry.before_snapshot()

    assert telemetry.tracing.kept_spans == 0
    assert telemetry.metrics.value("telemetry_export_failures_total", backend="otlp", reason="error") is None


def test_a_restored_environment_has_its_own_id_group_and_random_state():
    settings = TelemetrySettings.from_env({"OTEL_SERVICE_NAME": "snap", "PUSHGATEWAY_URL": "http://127.0.0.1:9"})
    telemetry = Telemetry(settings)
    assert telemetry.pushgateway is not None
    snapshot_id, state = telemetry.instance_id, random.getstate()
    telemetry.take_cold_start()

    telemetry.after_restore()
    restored_draw = random.getrandbits(64)
    random.setstate(state)

    assert telemetry.instance_id != snapshot_id
    assert telemetry.pushgateway.grouping_key["instance"] == telemetry.instance_id
    assert restored_draw != random.getrandbits(64), "the random state was seeded again"
    assert telemetry.take_cold_start() is True
