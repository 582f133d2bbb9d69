"""The local tooling's packages (infra/samhost, infra/hoststack, infra/localbus) stand on their own: each is
installed from its own folder (make installs them editable, nothing is put on PYTHONPATH), and its pyproject
declares every distribution its modules import at run time."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("samhost", "hoststack", "localbus")


def pyproject(package: str) -> dict:
    return tomllib.loads((ROOT / "infra" / package / "pyproject.toml").read_text())


def declared(package: str) -> set[str]:
    """The distributions its pyproject depends on, optional ones included, normalised."""
    project = pyproject(package)["project"]
    requirements = [*project.get("dependencies", [])]
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    return {normalise(re.split(r"[\s<>=!~\[;]", requirement, maxsplit=1)[0]) for requirement in requirements}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_imports(folder: Path) -> Iterator[tuple[Path, str]]:
    """(file, top-level module) of every absolute import, leaving out those under `if TYPE_CHECKING:`."""
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text())
        checking = {
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for inner in ast.walk(node)
        }
        for node in ast.walk(tree):
            if id(node) in checking:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                yield path, node.module.split(".")[0]
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    yield path, alias.name.split(".")[0]


@pytest.mark.parametrize("package", PACKAGES)
def test_it_is_installed_from_its_own_folder(package: str):
    name = pyproject(package)["project"]["name"]
    direct = json.loads(importlib.metadata.distribution(name).read_text("direct_url.json") or "{}")
    assert direct.get("url") == (ROOT / "infra" / package).as_uri()
    assert (ROOT / "infra" / package / package / "py.typed").exists()


@pytest.mark.parametrize("package", PACKAGES)
def test_its_pyproject_declares_what_it_imports(package: str):
    siblings = {pyproject(other)["project"]["name"]: other for other in PACKAGES}
    providers = importlib.metadata.packages_distributions()
    wanted = declared(package)
    missing = []
    for path, module in runtime_imports(ROOT / "infra" / package / package):
        if module in sys.stdlib_module_names or module == "__future__" or module == package:
            continue
        if module in siblings.values():
            if normalise(next(dist for dist, pkg in siblings.items() if pkg == module)) not in wanted:
                missing.append(f"{path.relative_to(ROOT)}: {module}")
            continue
        distributions = {normalise(dist) for dist in providers.get(module, [module])}
        if not distributions & wanted:
            missing.append(f"{path.relative_to(ROOT)}: {module} ({', '.join(sorted(distributions))})")
    assert missing == []


def test_the_check_sees_third_party_imports():
    """A walk that found nothing would pass: the emulator does import boto3 and yaml at run time."""
    modules = {module for _, module in runtime_imports(ROOT / "infra" / "samhost" / "samhost")}
    assert {"boto3", "yaml", "confluent_kafka"} <= modules
    assert "mypy_boto3_lambda" not in modules  # under TYPE_CHECKING only
