"""Bad input ends in one line and exit 2, never a traceback or a started Ray; and the safety
properties a shared cluster relies on (weights_only loads, safe YAML, no dashboard)."""

from __future__ import annotations

import ast
import json
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sweep_helpers import ROOT, run_plot, run_sweep, tiny_base, write_sweep

from sweeps.plan import plan_sweep
from trainables.errors import PrunetuneError
from trainables.reporting import DirectoryReporter
from trainables.resolve import parse_trial_config
from trainables.round_store import TENSORS_FILE
from trainables.trial import run_trial

SOURCE_DIRS = ("pruning", "trainables", "sweeps", "analysis", "benchmarks")

# ---- fuzzing the sweep planner ---------------------------------------------------------------

_KEYS = [
    "name", "description", "base", "grid", "experiments", "resources", "max_failures",
    "share_dense", "max_concurrent_trials", "label", "config", "cpu", "gpu", "method", "seed",
    "data", "model", "train", "prune", "imp", "epochs", "width", "rounds", "rate", "rewind",
    "target_sparsity", "scorer", "schedule", "seed.x", "train.epochs", "prune.target_sparsity",
    "imp.dense_checkpoint", "dense_model", "gmp", "rigl", "snip", "bogus",
]
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-3, 200)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(["", "x", "dense", "imp", "snip", "gmp", "rigl", "digits", "epoch:1",
                       "init", "magnitude"])
    | st.text(max_size=5)
)
_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from(_KEYS), children, max_size=4),
    max_leaves=12,
)
_sweeps = st.dictionaries(st.sampled_from(_KEYS), _values, max_size=6) | st.fixed_dictionaries(
    {"name": st.sampled_from(["fuzz", "a b", ""])},
    optional={
        "base": st.dictionaries(st.sampled_from(_KEYS), _values, max_size=4),
        "grid": st.dictionaries(st.sampled_from(_KEYS), st.lists(_scalars, max_size=3)),
        "experiments": st.lists(st.dictionaries(st.sampled_from(_KEYS), _values), max_size=3),
        "max_failures": _scalars,
    },
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=_sweeps, overrides=st.lists(st.sampled_from(
    ["seed=1", "train.epochs=x", "max_failures=-1", "bogus.key=1", "name=", "=", "noequals"]
), max_size=2))
def test_plan_sweep_raises_only_prunetune_errors(raw, overrides, tmp_path_factory):
    try:
        plan_sweep(raw, "fuzz.yaml", overrides, launch_dir=Path("/tmp"))
    except PrunetuneError as error:
        assert "\n" not in str(error).strip(), str(error)


# ---- one-line refusals -----------------------------------------------------------------------


def _one_line(process) -> str:
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1, process.stderr
    return lines[0]


@pytest.mark.slow
def test_plot_on_directory_without_results_exits_2(tmp_path):
    (tmp_path / "empty").mkdir()
    process = run_plot(str(tmp_path / "empty"))
    assert process.returncode == 2
    assert "empty" in _one_line(process)


