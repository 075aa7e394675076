"""Plug-ins from the user's own code: the example package `examples/plugin` (a method, a
dataset, a model, a scorer with a setting of its own and an allocation, each only there)
installed into a `--target` folder outside the checkout and found through its entry points,
plus a method in a file named by the sweep's `plugins:` key, run by real Ray workers through
`sweeps/run_sweep.py` and analysed, with no edit inside prunetune."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from install_helpers import REPO, clean_env, pip, source_copy
from sweep_helpers import rows, run_sweep

from trainables.plugins import Plugin, PluginError, import_plugins, resolve_plugins

EXAMPLE = REPO / "examples" / "plugin"
# tiny_cnn at width 8 on 1-channel rings (4 classes): its prunable weights, by hand from
# examples/plugin/prunetune_example/models.py: (rows, row length).
TINY_CNN_WEIGHTS = [(8, 1 * 9), (16, 8 * 9), (4, 16)]
TINY_CNN_LAYERS = ["0.weight", "3.weight", "8.weight"]
# sqrt_budgets at sparsity 0.75, by hand: 1288 weights, 1288 - round(0.75 * 1288) = 322 kept,
# shared as sqrt(72) : sqrt(1152) : sqrt(64) = 8.485 : 33.941 : 8 of 50.426, i.e. 54.18,
# 216.73 and 51.08 (no layer capped); floors 54 + 216 + 51 = 321, the one left to the largest
# remainder (0.73).
SQRT_BUDGETS = {"0.weight": 54, "3.weight": 217, "8.weight": 51}


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example package installed (from a copy: the build writes into its source) into a
    folder that only PYTHONPATH points at."""
    work = tmp_path_factory.mktemp("plugin")
    pip("install", "--target", str(work / "site"), str(source_copy(EXAMPLE, work / "source")))
    return work / "site"


def run_plugin_sweep(sweep: Path, *args: str, site: Path) -> subprocess.CompletedProcess[str]:
    """The sweep with only `site` (the plug-in's install) added to the Python path."""
    return run_sweep(str(sweep), *args, cwd=sweep.parent,
                     environment=clean_env(PYTHONPATH=str(site)), timeout=600)


