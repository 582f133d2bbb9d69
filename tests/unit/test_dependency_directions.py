"""The dependency directions the architecture promises (docs/architecture.md): functions use the layer only through
its public API (names in the `__all__` of the module they import from), no function imports another, the
layer's `base` imports nothing else of the layer, and `bus` may use `telemetry` but never the other way round.
The local tooling: the emulator (samhost) imports nothing of the stack, the bus or its functions; the stack
(hoststack) nothing of the bus."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ("ingest", "consumer", "cdc", "maintenance")
LAYER = ROOT / "functions" / "observability_layer" / "lambda_event_bus"
INFRA = ROOT / "infra"
THE_BUS = ("lambda_event_bus", "localbus", *FUNCTIONS)
TOOLING = {"samhost": ("hoststack", *THE_BUS), "hoststack": THE_BUS}


def imports(folder: Path) -> Iterator[tuple[Path, str, list[str]]]:
    """(file, module, names) of every `from module import names` and `import module` under `folder`."""
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                yield path, node.module, [alias.name for alias in node.names]
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    yield path, alias.name, []


def function_files(name: str) -> Iterator[tuple[Path, str, list[str]]]:
    yield from imports(ROOT / "functions" / name)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_a_function_imports_only_the_layers_public_names(function: str):
    private = []
    for path, module, names in function_files(function):
        if not module.startswith("lambda_event_bus"):
            continue
        public = getattr(importlib.import_module(module), "__all__", None)
        if public is None or not names:
            private.append(f"{path.relative_to(ROOT)}: import {module} (no __all__ or a bare import)")
            continue
        private += [f"{path.relative_to(ROOT)}: {module}.{name}" for name in names if name not in public]
    assert private == []


@pytest.mark.parametrize("function", FUNCTIONS)
def test_no_function_imports_another(function: str):
    others = set(FUNCTIONS) - {function}
    crossing = [
        f"{path.relative_to(ROOT)}: {module}"
        for path, module, _ in function_files(function)
        if module.split(".")[0] in others
    ]
    assert crossing == []


@pytest.mark.parametrize(
    ("part", "forbidden"),
    [
        ("base", ("lambda_event_bus.telemetry", "lambda_event_bus.bus")),
        ("telemetry", ("lambda_event_bus.bus",)),
    ],
)
def test_the_layers_parts_depend_one_way(part: str, forbidden: tuple[str, ...]):
    wrong = [
        f"{path.relative_to(ROOT)}: {module}"
        for path, module, _ in imports(LAYER / part)
        if module.startswith(forbidden)
    ]
    assert wrong == []


def test_the_checks_see_the_imports_they_judge():
    """The walk finds the functions' imports of the layer (a check over nothing would pass)."""
    seen = {module for function in FUNCTIONS for _, module, _ in function_files(function)}
    assert {"lambda_event_bus.telemetry", "lambda_event_bus.bus.contract", "lambda_event_bus.base"} <= seen


@pytest.mark.parametrize(("package", "forbidden"), TOOLING.items())
def test_the_local_tooling_depends_one_way(package: str, forbidden: tuple[str, ...]):
    wrong = [
        f"{path.relative_to(ROOT)}: {module}"
        for path, module, _ in imports(INFRA / package / package)
        if module.split(".")[0] in forbidden
    ]
    assert wrong == []


@pytest.mark.parametrize(("package", "forbidden"), TOOLING.items())
def test_importing_all_of_a_tooling_package_loads_nothing_it_must_not(package: str, forbidden: tuple[str, ...]):
    """Every module imported in a fresh interpreter: an import made at run time (importlib) shows up here too."""
    modules = sorted(
        ".".join(path.relative_to(INFRA / package).with_suffix("").parts).removesuffix(".__init__")
        for path in (INFRA / package / package).rglob("*.py")
        if path.name != "__main__.py"
    )
    script = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))"
    )
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60)
    assert package in loaded.stdout
    assert sorted(set(forbidden) & set(ast.literal_eval(loaded.stdout))) == []
