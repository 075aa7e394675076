"""README.md is a front page: short, linking every page under docs/, each of which links back
(and lists its sections); the generated blocks sit on the page docs/sections.py names; the
SLURM script the cluster page describes at least parses."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # docs/ is a folder of the checkout, not of the package
README = REPO / "README.md"
PAGES = sorted((REPO / "docs").glob("*.md"))
GENERATED = {"config.md"}  # written by docs/config_reference.py, not by hand
MAX_FRONT_PAGE_LINES = 150
SBATCH = REPO / "sweeps" / "slurm" / "prunetune.sbatch"

_LINK = re.compile(r"\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
_MARKER = re.compile(r"<!-- docs:([a-z_]+):start -->")


def too_long(text: str) -> bool:
    return len(text.splitlines()) > MAX_FRONT_PAGE_LINES


def linked_files(page: Path, text: str) -> set[Path]:
    """The local files `text` (the text of `page`) links to, resolved."""
    return {(page.parent / target.split("#")[0]).resolve() for target in _LINK.findall(text)
            if "://" not in target and not target.startswith(("#", "mailto:"))}


def unlinked_pages(readme: Path, text: str, pages: list[Path]) -> list[str]:
    linked = linked_files(readme, text)
    return [page.name for page in pages if page.resolve() not in linked]


def section_headings(text: str) -> list[str]:
    """The `## ` headings outside fenced code."""
    return re.findall(r"^## (.+?)\s*$", _FENCE.sub("", text), flags=re.MULTILINE)


def test_the_readme_is_a_front_page() -> None:
    lines = len(README.read_text().splitlines())
    assert not too_long(README.read_text()), (
        f"README.md has {lines} lines; the front page keeps to {MAX_FRONT_PAGE_LINES}: move "
        "the detail to a page under docs/ and link it from the Documentation list")
    assert "make test" in README.read_text()  # the test command CI runs (.ci/run)


def test_the_readme_links_every_page_under_docs() -> None:
    assert PAGES, "no pages under docs/"
    missing = unlinked_pages(README, README.read_text(), PAGES)
    assert not missing, f"README.md does not link docs pages: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_page_links_back_to_the_readme(page: Path) -> None:
    assert README.resolve() in linked_files(page, page.read_text()), (
        f"docs/{page.name} has no link back to ../README.md")


@pytest.mark.parametrize("page", [p for p in PAGES if p.name not in GENERATED],
                         ids=lambda p: p.name)
def test_every_page_has_a_title_and_lists_its_sections(page: Path) -> None:
    text = page.read_text()
    assert text.startswith("# "), f"docs/{page.name} does not start with a `# Title`"
    head = text.split("\n## ", 1)[0]  # title, back link and contents, before the first section
    assert "[back to the README](../README.md)" in head
    listed = set(re.findall(r"\]\(#([^)]+)\)", head))
    unlisted = [h for h in section_headings(text) if anchor(h) not in listed]
    assert section_headings(text) and not unlisted, (
        f"docs/{page.name}'s contents do not list its sections {unlisted}")


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: str(p.relative_to(REPO)))
def test_generated_blocks_sit_on_their_own_page(page: Path) -> None:
    from docs import tensorboard_screenshot
    from docs.sections import SECTIONS

    pages = {section.name: section.page for section in SECTIONS}
    pages[tensorboard_screenshot.SECTION] = str(tensorboard_screenshot.PAGE.relative_to(REPO))
    here = str(page.relative_to(REPO))
    misplaced = [name for name in _MARKER.findall(page.read_text()) if pages.get(name) != here]
    assert not misplaced, (f"{here} holds blocks that docs/sections.py puts elsewhere (or "
                           f"nowhere): {[(name, pages.get(name)) for name in misplaced]}")


@pytest.mark.slow
def test_the_slurm_script_parses() -> None:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash here")
    done = subprocess.run([bash, "-n", str(SBATCH)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert str(SBATCH.relative_to(REPO)) in (REPO / "docs" / "cluster.md").read_text()


def test_the_checks_catch_what_they_look_for(tmp_path: Path) -> None:
    assert not too_long("line\n" * MAX_FRONT_PAGE_LINES)
    assert too_long("line\n" * (MAX_FRONT_PAGE_LINES + 1))
    (tmp_path / "docs").mkdir()
    pages = [tmp_path / "docs" / "a.md", tmp_path / "docs" / "b.md"]
    readme = tmp_path / "README.md"
    text = "see [a](docs/a.md#part) and [the web](https://example.org/docs/b.md)"
    assert unlinked_pages(readme, text, pages) == ["b.md"]
    assert section_headings("## One\n```\n## not a heading\n```\n## Two, `three`\n") == [
        "One", "Two, `three`"]
    assert anchor("Adding a method, a dataset or a model") == \
        "adding-a-method-a-dataset-or-a-model"
    assert anchor("Two, `three`") == "two-three"


def test_the_layout_names_every_module_of_trainables_and_sweeps() -> None:
    text = (REPO / "docs" / "extending.md").read_text()
    layout = text[text.index("## Layout"):]
    modules = [p for package in ("trainables", "sweeps") for p in (REPO / package).iterdir()
               if (p.suffix == ".py" and p.name != "__init__.py")
               or (p.is_dir() and (p / "__init__.py").is_file())]
    unnamed = [p.name for p in modules if (p.name if p.suffix else f"{p.name}/") not in layout]
    assert not unnamed, f"docs/extending.md's Layout leaves out {unnamed}"


def test_the_front_page_sweep_file_plans_the_quickstart_trials_it_shows() -> None:
    """The README's sweep file is the shipped quickstart without comments, less the random
    experiment (and description, max_failures): its trials are the quickstart's minus those."""
    import yaml

    from sweeps.plan import load_sweep, plan_sweep

    text = (REPO / "README.md").read_text()
    block = text[text.index("```yaml\nname: quickstart"):]
    shown = yaml.safe_load(block.removeprefix("```yaml\n").split("```", 1)[0])
    shipped = load_sweep(REPO / "sweeps" / "quickstart.yaml", launch_dir=REPO)
    planned = plan_sweep(shown, "README.md", launch_dir=REPO)
    expected = [trial.raw for trial in shipped.trials if trial.method != "random"]
    assert len(planned.trials) == 3 + 3 + 9 and planned.raw_trials == expected  # dense, imp, snip


def test_the_tensorboard_screenshots_are_linked_from_their_block() -> None:
    from docs import tensorboard_screenshot

    text = tensorboard_screenshot.PAGE.read_text()
    start, end = (f"<!-- docs:{tensorboard_screenshot.SECTION}:{edge} -->"
                  for edge in ("start", "end"))
    block = text.split(start, 1)[1].split(end, 1)[0]
    for view in tensorboard_screenshot.VIEWS:
        assert f"](tensorboard_{view.name}.png)" in block, view.name
        assert (REPO / "docs" / f"tensorboard_{view.name}.png").is_file(), view.name
    assert "Taken by `make docs`" in block
