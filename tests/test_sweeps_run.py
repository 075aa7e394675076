"""End-to-end tests of `sweeps/run_sweep.py`, launched as a subprocess the way a user runs it.

Every sweep is tiny (digits, width-4 ResNet, 2 batches a phase) and one finished grid sweep is
shared by several tests. Expected trial sets and counts are written out by hand from the sweep
files, not taken from `sweeps.spec`.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from sweep_helpers import kill_sweep_when, run_sweep, subprocess_env

from trainables.schema import ROUND_CHECKPOINT
from trainables.trial_store import round_dirs

REPO = Path(__file__).resolve().parents[1]

FLOWERS_ROOT = (REPO / ".." / "shared" / "data").resolve()
TINY_BASE = {
    "data": {"name": "digits"},
    "model": {"name": "resnet18_cifar", "width": 4},
    "train": {"epochs": 1, "batch_size": 32, "max_batches": 2, "max_eval_batches": 2},
}


def write_sweep(directory: Path, name: str, **fields: Any) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "base": TINY_BASE, **fields}))
    return path


def trial_dirs(experiment: Path) -> list[Path]:
    return sorted(path.parent for path in experiment.glob("*/params.json"))


def rows(trial_dir: Path, row_type: str = "round") -> list[dict[str, Any]]:
    path = trial_dir / "result.json"
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [row for row in lines if row.get("row_type") == row_type]


def trial_config(trial_dir: Path) -> dict[str, Any]:
    return json.loads((trial_dir / "params.json").read_text())["trial"]


def line_counts(experiment: Path) -> dict[str, int]:
    return {
        d.name: len((d / "result.json").read_text().splitlines()) for d in trial_dirs(experiment)
    }


def finished(trial_dir: Path) -> bool:
    return any(row.get("final_round") for row in rows(trial_dir))


# ---- one shared grid sweep ---------------------------------------------------------------------

GRID_SWEEP = {
    "grid": {"seed": [0, 1]},
    "experiments": [
        {"label": "dense", "config": {"method": "dense"}},
        {
            "label": "imp",
            "config": {
                "method": "imp",
                "imp": {"schedule": "iterative", "rounds": 2, "rate": 0.5, "retrain_epochs": 1},
            },
        },
        {
            "label": "snip",
            "config": {"method": "snip"},
            "grid": {"prune.target_sparsity": [0.5, 0.8]},
        },
    ],
    "resources": {"cpu": 1, "gpu": 0},
}
# (label, seed, sparsity target or None) -> the rounds a trial reports, written out by hand:
# dense trains once (round 0), IMP reports round 0 then one round per pruning step, SNIP prunes
# before training and reports its single round as round 1.
EXPECTED_GRID = {
    ("dense", 0, None): [0],
    ("dense", 1, None): [0],
    ("imp", 0, None): [0, 1, 2],
    ("imp", 1, None): [0, 1, 2],
    ("snip", 0, 0.5): [1],
    ("snip", 0, 0.8): [1],
    ("snip", 1, 0.5): [1],
    ("snip", 1, 0.8): [1],
}


@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("grid")
    path = write_sweep(work, "grid", **GRID_SWEEP)
    started = time.time()
    proc = run_sweep(str(path), "--storage", str(work / "out"), cwd=work)
    experiment = work / "out" / "grid"
    return {
        "proc": proc,
        "path": path,
        "work": work,
        "experiment": experiment,
        "seconds": time.time() - started,
        "counts": line_counts(experiment) if experiment.is_dir() else {},
    }


@pytest.mark.slow
def test_the_experiment_state_holds_no_copy_of_the_plan_per_trial(grid_sweep) -> None:
    """Tune's experiment state pickles each trial's name creators, and keeps a record of each
    checkpoint it is told of: neither may grow with the number of trials or of checkpoints.
    The name creators (run_sweep runs as `__main__`, whose classes cloudpickle copies) once
    carried every trial's config, in every trial."""
    (state_file,) = grid_sweep["experiment"].glob("experiment_state-*.json")
    trials = json.loads(state_file.read_text())["trial_data"]
    assert len(trials) == len(EXPECTED_GRID)
    for described, run in trials:
        fields = json.loads(described)
        for creator in ("trial_name_creator", "trial_dirname_creator"):
            size = len(json.dumps(fields[creator]))
            assert size < 1000, (creator, size)
        # One checkpoint on record per trial (CheckpointConfig(num_to_keep=1)), however many
        # it reported: the state Tune pickled names one checkpoint directory.
        pickled = bytes.fromhex(json.loads(run)["checkpoint_manager"]["value"])
        assert len(set(re.findall(rb"checkpoint_\d{6}", pickled))) == 1


