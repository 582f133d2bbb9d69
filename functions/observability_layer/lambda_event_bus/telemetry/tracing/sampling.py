"""The sampler named by OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG (already validated)."""

from __future__ import annotations

from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)


def build_sampler(name: str, ratio: float) -> Sampler:
    roots: dict[str, Sampler] = {
        "always_on": ALWAYS_ON,
        "always_off": ALWAYS_OFF,
        "traceidratio": TraceIdRatioBased(ratio),
    }
    if name in roots:
        return roots[name]
    root = roots[name.removeprefix("parentbased_")]
    return ParentBased(root)
