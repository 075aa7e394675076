"""docs/generate.py: the pages' generated blocks (README.md, docs/methods.md) are a function of a
results directory alone, and the check fails when a page differs from what given results
produce."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from docs import generate  # noqa: E402
from docs.sections import SECTIONS  # noqa: E402

try:
    from fixtures_experiments import build_standard_experiment
except ImportError:  # tests/ collected as a package
    from tests.fixtures_experiments import build_standard_experiment

T975_2 = 0.95 * math.sqrt(2 / (4 * 0.975 * 0.025))  # closed form with 2 degrees of freedom
PROVENANCE = {"sweep": "sweeps/quickstart.yaml", "commit": "0123456789", "cpu": "Test CPU",
              "uncommitted_changes": False, "cores": 2, "torch": "2.14.0", "ray": "2.60.0",
              "wall_s": 231.4, "load_avg_1m_at_start": 0.25}
README = """# title

hand-written prose before

<!-- docs:quickstart:start -->
stale block
<!-- docs:quickstart:end -->

hand-written prose after
"""


@pytest.fixture
def results_root(tmp_path):
    root = tmp_path / "results"
    experiment = build_standard_experiment(root, name="quickstart")
    (experiment / generate.PROVENANCE_FILE).write_text(json.dumps(PROVENANCE))
    return root


def _readme(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "docs").mkdir(exist_ok=True)
    path = directory / "README.md"
    path.write_text(README)
    return path


def _generate(results_root: Path, directory: Path) -> Path:
    readme = _readme(directory)
    argv = ["--results", str(results_root), "--readme", str(readme), "--only", "quickstart"]
    assert generate.main(argv) == 0
    return readme


def test_block_holds_the_hand_computed_numbers_and_keeps_the_prose(results_root, tmp_path):
    text = _generate(results_root, tmp_path / "a").read_text()
    assert text.startswith("# title\n\nhand-written prose before\n\n<!-- docs:quickstart:start")
    assert text.endswith("<!-- docs:quickstart:end -->\n\nhand-written prose after\n")
    assert "stale block" not in text
    # Dense 0.80/0.82/0.84: mean 82, std 2 points; IMP rounds by hand (fixtures_experiments).
    assert f"| dense | 0 | 1,010,000 | 82.00 ± {T975_2 * 2 / math.sqrt(3):.2f} |  |" in text
    imp = (f"| IMP iterative (round 1 / 2 / 3) | 50.1 / 75.1 / 87.6% | "
           f"509,000 / 259,000 / 134,000 | 83.00 ± {T975_2 * 1 / math.sqrt(3):.2f} / "
           f"81.50 ± {T975_2 * 0.5 / math.sqrt(3):.2f} / 79.00 ± {T975_2 * 2 / math.sqrt(3):.2f}"
           " | +1.00 / -0.50 / -3.00 |")
    assert imp in text
    assert "(mean ± 95% CI, 2-3 seeds)" in text  # the random line has 2 seeds
    assert "95% Student-t interval of the mean over seeds" in text
    assert ("commit `0123456789`; Test CPU, 2 cores, torch 2.14.0, ray 2.60.0): the sweep "
            "took 3 min 51 s (1-min load average 0.25 when it started)") in text
    assert "![quickstart: test accuracy vs remaining parameters]" \
           "(docs/quickstart_accuracy_vs_params.png)" in text


def test_same_results_give_identical_readme_and_figure(results_root, tmp_path):
    first = _generate(results_root, tmp_path / "a")
    second = _generate(results_root, tmp_path / "b")
    assert first.read_text() == second.read_text()
    png = "docs/quickstart_accuracy_vs_params.png"
    assert (tmp_path / "a" / png).read_bytes() == (tmp_path / "b" / png).read_bytes()
    # Regenerating over an already generated README changes nothing either.
    again = generate.main(["--results", str(results_root), "--readme", str(first),
                           "--only", "quickstart"])
    assert again == 0 and first.read_text() == second.read_text()


def test_check_passes_on_match_and_fails_on_any_difference(results_root, tmp_path, capsys):
    readme = _generate(results_root, tmp_path / "a")
    check = ["--check", "--results", str(results_root), "--readme", str(readme),
             "--only", "quickstart"]
    assert generate.main(check) == 0
    # A hand edit inside the block (a typed number) is caught, with a diff.
    text = readme.read_text()
    readme.write_text(text.replace("| +1.00 / -0.50 / -3.00 |", "| +1.00 / -0.50 / -2.00 |"))
    assert generate.main(check) == generate.EXIT_DIFFERS
    assert "+| IMP iterative" in capsys.readouterr().out
    # Results that changed (one seed's dense accuracy) no longer match the README either.
    readme.write_text(text)
    (row_file,) = (results_root / "quickstart").glob("*method=dense,seed=0_*/result.json")
    original = row_file.read_text()
    _set_round_accuracy(row_file, 0.81)
    assert generate.main(check) == generate.EXIT_DIFFERS
    # Prose outside the markers is not checked.
    row_file.write_text(original)
    readme.write_text(text.replace("hand-written prose after", "edited prose"))
    assert generate.main(check) == 0


def _set_round_accuracy(result_json: Path, test_acc: float) -> None:
    rows = [json.loads(line) for line in result_json.read_text().splitlines() if line.strip()]
    for row in rows:
        if row.get("row_type") == "round":
            row["test_acc"] = test_acc
    result_json.write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_missing_markers_or_provenance_exit_2(results_root, tmp_path, capsys):
    readme = _readme(tmp_path / "a")
    readme.write_text("# no markers\n")
    argv = ["--results", str(results_root), "--readme", str(readme), "--only", "quickstart"]
    assert generate.main(argv) == generate.EXIT_BAD_INPUT
    assert "<!-- docs:quickstart:start -->" in capsys.readouterr().err
    readme.write_text(README)
    (results_root / "quickstart" / generate.PROVENANCE_FILE).unlink()
    assert generate.main(argv) == generate.EXIT_BAD_INPUT
    assert "docs_provenance.json is missing" in capsys.readouterr().err
    assert readme.read_text() == README


def test_a_directory_that_is_not_a_sweep_is_never_removed(tmp_path):
    (tmp_path / "quickstart").mkdir()
    (tmp_path / "quickstart" / "notes.txt").write_text("mine")
    with pytest.raises(generate.DocsError, match="not a prunetune sweep"):
        generate.run_section(SECTIONS[0], tmp_path)
    assert (tmp_path / "quickstart" / "notes.txt").read_text() == "mine"


def test_the_repository_pages_have_every_section_and_its_figures():
    for section in SECTIONS:
        page = (REPO / section.page).read_text()
        start, end = generate.markers(section.name)
        assert page.count(start) == 1 and page.count(end) == 1, section.name
        assert page.index(start) < page.index(end)
        assert (REPO / section.sweep).is_file()
        for figure in section.figures:
            assert (REPO / section.figure_file(figure)).is_file()
            # The link resolves from the page's own directory.
            link = section.figure_path(figure)
            assert f"({link})" in page
            assert ((REPO / section.page).parent / link).resolve() == \
                (REPO / section.figure_file(figure)).resolve()


def test_a_block_on_a_page_under_docs_links_its_figure_from_there(results_root, tmp_path):
    from dataclasses import replace

    readme = _readme(tmp_path / "a")
    page = tmp_path / "a" / "docs" / "methods.md"
    page.write_text(README)
    quickstart = replace(SECTIONS[0], page="docs/methods.md")
    text = generate.regenerate(page.read_text(), [quickstart], results_root,
                               tmp_path / "a" / "docs")
    assert "(quickstart_accuracy_vs_params.png)" in text and "(docs/" not in text
    assert (tmp_path / "a" / "docs" / "quickstart_accuracy_vs_params.png").is_file()
    assert readme.read_text() == README  # the front page was not touched


def test_the_configuration_reference_is_current():
    """docs/config.md is what the schema gives today: a new or changed field, or a changed
    description, needs `python docs/config_reference.py` to be run."""
    from docs.config_reference import render

    assert (REPO / "docs" / "config.md").read_text() == render(), (
        "docs/config.md is stale: run python docs/config_reference.py")


def test_the_configuration_reference_lists_every_field_once():
    from docs.config_reference import render
    from trainables.config.sections import TrainConfig

    text = render()
    for name, info in TrainConfig.model_fields.items():
        assert text.count(f"| `{name}` |") >= 1, name
        assert info.description, f"train.{name} has no description"
    assert "| `workers` | int \\| None | `null` | execution |" in text
    assert "| `hflip` | bool \\| None | `null` | batches |" in text


def test_check_on_another_cpu_accepts_numbers_within_the_intervals(results_root, tmp_path,
                                                                   capsys):
    readme = _generate(results_root, tmp_path / "a")  # its provenance line names "Test CPU"
    check = ["--check", "--results", str(results_root), "--readme", str(readme),
             "--only", "quickstart"]
    provenance = results_root / "quickstart" / generate.PROVENANCE_FILE
    dense_files = sorted((results_root / "quickstart").glob("*method=dense,seed=*/result.json"))
    assert len(dense_files) == 3
    # Dense seeds 80/82/84% give 82.00 ± 4.97 (t, 2 degrees of freedom); with seed 0 at 81%:
    # 82.33 ± 3.79, which overlaps it.
    _set_round_accuracy(dense_files[0], 0.81)
    assert generate.main(check) == generate.EXIT_DIFFERS  # same CPU: must match exactly
    capsys.readouterr()
    provenance.write_text(json.dumps({**PROVENANCE, "cpu": "Other CPU"}))
    assert generate.main(check) == 0
    out = capsys.readouterr().out
    assert "consistent within the intervals" in out and "Other CPU vs Test CPU" in out
    assert "dense, test acc % (mean ± 95% CI, 3 seeds)" not in out  # intervals are not listed
    # Every seed at 95%: 95.00 ± 0.00 does not meet [77.03, 86.97].
    for row_file in dense_files:
        _set_round_accuracy(row_file, 0.95)
    assert generate.main(check) == generate.EXIT_DIFFERS
    err = capsys.readouterr().err
    assert "not within the intervals: quickstart: dense" in err and "95.00 ± 0.00" in err


def test_block_comparison_pairs_intervals_cell_by_cell():
    from docs.consistency import block_cpu, compare_blocks, intervals

    assert intervals("98.52 ± 0.40 / 42.13 ± 69.58† / 97.1 [95.5, 98.0]") == [
        pytest.approx((98.12, 98.92)), pytest.approx((-27.45, 111.71)), (95.5, 98.0)]
    line = "Generated by `make docs` from `x.yaml` (commit `abc`; AMD EPYC 7B13, 2 cores, torch 2"
    assert block_cpu(line) == "AMD EPYC 7B13"
    intel = line.replace("AMD EPYC 7B13", "Intel(R) Xeon(R) Processor")
    assert block_cpu(intel) == "Intel(R) Xeon(R) Processor"
    header = "| method | params | test acc % (mean ± 95% CI) |\n| --- | --- | --- |\n"
    published = header + ("| dense | 100 | 90.00 ± 1.00 |\n"
                          "| snip | 10 / 5 | 80.00 ± 2.00 / 70.00 ± 1.00 |")
    moved = published.replace("10 / 5", "11 / 5").replace("70.00 ± 1.00", "71.50 ± 0.60")
    found = compare_blocks(published, moved, "s")
    assert found.consistent and found.intervals == 3
    assert found.other_differences == ["s: snip, params: 10 / 5 -> 11 / 5"]
    apart = published.replace("70.00 ± 1.00", "71.50 ± 0.40")  # [71.1, 71.9] vs [69, 71]
    assert compare_blocks(published, apart, "s").problems == [
        "s: snip, test acc % (mean ± 95% CI): 80.00 ± 2.00 / 71.50 ± 0.40 lies outside "
        "80.00 ± 2.00 / 70.00 ± 1.00 (no overlap)"]
    fewer = published.replace(" / 70.00 ± 1.00", "")
    assert "do not pair up" in compare_blocks(published, fewer, "s").problems[0]
    other_rows = published.replace("| snip |", "| grasp |")
    assert "other rows" in compare_blocks(published, other_rows, "s").problems[0]