@pytest.mark.slow
def test_unwritable_output_refused_before_ray(data_root, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the output directory would go")
    sweep = write_sweep(tmp_path / "s.yaml", name="s", base=tiny_base(data_root))
    process = run_sweep(str(sweep), "--storage", str(blocker / "out"), timeout=120)
    assert process.returncode == 2, process.stdout + process.stderr
    line = _one_line(process)
    assert line.startswith("run_sweep: error:") and str(blocker) in line
    assert "trials ->" not in process.stdout  # refused before Ray started


@pytest.fixture(scope="module")
def dense_checkpoint(tiny_trial, tmp_path_factory) -> Path:
    raw = tiny_trial(method="dense", train={"max_eval_batches": 2, "epochs": 1})
    directory = tmp_path_factory.mktemp("dense")
    run_trial(parse_trial_config(raw), DirectoryReporter(directory), cpus=1)
    (checkpoint,) = directory.glob("round_*")
    return checkpoint


@pytest.mark.slow
@pytest.mark.parametrize("problem", ["missing", "other_recipe", "truncated"])
def test_bad_dense_checkpoint_refused_before_ray(data_root, dense_checkpoint, tmp_path, problem):
    checkpoint = dense_checkpoint
    seed = 0
    if problem == "missing":
        checkpoint = tmp_path / "nowhere"
    elif problem == "other_recipe":
        seed = 1
    else:
        checkpoint = tmp_path / "copy"
        shutil.copytree(dense_checkpoint, checkpoint)
        data = (dense_checkpoint / TENSORS_FILE).read_bytes()
        (checkpoint / TENSORS_FILE).write_bytes(data[: len(data) // 3])
    train = {"max_eval_batches": 2, "epochs": 1}
    sweep = write_sweep(
        tmp_path / "s.yaml",
        name="s",
        base=tiny_base(data_root, method="imp", seed=seed, train=train, imp={"rounds": 1},
                       dense_model={"checkpoint": str(checkpoint)}),
    )
    process = run_sweep(str(sweep), "--storage", str(tmp_path / "out"), timeout=120)
    assert process.returncode == 2, process.stdout + process.stderr
    line = _one_line(process)
    assert "dense_model.checkpoint" in line and str(checkpoint) in line, line
    assert "trials ->" not in process.stdout


def test_matching_dense_checkpoint_passes_preflight(data_root, dense_checkpoint, tiny_trial):
    from sweeps.plan import plan_sweep as plan
    from sweeps.run_sweep import _check_dense_checkpoints

    raw = tiny_base(data_root, method="imp", train={"max_eval_batches": 2, "epochs": 1},
                    imp={"rounds": 1}, dense_model={"checkpoint": str(dense_checkpoint)})
    _check_dense_checkpoints(plan({"name": "ok", "base": raw}, "ok.yaml"))


# ---- safety ----------------------------------------------------------------------------------


def _calls(attribute: str, module: str) -> list[tuple[Path, ast.Call]]:
    found = []
    for directory in SOURCE_DIRS:
        for path in sorted((ROOT / directory).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == attribute
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == module
                ):
                    found.append((path, node))
    return found


def test_every_torch_load_uses_weights_only():
    calls = _calls("load", "torch")
    assert calls, "expected torch.load calls in the source tree"
    for path, call in calls:
        keywords = {k.arg: k.value for k in call.keywords}
        value = keywords.get("weights_only")
        assert isinstance(value, ast.Constant) and value.value is True, (
            f"{path}:{call.lineno}: torch.load without weights_only=True"
        )
    # And no spelling the AST walk would miss (e.g. `from torch import load`).
    for directory in SOURCE_DIRS:
        for path in (ROOT / directory).rglob("*.py"):
            assert "from torch import load" not in path.read_text(), path


def test_yaml_is_only_safe_loaded():
    for name in ("load", "unsafe_load", "full_load", "load_all"):
        assert _calls(name, "yaml") == [], f"yaml.{name} used"
    assert _calls("safe_load", "yaml"), "expected yaml.safe_load somewhere"


def test_run_sweep_starts_local_ray_without_dashboard(monkeypatch):
    import ray

    from sweeps import run_sweep

    seen: list[dict] = []
    monkeypatch.setattr(ray, "init", lambda **kwargs: seen.append(kwargs))
    assert run_sweep._start_ray(None) is True
    assert seen and seen[0].get("include_dashboard") is False, seen
    assert json.dumps(seen[0], default=str)  # plain settings only


def test_local_ray_retries_its_object_store_every_100_ms(monkeypatch):
    """A starting raylet that reaches its own object store too early retries after
    `raylet_client_connect_timeout_milliseconds`, 1000 ms by Ray's default (ray_config_def.h:
    10 attempts x 1000 ms). run_sweep asks for 100 ms retries with the same 10 s in all, and
    leaves the pair alone when the user has set either."""
    import ray

    from sweeps import run_sweep

    timeout, attempts = ("RAY_raylet_client_connect_timeout_milliseconds",
                         "RAY_raylet_client_num_connect_attempts")
    seen: list[dict] = []
    monkeypatch.setattr(ray, "init", lambda **_: seen.append(
        {key: os.environ.get(key) for key in (timeout, attempts)}))
    monkeypatch.delenv(timeout, raising=False)
    monkeypatch.delenv(attempts, raising=False)
    run_sweep._start_ray(None)
    assert int(seen[0][timeout]) == 100
    assert int(seen[0][timeout]) * int(seen[0][attempts]) == 10 * 1000
    assert timeout not in os.environ and attempts not in os.environ  # only for Ray's start

    monkeypatch.setenv(attempts, "20")
    run_sweep._start_ray(None)
    assert seen[1] == {timeout: None, attempts: "20"}


def test_a_local_rays_workers_take_their_fair_share_of_the_cpu(monkeypatch):
    """Ray starts its workers at niceness 15, where a busy machine leaves a trial a few percent
    of a core (35x slower epochs beside two busy loops): a local Ray is started with
    RAY_worker_niceness=0, only while it starts, and a user's own setting wins."""
    import ray

    from sweeps import run_sweep

    key = "RAY_worker_niceness"
    seen: list[str | None] = []
    monkeypatch.setattr(ray, "init", lambda **_: seen.append(os.environ.get(key)))
    monkeypatch.delenv(key, raising=False)
    run_sweep._start_ray(None)
    assert seen == ["0"] and key not in os.environ
    monkeypatch.setenv(key, "5")
    run_sweep._start_ray(None)
    assert seen[1] == "5"


def test_a_trial_at_a_raised_niceness_says_so_on_its_start_up_line(monkeypatch):
    from trainables.config import TrainConfig
    from trainables.runtime import resolve_runtime

    runtime = resolve_runtime(TrainConfig(device="cpu"), cpus=1)
    monkeypatch.setattr(os, "getpriority", lambda which, who: 0)
    assert "niceness" not in runtime.describe()
    monkeypatch.setattr(os, "getpriority", lambda which, who: 15)
    line = runtime.describe()
    assert "niceness 15" in line and "RAY_worker_niceness=0" in line and "\n" not in line