def _point(trial_dir: Path) -> tuple[str, int, float | None]:
    config = trial_config(trial_dir)
    label = trial_dir.name.split("_s")[0]
    sparsity = config["prune"]["target_sparsity"] if config["method"] == "snip" else None
    return label, config["seed"], sparsity


@pytest.mark.slow
def test_grid_sweep_one_trial_per_point_and_one_row_per_round(grid_sweep: dict[str, Any]) -> None:
    proc, experiment = grid_sweep["proc"], grid_sweep["experiment"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    dirs = trial_dirs(experiment)
    assert sorted(map(_point, dirs), key=str) == sorted(EXPECTED_GRID, key=str)
    for trial_dir in dirs:
        rounds = [row["round"] for row in rows(trial_dir)]
        assert sorted(rounds) == EXPECTED_GRID[_point(trial_dir)], trial_dir.name
        assert len(list(trial_dir.glob("events.out.tfevents.*"))) >= 1, trial_dir.name
        # The config is in params.json once, not copied into every row (sweeps/json_rows.py).
        assert trial_config(trial_dir)["seed"] in (0, 1)
        assert not any("config" in row for row in rows(trial_dir) + rows(trial_dir, "epoch"))
    summary = json.loads((experiment / "prunetune_sweep.json").read_text())
    assert len(summary["trials"]) == len(EXPECTED_GRID)
    # The code the sweep ran: this checkout's commit, as git itself names it.
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                          text=True)
    if head.returncode == 0:
        assert summary["source"]["commit"] == head.stdout.strip()
    assert f"python sweeps/tensorboard_view.py {experiment}\n" in proc.stdout
    assert f"python analysis/plot.py {experiment}\n" in proc.stdout


@contextlib.contextmanager
def tensorboard_on(directory: Path) -> Any:
    """`python sweeps/tensorboard_view.py DIR --port 0` running; yields its URL; stopped after."""
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "sweeps" / "tensorboard_view.py"), str(directory), "--port",
         "0"], env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()  # printed once the server listens
        assert " at http://" in line, line
        yield line.split(" at ", 1)[1].split()[0]
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0


def tensorboard_get(url: str, route: str, body: dict[str, Any] | None = None,
                    ready: Any = bool) -> Any:
    """TensorBoard's answer at `route` (a POST of `body`, if given) once `ready(answer)`:
    TensorBoard reads the event files in the background after it starts."""
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + route, data=data, headers={
        "Content-Type": "application/json", "X-XSRF-Protected": "1"})
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError:
            answer = None
        if (answer is not None and ready(answer)) or time.monotonic() > deadline:
            return answer
        time.sleep(0.5)


