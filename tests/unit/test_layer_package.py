"""The layer as a library: its folder builds a wheel (`pip install functions/observability_layer`) holding the one
`lambda_event_bus` namespace, typed, versioned, with the layer's pinned requirements, and an install of that wheel
is what a user's function imports."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import lambda_event_bus
import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYER = ROOT / "functions" / "observability_layer"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    source = out / "source"  # setuptools writes build/ and egg-info beside the sources: not in the clone
    shutil.copytree(LAYER, source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    (built,) = out.glob("*.whl")
    return built


def test_the_wheel_holds_one_typed_namespace_and_the_layers_requirements(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    packages = {name.split("/", 1)[0] for name in names if not name.split("/", 1)[0].endswith(".dist-info")}
    assert packages == {"lambda_event_bus"}
    for package in ("telemetry", "bus", "base"):
        assert f"lambda_event_bus/{package}/__init__.py" in names
    assert "lambda_event_bus/py.typed" in names
    metadata = next(name for name in names if name.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert f"Version: {lambda_event_bus.__version__}" in text
    pinned = {
        line.split("==")[0].lower()
        for line in (LAYER / "requirements.txt").read_text().splitlines()
        if line and not line.startswith("#")
    }
    required = {
        re.split(r"[=<>~! ;]", line.removeprefix("Requires-Dist: "))[0].lower()
        for line in text.splitlines()
        if line.startswith("Requires-Dist: ")
    }
    assert required == pinned


def test_a_function_imports_the_installed_package_not_the_repositorys(wheel: Path, tmp_path: Path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        timeout=120,
    )
    probe = (
        "import lambda_event_bus, lambda_event_bus.telemetry as t, lambda_event_bus.base as b;"
        "print(lambda_event_bus.__file__); print(sorted(t.__all__)); print(sorted(b.__all__))"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe],
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    location, telemetry_api, base_api = run.stdout.splitlines()
    assert location.startswith(str(target))
    assert "get_telemetry" in telemetry_api
    assert "EnvReader" in base_api
