"""The package as a user installs it: a wheel built from the checkout, installed without `-e`
into a fresh venv outside the checkout, runs the shipped quickstart under --smoke and the plot
through the `prunetune` console script, from a temporary directory, with no sys.path trick."""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest
from install_helpers import REPO, clean_env, fresh_venv, pip, source_copy
from sweep_helpers import rows


def modules_in_tree() -> set[str]:
    """Every module of the four installable packages, from the files of the checkout."""
    found = set()
    for package in ("pruning", "trainables", "sweeps", "analysis"):
        for path in (REPO / package).rglob("*.py"):
            found.add(".".join(path.relative_to(REPO).with_suffix("").parts))
    return found


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    source = source_copy(REPO, work / "source")
    pip("wheel", "-w", str(work / "dist"), str(source))
    (built,) = (work / "dist").glob("prunetune-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `bin/` folder of a fresh venv with the wheel installed (not editable)."""
    python = fresh_venv(tmp_path_factory.mktemp("venv") / "venv")
    pip("install", str(wheel), python=str(python))
    return python.parent


def test_the_wheel_holds_every_module_and_the_shipped_sweeps(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {".".join(Path(n).with_suffix("").parts) for n in names if n.endswith(".py")}
    assert shipped == modules_in_tree()
    yamls = sorted(Path(n).name for n in names if n.endswith(".yaml"))
    assert yamls == sorted(p.name for p in (REPO / "sweeps").glob("*.yaml"))
    assert "quickstart.yaml" in yamls


@pytest.mark.slow
def test_installed_package_runs_the_quickstart_and_plots_it(
    installed: Path, tmp_path: Path
) -> None:
    def prunetune(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(installed / "prunetune"), *args], cwd=tmp_path,
                              env=clean_env(), capture_output=True, text=True, timeout=timeout)

    where = subprocess.run(
        [str(installed / "python"), "-c", "import sweeps, trainables; print(trainables.__file__)"],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(installed.parent), where  # not the checkout's

    listed = prunetune("list")
    assert listed.returncode == 0, listed.stderr
    assert "quickstart" in listed.stdout and "imp" in listed.stdout

    one_seed = ["--smoke", "--set", "grid.seed=[0]", "--set", "model.width=4"]
    dry = prunetune("dry-run", "quickstart", *one_seed)
    assert dry.returncode == 0, dry.stderr
    # dense, IMP (3 rounds in one trial), and SNIP and random at 3 sparsities: 8 trials.
    assert "8 trials valid" in dry.stdout

    run = prunetune("run", "quickstart", *one_seed, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    experiment = tmp_path / "output" / "quickstart-smoke"
    assert f"prunetune plot {experiment}" in run.stdout  # the next step, as installed
    trials = sorted(p.parent for p in experiment.glob("*/params.json"))
    assert len(trials) == 8
    assert all(any(r.get("final_round") for r in rows(trial)) for trial in trials)

    plot = prunetune("plot", str(experiment))
    assert plot.returncode == 0, plot.stderr
    assert (experiment / "accuracy_vs_params.png").stat().st_size > 0
    summary = (experiment / "summary.md").read_text()
    for label in ("dense", "IMP", "SNIP", "random"):
        assert label in summary, label


@pytest.mark.slow
def test_a_missing_sweep_file_names_the_shipped_ones(installed: Path, tmp_path: Path) -> None:
    done = subprocess.run([str(installed / "prunetune"), "run", "quikstart", "--dry-run"],
                          cwd=tmp_path, env=clean_env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "quikstart: no such file, nor a shipped sweep" in line and "quickstart" in line