@pytest.mark.slow
def test_tensorboard_serves_named_curves_and_a_session_per_trial(
        grid_sweep: dict[str, Any]) -> None:
    experiment = grid_sweep["experiment"]
    assert grid_sweep["proc"].returncode == 0, grid_sweep["proc"].stderr[-3000:]
    trials = {d.name: d for d in trial_dirs(experiment)}
    (imp,) = [d for d in trials.values() if _point(d) == ("imp", 0, None)]
    with tensorboard_on(experiment) as url:
        runs = tensorboard_get(url, "data/runs", ready=lambda runs: set(runs) == set(trials))
        assert set(runs) == set(trials)  # a run per trial, nothing else
        tags = tensorboard_get(url, "data/plugin/scalars/tags")[imp.name]
        assert {"train/loss", "train/acc", "val/acc", "lr", "train/round", "round/test_acc",
                "round/sparsity", "round/params", "round/flops", "sparsity/test_acc"} <= set(tags)
        assert not [tag for tag in tags if tag.startswith("ray/")]
        # Epochs on one count across IMP's rounds, with the rows' values.
        epochs = rows(imp, "epoch")
        curve = tensorboard_get(url, f"data/plugin/scalars/scalars?run={imp.name}&tag=val/acc")
        assert [point[1] for point in curve] == list(range(len(epochs)))
        assert [point[2] for point in curve] == pytest.approx([r["val_acc"] for r in epochs])
        # Accuracy on sparsity, in basis points: IMP dense, then at 50% and 75%.
        curve = tensorboard_get(url, f"data/plugin/scalars/scalars?run={imp.name}"
                                     "&tag=sparsity/test_acc")
        assert [point[1] for point in curve] == [0, 5000, 7500]
        assert [point[2] for point in curve] == pytest.approx([r["test_acc"] for r in rows(imp)])
        # HParams: what the sweep varies; each trial a session, its final round's numbers.
        info = tensorboard_get(url, "data/plugin/hparams/experiment", {"experimentName": ""})
        assert {h["name"] for h in info["hparamInfos"]} == {"method", "target_sparsity", "seed"}
        assert [m["name"]["tag"] for m in info["metricInfos"]] == [
            "round/test_acc", "round/sparsity", "round/params", "round/speedup_b1",
            "round/val_acc"]
        groups = tensorboard_get(url, "data/plugin/hparams/session_groups", {
            "experimentName": "", "startIndex": 0, "sliceSize": 100, "allowedStatuses": [
                "STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]},
            ready=lambda answer: answer["totalSize"] == len(trials))["sessionGroups"]
        assert {group["name"] for group in groups} == set(trials)
        for group in groups:
            trial_dir = trials[group["name"]]
            final = rows(trial_dir)[-1]
            assert group["hparams"]["method"] == final["method"]
            assert group["hparams"]["seed"] == final["seed"]
            # The sparsity the trial's last round aimed at (IMP: 1 - 0.5^2).
            assert group["hparams"]["target_sparsity"] == pytest.approx(final["target_sparsity"])
            assert [s["status"] for s in group["sessions"]] == ["STATUS_SUCCESS"]
            metrics = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
            assert metrics["round/test_acc"] == pytest.approx(final["test_acc"], abs=1e-6)
            assert metrics["round/sparsity"] == pytest.approx(final["sparsity"], abs=1e-6)


@pytest.mark.slow
def test_plot_renders_the_real_digits_sweep(grid_sweep: dict[str, Any]) -> None:
    experiment = grid_sweep["experiment"]
    proc = subprocess.run(
        [sys.executable, str(REPO / "analysis" / "plot.py"), str(experiment)],
        capture_output=True, text=True, env=subprocess_env(), timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("results.csv", "summary.csv", "summary.md", "accuracy_vs_params.png",
                 "accuracy_vs_params.svg"):
        assert (experiment / name).is_file(), name
    assert (experiment / "accuracy_vs_params.png").stat().st_size > 10_000
    # One results row per (trial, round), counted from EXPECTED_GRID by hand: 2 + 6 + 4.
    results = (experiment / "results.csv").read_text().strip().splitlines()
    assert len(results) - 1 == sum(len(rounds) for rounds in EXPECTED_GRID.values()) == 12
    summary = (experiment / "summary.md").read_text()
    assert "dense" in summary and "SNIP" in summary and "IMP" in summary


@pytest.mark.slow
def test_trial_dir_names_are_readable(grid_sweep: dict[str, Any]) -> None:
    names = {d.name.rsplit("_", 2)[0] for d in trial_dirs(grid_sweep["experiment"])}
    assert names == {
        "dense_s0",
        "dense_s1",
        "imp_s0_p0.5x2",
        "imp_s1_p0.5x2",
        "snip_s0_sp0.5",
        "snip_s0_sp0.8",
        "snip_s1_sp0.5",
        "snip_s1_sp0.8",
    }


@pytest.mark.slow
def test_imp_reuses_the_dense_model_of_its_seed(grid_sweep: dict[str, Any]) -> None:
    experiment = grid_sweep["experiment"]
    trained_dense = 0
    for trial_dir in trial_dirs(experiment):
        config = trial_config(trial_dir)
        if config["method"] == "snip":
            continue
        round0 = [row for row in rows(trial_dir) if row["round"] == 0]
        assert len(round0) == 1, trial_dir.name
        if config["method"] == "imp":
            assert round0[0].get("reused_dense") is True, trial_dir.name
        if config["method"] in ("dense", "imp"):
            # Round 0 references the shared dense model: its checkpoint holds no tensors.
            index = json.loads((trial_dir / round0[0][ROUND_CHECKPOINT] / "index.json")
                               .read_text())
            holders = {meta["in"] for meta in index["tensors"].values()}
            assert len(holders) == 1 and holders.pop().startswith("../dense_cache/"), holders
        if config["method"] in ("dense", "imp") and not round0[0].get("reused_dense"):
            trained_dense += 1
    seeds = 2
    assert trained_dense == seeds
    cached = [p for p in (experiment / "dense_cache").iterdir() if p.suffix != ".lock"]
    assert len(cached) == seeds


@pytest.mark.slow
def test_same_sweep_again_reruns_nothing_and_a_different_one_is_refused(
    grid_sweep: dict[str, Any],
) -> None:
    work, path, experiment = grid_sweep["work"], grid_sweep["path"], grid_sweep["experiment"]
    assert grid_sweep["proc"].returncode == 0
    again = run_sweep(str(path), "--storage", str(work / "out"), cwd=work)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already there" in again.stdout
    assert line_counts(experiment) == grid_sweep["counts"]

    different = run_sweep(
        str(path), "--storage", str(work / "out"), "--set", "train.lr=0.5", cwd=work
    )
    assert different.returncode == 2
    assert "another recipe" in different.stderr and "train.lr: " in different.stderr
    assert "Traceback" not in different.stderr
    assert line_counts(experiment) == grid_sweep["counts"]


# ---- interrupted and resumed -------------------------------------------------------------------


@pytest.mark.slow
def test_killed_sweep_resumes_without_rerunning_finished_trials(tmp_path: Path) -> None:
    path = write_sweep(
        tmp_path,
        "killed",
        base={**TINY_BASE, "train": {**TINY_BASE["train"], "epochs": 6, "max_batches": 40}},
        grid={"seed": [0, 1, 2], "prune.target_sparsity": [0.5, 0.8]},
        experiments=[{"label": "snip", "config": {"method": "snip"}}],
        max_concurrent_trials=1,
    )
    experiment = tmp_path / "out" / "killed"
    kill_sweep_when(lambda: any(finished(d) for d in trial_dirs(experiment)),
                    str(path), "--storage", str(tmp_path / "out"), cwd=tmp_path)

    done = {d.name for d in trial_dirs(experiment) if finished(d)}
    before = {
        name: (
            line_counts(experiment)[name],
            # The round checkpoints: the killed sweep never ended, so Ray's checkpoint naming
            # the newest slot is still there; the resumed sweep's end removes it.
            sorted(p.name for p in round_dirs(experiment / name)),
        )
        for name in done
    }
    assert 1 <= len(done) < 6, f"kill the sweep while trials remain ({len(done)} finished)"

    resumed = run_sweep(str(path), "--storage", str(tmp_path / "out"), "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    dirs = trial_dirs(experiment)
    assert len(dirs) == 6
    for trial_dir in dirs:
        assert finished(trial_dir), trial_dir.name
        round_rows = Counter(row["round"] for row in rows(trial_dir))
        assert all(count == 1 for count in round_rows.values()), (trial_dir.name, round_rows)
    for name, (count, checkpoints) in before.items():
        assert line_counts(experiment)[name] == count, name
        # The same round checkpoints, and nothing else left beside them.
        assert sorted(p.name for p in (experiment / name).iterdir() if p.is_dir()) == checkpoints


# ---- multi-node ----------------------------------------------------------------------------


@pytest.fixture
def two_node_cluster() -> Any:
    cluster_utils = pytest.importorskip("ray.cluster_utils")
    cluster = cluster_utils.Cluster(
        initialize_head=True,
        connect=False,
        head_node_args={"num_cpus": 1, "include_dashboard": False},
    )
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        yield cluster
    finally:
        cluster.shutdown()


@pytest.mark.slow
def test_two_node_cluster_spreads_trials_and_needs_shared_storage(
    tmp_path: Path, two_node_cluster: Any
) -> None:
    path = write_sweep(
        tmp_path,
        "cluster",
        grid={"seed": [0, 1, 2, 3]},
        experiments=[{"label": "snip", "config": {"method": "snip"}}],
    )
    address = two_node_cluster.address
    refused = run_sweep(str(path), "--address", address, cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "--storage" in refused.stderr and "2 nodes" in refused.stderr
    assert not (tmp_path / "output").exists()

    proc = run_sweep(
        str(path), "--address", address, "--storage", str(tmp_path / "shared"), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    dirs = trial_dirs(tmp_path / "shared" / "cluster")
    assert len(dirs) == 4
    nodes = {row["node_id"] for d in dirs for row in rows(d)}
    alive = {node["NodeID"] for node in _cluster_nodes(address)}
    assert len(nodes) == 2 and nodes <= alive


def _cluster_nodes(address: str) -> list[dict[str, Any]]:
    script = (
        f"import json, ray; ray.init(address={address!r}, log_to_driver=False); "
        "print(json.dumps([n for n in ray.nodes() if n['Alive']], default=str))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


# ---- shipped sweep files -------------------------------------------------------------------

FLOWERS_SETTINGS = [
    f"data.root={FLOWERS_ROOT}",
    "resources.gpu=0",
    "resources.cpu=1",
    "model.pretrained=false",
    "data.image_size=32",
    "model.width=4",
]
# Trials per shipped file, counted by hand from the YAML: experiments x their grids.
SHIPPED_TRIALS = {
    "quickstart.yaml": 3 * (1 + 1 + 3 + 3),
    "methods_digits.yaml": 3 * (1 + 1 + 6 * 3),  # dense, IMP, then six methods at 3 targets
    "structured_digits.yaml": 3 * 4,  # dense, IMP, channels (L1), random channels
    "dense.yaml": 3,
    "imp_grid.yaml": 3 * (1 + 6 + 1),
    "snip_grid.yaml": 3 * 6 * 5,
    "compare.yaml": 3 * (1 + 6 + 6),
    "reproduce_seed_table.yaml": 1 + 4,
    # 3 seeds x (dense + IMP + 4 random + 4 SNIP targets); smoke-run in test_sweeps_datasets.py.
    "lth_cifar10_resnet20.yaml": 3 * (1 + 1 + 4 + 4),
    "lth_cifar10_vgg16.yaml": 3 * (1 + 1 + 4 + 4),
    # 3 seeds x (dense + IMP + 5 methods at 3 levels + dense at IMP's budget); smoke-run in
    # test_flowers_cpu.py.
    "flowers_cpu.yaml": 3 * (1 + 1 + 5 * 3 + 1),
    # 2 seeds x (dense + IMP + SNIP at one level), after a search of 3 units
    "tuned_digits.yaml": 2 * 3,
    # 3 seeds x (dense + IMP), each trial on 8 data-parallel GPU workers
    "flowers_8gpu.yaml": 3 * 2,
}


def _sets(settings: list[str]) -> list[str]:
    return [arg for setting in settings for arg in ("--set", setting)]


def test_every_shipped_sweep_file_is_listed() -> None:
    shipped = {p.name for p in (REPO / "sweeps").glob("*.yaml")} - {"cluster.yaml"}
    assert shipped == set(SHIPPED_TRIALS)


@pytest.mark.parametrize("smoke", [False, True], ids=["full", "smoke"])
@pytest.mark.parametrize("name", sorted(SHIPPED_TRIALS))
def test_dry_run_expands_every_shipped_file(
    name: str,
    smoke: bool,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sweeps import run_sweep as module

    monkeypatch.setattr(module, "_start_ray", _no_ray)
    settings = [] if name == "quickstart.yaml" else FLOWERS_SETTINGS
    argv = [
        str(REPO / "sweeps" / name),
        "--dry-run",
        "--storage",
        str(tmp_path / "out"),
        *(["--smoke"] if smoke else []),
        *_sets(settings),
    ]
    assert module.main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    count = SHIPPED_TRIALS[name]
    assert f"dry run: {count} trials valid" in out
    assert sum(1 for line in out.splitlines() if line.startswith("  ")) == count
    assert not (tmp_path / "out").exists()


def _no_ray(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("Ray was started")


@pytest.mark.slow
def test_quickstart_smoke_runs_on_digits(tmp_path: Path) -> None:
    proc = run_sweep(
        str(REPO / "sweeps" / "quickstart.yaml"),
        "--smoke",
        "--set",
        "model.width=4",
        "--storage",
        str(tmp_path / "out"),
        cwd=tmp_path,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    dirs = trial_dirs(tmp_path / "out" / "quickstart-smoke")
    assert len(dirs) == SHIPPED_TRIALS["quickstart.yaml"]
    assert all(finished(d) for d in dirs)


def smoke_one_seed(sweep_file: str, tmp_path: Path) -> tuple[Path, list[Path]]:
    """Run a shipped 3-seed sweep under --smoke with one seed and a narrow model; every planned
    trial must finish. The full grid is planned by test_sweeps_layers.py."""
    proc = run_sweep(
        str(REPO / "sweeps" / sweep_file), "--smoke", "--set", "grid.seed=[0]",
        "--set", "model.width=4", "--storage", str(tmp_path / "out"), cwd=tmp_path, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    experiment = tmp_path / "out" / f"{Path(sweep_file).stem}-smoke"
    dirs = trial_dirs(experiment)
    assert len(dirs) == SHIPPED_TRIALS[sweep_file] // 3
    assert all(finished(d) for d in dirs)
    from invariants import check_finished_layout

    assert check_finished_layout(experiment) >= len(dirs)  # every trial has a round 0
    return experiment, dirs


@pytest.mark.slow
def test_methods_comparison_smoke_runs_on_digits(tmp_path: Path) -> None:
    smoke_one_seed("methods_digits.yaml", tmp_path)


@pytest.mark.slow
def test_structured_sweep_smoke_runs_on_digits_and_plots_latency(tmp_path: Path) -> None:
    from invariants import check_experiment

    experiment, dirs = smoke_one_seed("structured_digits.yaml", tmp_path)
    # Structured checkpoints written through Ray Tune rebuild and account exactly: dense has one
    # round, each pruning trial its dense round 0 and 3 pruning rounds.
    assert check_experiment(experiment) == 1 + 4 * (len(dirs) - 1)
    for trial_dir in dirs:
        for row in rows(trial_dir):
            assert row["latency_ms_b1"] > 0 and row["latency_ms_b64"] > 0, trial_dir.name
    plot = subprocess.run([sys.executable, str(REPO / "analysis" / "plot.py"), str(experiment)],
                          capture_output=True, text=True, timeout=120)
    assert plot.returncode == 0, plot.stderr
    assert (experiment / "accuracy_vs_speedup.png").is_file()
    assert "b64 ms (x dense)" in (experiment / "summary.md").read_text()


@pytest.mark.slow
@pytest.mark.skipif(
    not (FLOWERS_ROOT / "flowers-102").is_dir(),
    reason=f"no Flowers-102 copy at {FLOWERS_ROOT / 'flowers-102'}",
)
@pytest.mark.parametrize(
    "name",
    ["reproduce_seed_table.yaml", "dense.yaml", "compare.yaml", "imp_grid.yaml", "snip_grid.yaml"],
)
def test_flowers_sweep_files_smoke_run_on_the_shared_copy(name: str, tmp_path: Path) -> None:
    settings = [*FLOWERS_SETTINGS, f"data.cache_dir={tmp_path / 'cache'}"]
    proc = run_sweep(
        str(REPO / "sweeps" / name),
        "--smoke",
        *_sets(settings),
        "--storage",
        str(tmp_path / "out"),
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (experiment,) = [path for path in (tmp_path / "out").iterdir() if path.is_dir()]
    assert experiment.name.endswith("-smoke")
    dirs = trial_dirs(experiment)
    assert len(dirs) == SHIPPED_TRIALS[name]
    assert all(finished(d) for d in dirs)


# ---- bad input is refused before Ray starts ------------------------------------------------

TINY_YAML = "base: {data: {name: digits}, model: {name: resnet18_cifar, width: 4}}\n"
BAD_SWEEPS = {
    # case: (file text, words the one-line message must contain)
    "unknown key": (
        "name: x\n" + TINY_YAML + "gird: {seed: [0]}\n",
        ["'gird'", "did you mean 'grid'"],
    ),
    "wrong type": ("name: x\n" + TINY_YAML + "max_failures: many\n", ["max_failures"]),
    "sparsity 1.0 in an experiment grid": (
        "name: x\n"
        + TINY_YAML
        + "experiments: [{config: {method: snip}, grid: {prune.target_sparsity: [0.5, 1.0]}}]\n",
        ["experiments[0]", "prune.target_sparsity", "1.0"],
    ),
    "unknown method": (
        "name: x\n" + TINY_YAML + "experiments: [{config: {method: lottery}}]\n",
        ["method", "lottery"],
    ),
    "unknown dataset": ("name: x\nbase: {data: {name: mnist}}\n", ["data.name", "mnist"]),
    "unknown logger": (
        "name: x\n" + TINY_YAML + "loggers: [csv, tensorbord]\n",
        ["loggers", "unknown logger 'tensorbord' (did you mean 'tensorboard'?)"],
    ),
    "unknown model": ("name: x\nbase: {model: {name: vgg}}\n", ["model.name", "vgg"]),
    "old spelling of a scorer": (
        "name: x\n"
        + TINY_YAML
        + "experiments: [{config: {method: snip, prune: {scorer: random}}}]\n",
        ["experiments[0].config", "prune.scorer", "was renamed", "method: random"],
    ),
    "empty grid axis": ("name: x\n" + TINY_YAML + "grid: {seed: []}\n", ["seed", "no values"]),
    "empty experiment grid axis": (
        "name: x\n"
        + TINY_YAML
        + "experiments: [{config: {method: snip}, grid: {prune.target_sparsity: []}}]\n",
        ["experiments[0].grid", "prune.target_sparsity"],
    ),
    "malformed YAML": ("name: x\nbase: {data: [name: digits\n", ["malformed YAML", "line"]),
    "GPU on a GPU-less machine": (
        "name: x\n" + TINY_YAML + "resources: {gpu: 1}\n",
        ["resources.gpu"],
    ),
    "not a sweep file": ("cluster_name: prunetune\nmax_workers: 2\n", ["'name'"]),
    "missing dataset, no download": (
        "name: x\nbase: {data: {name: flowers102, root: no_such_data_dir, download: false}}\n",
        ["no_such_data_dir", "flowers-102", "imagelabels.mat"],
    ),
}


def _run_in_process(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str]:
    from sweeps import run_sweep as module

    monkeypatch.setattr(module, "_start_ray", _no_ray)
    code = module.main(argv)
    return code, capsys.readouterr().err


def _assert_refused(code: int, err: str, words: list[str]) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("run_sweep: error: ")
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.mark.parametrize("case", sorted(BAD_SWEEPS))
def test_bad_sweep_file_is_refused_before_ray(
    case: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if case == "GPU on a GPU-less machine":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    text, words = BAD_SWEEPS[case]
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code, err = _run_in_process(
        [str(path), "--storage", str(tmp_path / "out")], capsys, monkeypatch
    )
    _assert_refused(code, err, words)
    assert not (tmp_path / "out").exists()
    assert not (Path.cwd() / "no_such_data_dir").exists()  # nothing made under a missing root


def test_missing_file_unwritable_storage_and_nothing_to_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nope.yaml"
    code, err = _run_in_process([str(missing)], capsys, monkeypatch)
    _assert_refused(code, err, [str(missing), "cannot read"])

    good = write_sweep(tmp_path, "good", experiments=[{"config": {"method": "dense"}}])
    regular_file = tmp_path / "a-file"
    regular_file.write_text("")
    # Root may write anywhere, so "unwritable" here is a path below a regular file.
    code, err = _run_in_process(
        [str(good), "--storage", str(regular_file / "out")], capsys, monkeypatch
    )
    _assert_refused(code, err, [str(regular_file), "not a directory"])

    code, err = _run_in_process(
        [str(good), "--storage", str(tmp_path / "out"), "--resume"], capsys, monkeypatch
    )
    _assert_refused(code, err, ["--resume", "no experiment"])
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_bad_input_as_a_user_sees_it(tmp_path: Path) -> None:
    """The real command line: exit 2, one line, no traceback, nothing written, Ray not started
    (Ray would take longer than this and create a session directory)."""
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_SWEEPS["unknown key"][0])
    sessions = set(Path("/tmp/ray").glob("session_*"))
    started = time.time()
    proc = run_sweep(str(path), "--storage", str(tmp_path / "out"), cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "did you mean 'grid'" in proc.stderr
    assert proc.stdout == ""
    assert not (tmp_path / "out").exists()
    new_sessions = set(Path("/tmp/ray").glob("session_*")) - sessions
    assert not [s for s in new_sessions if s.stat().st_mtime >= started]
