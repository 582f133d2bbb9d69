"""The shipped Prometheus config and alert rules pass promtool, and the rules use catalog metrics only."""

from __future__ import annotations

import re
import string
import subprocess
from pathlib import Path

from localbus.processes import binary
from localbus.servers import PROMETHEUS_ASSETS
from observability.metrics import CATALOG


def test_config_and_rules_pass_promtool(tmp_path: Path):
    config = string.Template((PROMETHEUS_ASSETS / "prometheus.yml").read_text()).substitute(
        PUSHGATEWAY="127.0.0.1:9091"
    )
    (tmp_path / "prometheus.yml").write_text(config)
    (tmp_path / "alerts.yml").write_text((PROMETHEUS_ASSETS / "alerts.yml").read_text())
    result = subprocess.run(
        [binary("promtool"), "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout + result.stderr


def test_alert_rules_only_reference_catalog_metrics():
    rules = (PROMETHEUS_ASSETS / "alerts.yml").read_text()
    referenced = set(re.findall(r"\b([a-z_]+(?:_total|_seconds|_status))(?:_bucket)?\b", rules))
    catalog = {spec.name for spec in CATALOG}
    assert referenced
    assert referenced <= catalog, referenced - catalog
