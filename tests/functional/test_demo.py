"""The README's main command runs end to end: events in, traces across both handlers and metrics out."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.servers

ROOT = Path(__file__).resolve().parents[2]


def test_demo_shows_connected_traces_metrics_and_the_error_id(tmp_path: Path):
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'infra'}{os.pathsep}{ROOT / 'functions' / 'observability_layer'}",
        "LOCALBUS_STATE_DIR": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "-m", "localbus.demo"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = result.stdout
    assert out.count("  202  com.example.") == 3
    # each event's trace crosses both functions: request -> produce -> processing in the consumer
    chains = re.findall(
        r"POST /events  \[ingest\]\n\s+produce (\S+)  \[ingest\]\n\s+process \S+  \[consumer\]\n\s+deliver (\S+)", out
    )
    assert sorted(chains) == [("customers", "crm-hook"), ("orders", "orders-audit"), ("payments", "billing-hook")]
    assert "process customers,orders,payments  [consumer]  (links: 3)" in out
    assert "partial batch response: {'batchItemFailures': []}" in out
    assert out.count("webhook (signature verified) got") == 2
    assert "Kafka topic orders-audit got 1 record(s)" in out
    # CdcFunction: one row's two changes, keyed by the row, each in a new trace linked to the batch
    assert "cdc-events: key=b'{\"id\":7}'  type=cdc.customers.created" in out
    assert "cdc-events: key=b'{\"id\":7}'  type=cdc.customers.updated" in out
    assert "cdc updated customers  [cdc]  (links: 1)" in out
    assert "{connector=shop-db, operation=updated, table=customers} = 1" in out
    assert "{endpoint=/events, status=202} = 3" in out
    assert "{connector=orders-db, operation=update, table=orders} = 1" in out
    assert "{component=http, error_type=ValueError, job=ingest} = 1" in out
    assert "{'status': 'ok', 'kafka': {'brokers': 1" in out
    (event_id,) = re.findall(r"problem\+json event_id=([0-9a-f]{32})", out)
    assert f'"event_id":"{event_id}"' in out, "the JSON log line carries the same event id"
    assert "Servers stopped." in out
