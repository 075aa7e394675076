"""The plan a sweep file expands into: typed trials, each parsed once, with every path absolute
(no placeholder left for a later step to fill in), planned the same from any directory."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from sweeps.plan import MAX_TRIALS, Output, PlanningProgress, grid_size, load_sweep, plan_sweep
from sweeps.spec import shipped_sweeps, sweep_path, validate_spec
from trainables.config import TrialConfig
from trainables.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
PATH_FIELDS = ("data.root", "data.cache_dir", "model.weights_path", "dense_model.checkpoint",
               "dense_model.cache")


def path_values(raw: dict[str, Any]) -> dict[str, str]:
    found = {}
    for dotted in PATH_FIELDS:
        section, key = dotted.split(".")
        value = raw[section][key]
        if value is not None:
            found[dotted] = value
    return found


@pytest.mark.parametrize("name", shipped_sweeps())
def test_every_shipped_sweep_plans_absolute_paths_from_another_directory(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    plan = load_sweep(sweep_path(name))
    assert plan.trials
    for trial in plan.trials:
        assert isinstance(trial.config, TrialConfig)
        for dotted, value in path_values(trial.raw).items():
            assert "<" not in value and ">" not in value, (name, trial.name, dotted, value)
            assert Path(value).is_absolute() or "://" in value, (name, trial.name, dotted, value)
    # The experiment, and the dense cache its trials share, sit in ./output of the launch dir.
    assert plan.output.experiment_dir == str(elsewhere / "output" / plan.spec.name)
    caches = {trial.config.dense_model.cache for trial in plan.trials} - {None}
    assert caches <= {str(elsewhere / "output" / plan.spec.name / "dense_cache")}


def test_the_dense_cache_follows_storage_and_name(tmp_path: Path) -> None:
    raw = {"name": "cache", "grid": {"seed": [0, 1]},
           "experiments": [{"config": {"method": "dense"}}, {"config": {"method": "imp"}}]}
    plan = plan_sweep(raw, "c.yaml", launch_dir=tmp_path, storage="results", name="mine")
    shared = [trial for trial in plan.trials if trial.method == "imp"]
    assert len(shared) == 2 and plan.output == Output(str(tmp_path / "results"), "mine")
    cache = str(tmp_path / "results" / "mine" / "dense_cache")
    assert {t.config.dense_model.cache for t in shared} == {cache}
    smoke = plan_sweep(raw, "c.yaml", launch_dir=tmp_path, smoke=True)
    assert smoke.output.name == "cache-smoke"
    on_cloud = plan_sweep(raw, "c.yaml", launch_dir=tmp_path, storage="s3://bucket/p")
    assert on_cloud.output.experiment_dir == "s3://bucket/p/cache"
    cache = {t.config.dense_model.cache for t in on_cloud.trials if t.method == "imp"}
    assert cache == {str(Path.home() / ".cache" / "prunetune" / "dense" / "cache")}


def test_planned_trials_carry_label_key_and_name_and_run_in_sweep_order(tmp_path: Path) -> None:
    raw = {"name": "typed", "grid": {"seed": [3]},
           "experiments": [{"label": "pai", "config": {"method": "snip"},
                            "grid": {"prune.target_sparsity": [0.5, 0.9]}},
                           {"config": {"method": "dense"}}]}
    plan = plan_sweep(raw, "t.yaml", launch_dir=tmp_path)
    # Dense first (its sweep order), then the snip points in grid order; names by hand.
    assert [t.name for t in plan.trials] == ["dense_s3", "pai_s3_sp0.5", "pai_s3_sp0.9"]
    assert [t.label for t in plan.trials] == ["dense", "pai", "pai"]
    keys = [json.loads(t.key) for t in plan.trials]
    assert keys[0] == {"seed": 3}
    assert keys[1] == {"method": "snip", "seed": 3, "prune": {"target_sparsity": 0.5}}
    assert plan.trials[2].raw == plan.trials[2].config.model_dump(mode="json")
    summary = plan.summary()
    assert [entry["label"] for entry in summary["trials"]] == ["dense", "pai", "pai"]
    assert summary["grid_keys"] == ["seed", "prune.target_sparsity"]


def test_a_grid_beyond_the_limit_is_one_line_with_its_count_before_any_trial_is_planned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = {"name": "huge", "grid": {"seed": list(range(1000))},
           "experiments": [{"config": {"method": "snip"},
                            "grid": {"prune.target_sparsity": [i / 1000 for i in range(1000)]}}]}
    assert grid_size(validate_spec(raw, "huge.yaml")) == 1000 * 1000

    def never(*_: Any, **__: Any) -> None:
        raise AssertionError("a trial was composed")

    monkeypatch.setattr("sweeps.plan.compose_trial", never)
    with pytest.raises(ConfigError) as refused:
        plan_sweep(raw, "huge.yaml")
    message = str(refused.value)
    assert "\n" not in message and "1,000,000 trials" in message
    assert "1,000 seed x 1,000 prune.target_sparsity" in message
    assert f"more than the {MAX_TRIALS:,}" in message and "--max-trials 1000000" in message


def test_planning_reports_progress_once_it_takes_long(tmp_path: Path) -> None:
    raw = {"name": "p", "grid": {"seed": [0, 1, 2, 3]}}
    calls: list[tuple[int, int]] = []
    plan_sweep(raw, "p.yaml", launch_dir=tmp_path, max_trials=4,
               progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    with_set: list[tuple[int, int]] = []
    plan_sweep(raw, "p.yaml", ["train.epochs=2"], launch_dir=tmp_path,
               progress=lambda done, total: with_set.append((done, total)))
    assert with_set[-1] == (8, 8)  # composed twice: as written, then with --set

    now = [0.0]
    lines: list[str] = []
    printer = PlanningProgress(lines.append, after_s=3.0, every_s=5.0, clock=lambda: now[0])
    for second, done in [(1.0, 10), (2.9, 29), (3.0, 30), (4.0, 40), (8.0, 80), (9.0, 90)]:
        now[0] = second
        printer(done, 100)
    # Quiet for the first 3 s, then a line every 5 s: at 3 s and at 8 s.
    assert lines == ["planning: 30 of 100 trial configs composed (30%, about 7 s left)",
                     "planning: 80 of 100 trial configs composed (80%, about 2 s left)"]


@pytest.mark.parametrize("content, words", [
    (b"name: x\nbase: {data: {name: caf\xe9}}\n", "not UTF-8 text (byte 0xe9 at offset 31)"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "not UTF-8 text (byte 0x89 at offset 0)"),
    (b"name: [unclosed\n", "malformed YAML at line 2"),
])
def test_a_file_that_is_not_utf8_yaml_is_one_config_error(
    tmp_path: Path, content: bytes, words: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as refused:
        load_sweep(path)
    assert words in str(refused.value) and "\n" not in str(refused.value)
    assert str(refused.value).startswith(str(path))


def test_planning_leaves_the_working_directory_untouched(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    load_sweep(sweep_path("quickstart"))
    assert os.listdir(tmp_path) == []


def test_no_placeholder_folder_is_left_anywhere_in_the_repository() -> None:
    assert [str(path) for path in REPO.rglob("*<*") if ".venv" not in path.parts] == []


@pytest.mark.parametrize("content, words", [
    (b"name: x\nbase: {data: {name: caf\xe9}}\n", "not UTF-8 text"),
    (b"name: [unclosed\n", "malformed YAML"),
    (b"name: huge\ngrid: {seed: [" + b", ".join(str(i).encode() for i in range(200))
     + b"]}\nexperiments:\n  - {config: {method: snip}, grid: {prune.target_sparsity: ["
     + b", ".join(f"0.{i:03d}".encode() for i in range(1, 101)) + b"]}}\n",
     "the grid has 20,000 trials"),
])
def test_bad_sweep_files_are_one_line_and_exit_2_before_ray_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    content: bytes, words: str,
) -> None:
    from sweeps import run_sweep

    def no_ray(*_: Any) -> bool:
        raise AssertionError("Ray was started")

    monkeypatch.setattr(run_sweep, "_start_ray", no_ray)
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    code = run_sweep.main([str(path), "--storage", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and words in err[0], err
    assert err[0].startswith("run_sweep: error: ") and not (tmp_path / "out").exists()


def test_max_trials_lets_a_large_grid_through_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sweeps import run_sweep

    path = tmp_path / "wide.yaml"
    path.write_text("name: wide\ngrid: {seed: [0, 1, 2]}\n")
    assert run_sweep.main([str(path), "--max-trials", "2", "--dry-run"]) == 2
    assert "the grid has 3 trials" in capsys.readouterr().err
    assert run_sweep.main([str(path), "--max-trials", "3", "--dry-run",
                           "--storage", str(tmp_path / "out")]) == 0
    assert "dry run: 3 trials valid" in capsys.readouterr().out


def test_the_name_creators_tune_pickles_into_every_trial_hold_no_names(tmp_path: Path) -> None:
    """Tune pickles the trial name creators into each trial of its experiment state: a namer
    carrying every trial's config made that state grow with the square of the trials."""
    import pickle
    from types import SimpleNamespace

    from sweeps.trial_names import TrialNamer

    sizes = {}
    for seeds in (2, 200):
        raw = {"name": "names", "grid": {"seed": list(range(seeds))},
               "experiments": [{"config": {"method": "dense"}}]}
        plan = plan_sweep(raw, "n.yaml", launch_dir=tmp_path)
        namer = TrialNamer(plan)
        pickled = pickle.dumps((namer.name, namer.dirname))
        sizes[seeds] = len(pickled)
        name, dirname = pickle.loads(pickled)
        trial = SimpleNamespace(config={"trial": plan.trials[-1].raw}, trial_id="ab12c_00001")
        assert name(trial) == f"dense_s{seeds - 1}"
        assert dirname(trial) == f"dense_s{seeds - 1}_ab12c_00001"
    assert sizes[2] == sizes[200] < 300
