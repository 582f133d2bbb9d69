"""Fixtures of the functional tests: the host executor's sandbox, the consumer's AWS and webhook, IngestFunction."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.consumer import aws, webhook  # noqa: F401 - the consumer's fixtures, for every functional test
from support.ingest import ingest  # noqa: F401 - IngestFunction with demo routes, for every functional test
from support.sandbox import RecordingEndpoint, SandboxLauncher


@pytest.fixture
def endpoint() -> Iterator[RecordingEndpoint]:
    recording = RecordingEndpoint()
    yield recording
    recording.close()


@pytest.fixture
def sandboxes(endpoint: RecordingEndpoint, tmp_path: Path) -> Iterator[SandboxLauncher]:
    launcher = SandboxLauncher(endpoint, tmp_path)
    yield launcher
    launcher.stop_all()
