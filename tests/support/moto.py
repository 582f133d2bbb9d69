"""moto's side of the fast tests: dummy credentials, a region, and no endpoint pointing boto3 elsewhere."""

from __future__ import annotations

import pytest

REGION = "us-east-1"


def use_moto_credentials(monkeypatch: pytest.MonkeyPatch, region: str = REGION, **extra: str) -> None:
    """The environment boto3 needs inside `mock_aws()`; `extra` adds variables (say, an endpoint mode)."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": region,
        **extra,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
