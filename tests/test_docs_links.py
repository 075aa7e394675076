"""Every file path, link (and heading it points at) and command that README.md and docs/*.md
name exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
TOP_LEVEL = {path.name for path in REPO.iterdir() if not path.name.startswith(".")} | {".ci"}

_CODE = re.compile(r"`([^`\n]+)`")
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_PATH = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_./-]*$")
_MAKE = re.compile(r"\bmake ([a-z][a-z-]*)")
_PRUNETUNE = re.compile(r"\bprunetune ([a-z][a-z-]*)")
_FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)


def repository_paths(text: str) -> set[str]:
    """Code spans that name a path in this repository: they start with one of its top-level
    entries (`sweeps/quickstart.yaml`, `trainables/config/`, `Makefile`); a command's path
    argument counts too (`python analysis/plot.py DIR`)."""
    found = set()
    for span in _CODE.findall(text):
        for word in span.split():
            word = word.rstrip(",.;:)")
            if _PATH.match(word) and word.split("/")[0] in TOP_LEVEL and (
                    "/" in word or word in TOP_LEVEL):
                found.add(word)
    return found


def make_targets() -> set[str]:
    makefile = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([a-z][a-z-]*):", makefile, flags=re.MULTILINE))


def prunetune_commands() -> set[str]:
    from sweeps.cli import COMMANDS

    return set(COMMANDS)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_named_paths_exist(page: Path) -> None:
    missing = sorted(path for path in repository_paths(page.read_text())
                     if not (REPO / path).exists())
    assert not missing, f"{page.name} names paths that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_links_resolve(page: Path) -> None:
    broken = []
    for target in _LINK.findall(page.read_text()):
        if "://" in target or target.startswith(("#", "mailto:")):
            continue
        if not (page.parent / target.split("#")[0]).exists():
            broken.append(target)
    assert not broken, f"{page.name} links to files that do not exist: {broken}"


def anchors(text: str) -> set[str]:
    """GitHub's anchors for a page's headings (outside fenced code): lower case, punctuation
    dropped, spaces to hyphens, a repeated one suffixed -1, -2, ..."""
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+?)\s*$", _FENCE.sub("", text), flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_link_anchors_exist(page: Path) -> None:
    broken = []
    for target in _LINK.findall(page.read_text()):
        if "://" in target or "#" not in target or target.startswith("mailto:"):
            continue
        path, _, fragment = target.partition("#")
        linked = page.parent / path if path else page
        if linked.suffix == ".md" and linked.is_file() and fragment not in anchors(
                linked.read_text()):
            broken.append(target)
    assert not broken, f"{page.name} links to headings that do not exist: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_named_commands_exist(page: Path) -> None:
    text = "\n".join(_CODE.findall(page.read_text())) + "\n" + "\n".join(
        re.findall(r"```[a-z]*\n(.*?)```", page.read_text(), flags=re.DOTALL))
    unknown = sorted({f"make {t}" for t in _MAKE.findall(text)} - {
        f"make {t}" for t in make_targets()})
    unknown += sorted({f"prunetune {c}" for c in _PRUNETUNE.findall(text)} - {
        f"prunetune {c}" for c in prunetune_commands()})
    assert not unknown, f"{page.name} names commands that do not exist: {unknown}"


def test_the_checks_catch_what_they_look_for() -> None:
    text = "see `sweeps/nope.yaml`, `python analysis/plot.py DIR`, `output/<name>/` and `x`"
    assert repository_paths(text) == {"sweeps/nope.yaml", "analysis/plot.py"}
    assert "docs" in make_targets() and "test" in make_targets()
    assert {"run", "plot", "dry-run", "list"} <= prunetune_commands()
    assert anchors("# Sweeps\n## Sweep files\n```\n# not a heading\n```\n## Sweep files\n"
                   "## Methods, structure and `speed`\n") == {
        "sweeps", "sweep-files", "sweep-files-1", "methods-structure-and-speed"}



def test_the_example_plugins_pointers_resolve() -> None:
    """The example package's files name docs pages and sections that exist."""
    for path in sorted((REPO / "examples").rglob("*")):
        if path.suffix not in (".py", ".toml", ".yaml"):
            continue
        text = path.read_text()
        for page in re.findall(r"\b((?:docs/)?[a-z-]+\.md)\b", text):
            assert (REPO / page).is_file() or (REPO / "docs" / page).is_file(), (path, page)
        for section in re.findall(r'README "([^"]+)"', text):
            readme = (REPO / "README.md").read_text()
            assert f"## {section}" in readme, (path, section)
