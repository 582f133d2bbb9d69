"""Error capture pieces: secret scrubbing, the error log record, and Sentry (imported only with a DSN).

`Telemetry.capture_error` composes them with the active span and the error counters.
"""

from lambda_event_bus.telemetry.errors.record import ErrorRecord, new_event_id
from lambda_event_bus.telemetry.errors.scrub import FILTERED, is_secret_key, scrub, scrub_text

__all__ = ["FILTERED", "ErrorRecord", "is_secret_key", "new_event_id", "scrub", "scrub_text"]