def sweep_beside(directory: Path, **changes: object) -> Path:
    """The example sweep file and its local plug-in file, copied into `directory` (not the
    package's folder: nothing must be importable from the sources)."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(EXAMPLE / "local_method.py", directory)
    sweep = yaml.safe_load((EXAMPLE / "sweep.yaml").read_text())
    path = directory / "sweep.yaml"
    path.write_text(yaml.safe_dump({**sweep, **changes}))
    return path


@pytest.mark.slow
def test_plugin_methods_datasets_and_models_run_through_a_sweep(
    target: Path, tmp_path: Path
) -> None:
    sweep = sweep_beside(tmp_path / "run")
    out = tmp_path / "out"
    done = run_plugin_sweep(sweep, "--set", "grid.seed=[0]", "--storage", str(out), site=target)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    experiment = out / "plugin_example"
    by_method = {}
    for trial in experiment.glob("*/params.json"):
        (final,) = [r for r in rows(trial.parent) if r.get("final_round")]
        by_method[final["method"]] = final
    assert sorted(by_method) == ["dense", "every_third", "prune_at_init", "row_half"]

    total = sum(out_rows * length for out_rows, length in TINY_CNN_WEIGHTS)
    kept = {
        "dense": total,
        "row_half": sum(out_rows * (length // 2) for out_rows, length in TINY_CNN_WEIGHTS),
        "every_third": sum(math.ceil(out_rows * length / 3) for out_rows, length in
                           TINY_CNN_WEIGHTS),
        "prune_at_init": total - round(0.75 * total),
    }
    for method, row in by_method.items():
        assert row["params_prunable_dense"] == total, method
        assert row["params_prunable"] == kept[method], method
        assert row["sparsity"] == pytest.approx(1 - kept[method] / total, rel=1e-12, abs=1e-15)
        assert 0 <= row["test_acc"] <= 1
    assert by_method["row_half"]["label"] == "row half (example plug-in)"
    assert by_method["row_half"]["scorer"] == "row magnitude"

    # The plug-in scorer with its setting, and the plug-in allocation, chosen in the sweep file.
    jittered = by_method["prune_at_init"]
    assert jittered["scorer"] == "jittered_magnitude"
    assert jittered["label"] == "jittered_magnitude at init"
    assert jittered["params_prunable"] == sum(SQRT_BUDGETS.values()) == 322
    remaining = {name: round(numel * (1 - jittered["layer_sparsity"][name]))
                 for name, numel in zip(TINY_CNN_LAYERS, (r * n for r, n in TINY_CNN_WEIGHTS),
                                        strict=True)}
    assert remaining == SQRT_BUDGETS
    (params,) = [p for p in experiment.glob("*/params.json")
                 if '"prune_at_init"' in p.read_text()]
    written = json.loads(params.read_text())["trial"]["prune_at_init"]
    assert written == {"scorer": "jittered_magnitude", "settings": {"jitter": 0.25}}

    plot = subprocess.run([sys.executable, str(REPO / "analysis" / "plot.py"), str(experiment)],
                          env=clean_env(), capture_output=True, text=True, timeout=120)
    assert plot.returncode == 0, plot.stderr
    summary = (experiment / "summary.md").read_text()
    assert "row half (example plug-in)" in summary
    assert "every third weight (local file)" in summary


@pytest.mark.slow
def test_without_the_package_its_names_are_unknown(tmp_path: Path) -> None:
    # The control of the test above: the same sweep with the package not installed.
    done = run_plugin_sweep(sweep_beside(tmp_path), "--dry-run", site=tmp_path / "empty")
    assert done.returncode == 2
    assert "unknown" in done.stderr and "'rings'" in done.stderr, done.stderr


@pytest.mark.parametrize(
    "plugins, words",
    [
        (["./broken.py"], ["plugin './broken.py' failed to import", "ZeroDivisionError"]),
        (["./missing.py"], ["plugin './missing.py': no such file"]),
        (["no_such_plugin_module"],
         ["plugin 'no_such_plugin_module' failed to import", "ModuleNotFoundError"]),
    ],
)
@pytest.mark.slow
def test_a_plugin_that_fails_to_import_is_one_line_and_exit_2_before_ray(
    plugins: list[str], words: list[str], tmp_path: Path
) -> None:
    (tmp_path / "broken.py").write_text("import math\nratio = 1 / 0\n")
    sweep = sweep_beside(tmp_path, plugins=plugins)
    done = run_plugin_sweep(sweep, site=tmp_path / "empty")
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"run_sweep: error: {sweep}: plugin"), line
    for word in words:
        assert word in line, (word, line)
    assert "trials ->" not in done.stdout  # refused before Ray started


def test_a_file_plugin_is_imported_once_under_a_stable_name(tmp_path: Path) -> None:
    (tmp_path / "counting.py").write_text(
        "import builtins\nbuiltins.PRUNETUNE_TEST_IMPORTS = "
        "getattr(builtins, 'PRUNETUNE_TEST_IMPORTS', 0) + 1\n")
    import builtins

    (first,) = resolve_plugins(["./counting.py"], tmp_path, tmp_path)
    (again,) = resolve_plugins(["counting.py"], tmp_path, Path("/"))
    assert first.module == again.module and first.module.startswith("prunetune_plugin_counting")
    try:
        import_plugins([first, again])
        assert builtins.PRUNETUNE_TEST_IMPORTS == 1
        assert sys.modules[first.module].__file__ == str(tmp_path / "counting.py")
    finally:
        sys.modules.pop(first.module, None)
        del builtins.PRUNETUNE_TEST_IMPORTS


def test_a_dotted_plugin_is_found_beside_the_sweep_file(tmp_path: Path) -> None:
    package = tmp_path / "my_plugins_for_test"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "things.py").write_text("VALUE = 42\n")
    (plugin,) = resolve_plugins(["my_plugins_for_test.things"], tmp_path, Path.cwd())
    assert plugin == Plugin("my_plugins_for_test.things", "my_plugins_for_test.things", None,
                            (str(tmp_path.resolve()), str(Path.cwd().resolve())))
    path = list(sys.path)
    try:
        import_plugins([plugin])
        assert sys.modules["my_plugins_for_test.things"].VALUE == 42
    finally:
        for name in ("my_plugins_for_test.things", "my_plugins_for_test"):
            sys.modules.pop(name, None)
        sys.path[:] = path
    with pytest.raises(PluginError, match="plugin 'nope.nothing' failed to import"):
        import_plugins(resolve_plugins(["nope.nothing"], tmp_path, tmp_path))
