"""Lambda SnapStart: the hooks that make one initialised environment safe to restore many times.

With SnapStart (Python 3.12 and later), Lambda runs init once per published version, snapshots the environment and
restores that snapshot for each new execution environment, possibly many at once. Whatever init left in memory is
then shared by every restored environment:

- the pseudo-random state OpenTelemetry draws trace and span ids from (restored environments would produce the
  same ids), and the environment id that names this environment's Pushgateway group;
- open connections (the Kafka producer's, the telemetry backends', botocore's), which are dead after a restore;
- what was queued but not sent.

So, before the snapshot, everything queued is sent and every connection closed; after a restore, the random state
is seeded again, the environment gets a new id and group, and clients connect afresh. The runtime runs the hooks
registered through its `snapshot_restore_py` module (before the snapshot in reverse order of registration, after a
restore in order): the layer registers its own at init, before the bus's clients register theirs. Outside
SnapStart (`AWS_LAMBDA_INITIALIZATION_TYPE` is not `snap-start`) nothing is registered and nothing is imported.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping

SNAP_START = "snap-start"
logger = logging.getLogger("lambda_event_bus.telemetry.snapstart")


def active(environ: Mapping[str, str] | None = None) -> bool:
    """True when this environment is being initialised for a snapshot."""
    return (environ if environ is not None else os.environ).get("AWS_LAMBDA_INITIALIZATION_TYPE") == SNAP_START


def register(before_snapshot: Callable[[], object], after_restore: Callable[[], object]) -> bool:
    """Register a pair of hooks with the runtime when a snapshot will be taken; False (nothing done) otherwise."""
    if not active():
        return False
    try:
        from snapshot_restore_py import (  # type: ignore[import-untyped]
            register_after_restore,
            register_before_snapshot,
        )
    except ImportError:  # a runtime without SnapStart's hooks (a custom image): restored environments share state
        logger.warning("SnapStart is on but snapshot_restore_py is missing: the layer cannot prepare its snapshot")
        return False
    register_before_snapshot(before_snapshot)
    register_after_restore(after_restore)
    return True
