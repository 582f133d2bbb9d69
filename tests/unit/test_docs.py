"""The docs a newcomer reads stand alone in a clone: the README is a front door, every relative link and anchor
resolves, every `make` target and `python -m` module they name exists, and every variable the configuration
reference names is read by the code."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*$", re.MULTILINE)
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(text):
        base = slug(heading)
        count = seen.get(base, 0)
        found.add(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    return found


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z0-9-]*):", (ROOT / "Makefile").read_text(), re.MULTILINE))


def test_the_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 300
    for section in ("## Two commands", "make demo", "make test"):
        assert section in text
    assert (ROOT / "LICENSE").is_file()


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_relative_link_and_anchor_resolves(page: Path):
    broken = []
    for target in LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"[a-z]+:", target):  # http(s), mailto
            continue
        path_part, _, anchor = target.partition("#")
        linked = (page.parent / path_part).resolve() if path_part else page
        if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in anchors(linked)):
            broken.append(target)
    assert broken == []


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_the_docs_never_point_outside_the_clone(page: Path):
    text = page.read_text()
    assert "../shared" not in text
    assert not re.search(r"\bissue \d+\b", text, re.IGNORECASE)


def test_every_make_target_named_in_the_docs_exists():
    targets = make_targets()
    named = {name for page in PAGES for name in re.findall(r"`make ([a-z][a-z0-9-]*)", page.read_text())}
    named |= {
        name
        for page in PAGES
        for block in FENCE.findall(page.read_text())
        for name in re.findall(r"^make ([a-z][a-z0-9-]*)", block, re.MULTILINE)
    }
    assert named, "the docs name make targets"
    assert sorted(named - targets) == []


def test_every_module_the_docs_run_with_python_m_exists():
    modules = {name for page in PAGES for name in re.findall(r"python -m ([a-z_][a-z0-9_.]*)", page.read_text())}
    assert "localbus.stack" in modules
    assert sorted(name for name in modules if importlib.util.find_spec(name) is None) == []


def test_every_variable_in_the_configuration_reference_is_read_by_the_code():
    reference = (ROOT / "docs" / "configuration.md").read_text()
    rows = [line for line in reference.splitlines() if line.startswith("| `")]
    variables = {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]{3,})`", row.split("|")[1])}
    code = "\n".join(path.read_text() for path in (ROOT / "functions").rglob("*.py"))
    template = (ROOT / "template.yaml").read_text()
    assert len(variables) > 40

    def read(name: str) -> bool:  # the OTLP exporter's variables are built from a suffix (config._otlp_file)
        return name in code or name in template or f'"{name.removeprefix("OTEL_EXPORTER_OTLP_")}"' in code

    unknown = sorted(name for name in variables if not read(name))
    assert unknown == []
