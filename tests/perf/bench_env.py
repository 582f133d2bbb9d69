"""What every benchmark run and child shares: the run's settings, the paths, and a child's environment (a
simulated Lambda's, with no library setting of the developer's leaking in)."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
LAYER_PATH = ROOT / "functions" / "observability_layer"
if str(LAYER_PATH) not in sys.path:  # the local tooling (samhost, hoststack) is installed in the venv
    sys.path.insert(0, str(LAYER_PATH))

EVENT_PATH = ROOT / "tests" / "events" / "apigw_rest_post_events.json"
CLOSED_SENTRY_DSN = "http://k@127.0.0.1:9/1"
"""Port 9 (discard) has no listener here: sentry-sdk's transport fails fast and nothing leaves the host."""

FUNCTION_NAME = "bench-fn"
OTEL_HANDLER_MODULE = "bench_otel_fn"
WORKER_TIMEOUT_S = 120

Handler = Callable[[Any, Any], Any]
Env = Mapping[str, str]

# every variable any of the libraries reads: a developer's own settings must not leak into a case
ENV_PREFIXES_DROPPED = ("OTEL_", "SENTRY_", "POWERTOOLS_", "AWS_LAMBDA_", "TELEMETRY_", "_X_AMZN")
ENV_NAMES_DROPPED = ("PUSHGATEWAY_URL", "_HANDLER", "ORIG_HANDLER", "AWS_EXECUTION_ENV", "PYTHONDONTWRITEBYTECODE")

LAMBDA_ENV: dict[str, str] = {
    "AWS_LAMBDA_FUNCTION_NAME": FUNCTION_NAME,
    "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
    "AWS_REGION": "eu-west-1",
    "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
    "OTEL_SERVICE_NAME": "bench",
    "POWERTOOLS_SERVICE_NAME": "bench",
    "POWERTOOLS_METRICS_NAMESPACE": "bench",
}


@dataclass(frozen=True)
class Settings:
    cold_runs: int
    invocations: int
    warmup: int
    flush_invocations: int
    otel_down_invocations: int

    @classmethod
    def choose(cls, *, quick: bool) -> Settings:
        if quick:
            return cls(cold_runs=3, invocations=300, warmup=30, flush_invocations=40, otel_down_invocations=1)
        return cls(cold_runs=7, invocations=2000, warmup=200, flush_invocations=200, otel_down_invocations=2)


def clean_env(extra: Env | None = None) -> dict[str, str]:
    """This process's environment without any library's settings, plus the simulated Lambda's and `extra`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(ENV_PREFIXES_DROPPED) and key not in ENV_NAMES_DROPPED
    }
    env.update(LAMBDA_ENV)
    env.update(extra or {})
    return env


def missing_modules(modules: Sequence[str]) -> list[str]:
    """The modules of `modules` that cannot be imported here (looked up without importing them)."""
    missing = []
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent package is missing
            found = False
        if not found:
            missing.append(module)
    return missing
