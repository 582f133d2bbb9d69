"""Fixtures of the functional tests that drive the host executor's sandbox."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
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
