"""End-to-end sweeps on the new datasets and models, and the experiment-tracking loggers.

Data are written by the tests in torchvision's formats (dataset_files.py): CIFAR-10 pickles and
an ImageFolder tree. Sweeps run through `sweeps/run_sweep.py` as a user runs them, under
`--smoke`. MLflow is read back from its local SQLite store with MLflow's own client; W&B runs
offline (WANDB_MODE=offline) and is read back from the files it writes.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from dataset_files import write_cifar, write_image_tree
from sweep_helpers import run_sweep, subprocess_env

REPO = Path(__file__).resolve().parents[1]
SMOKE = ["--smoke", "--set", "resources.gpu=0", "--set", "resources.cpu=1"]


def trial_dirs(experiment: Path) -> list[Path]:
    return sorted(path.parent for path in experiment.glob("*/params.json"))


def result_rows(trial_dir: Path) -> list[dict[str, Any]]:
    lines = (trial_dir / "result.json").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def final_round(trial_dir: Path) -> dict[str, Any]:
    (row,) = [r for r in result_rows(trial_dir) if r.get("row_type") == "round"
              and r.get("final_round")]
    return row


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sweep-data")
    write_cifar(root / "cifar", "cifar10", train_per_file=16, test=24)  # 80 train images
    write_image_tree(root / "folder", ["ant", "bee", "cat", "dog"], per_class=10)
    return {"cifar": root / "cifar", "folder": root / "folder"}


MODELS = [{"name": "resnet20", "width": 4}, {"name": "torchvision:mobilenet_v3_small"}]


@pytest.mark.slow
def test_new_data_and_models_run_end_to_end_with_every_logger(data, tmp_path):
    datasets = [
        {"name": "cifar10", "root": str(data["cifar"]), "val_size": 20},
        {"name": "imagefolder", "root": str(data["folder"]), "image_size": 32},
    ]
    sweep = {
        "name": "newdata",
        "base": {"train": {"batch_size": 8}},
        "grid": {"data": datasets, "model": MODELS},
        "experiments": [{"label": "snip",
                         "config": {"method": "snip", "prune": {"target_sparsity": 0.5}}}],
        "loggers": ["tensorboard", "csv", "mlflow", "wandb"],
    }
    path = tmp_path / "newdata.yaml"
    path.write_text(yaml.safe_dump(sweep))
    env = subprocess_env(WANDB_MODE="offline", WANDB_SILENT="true")
    proc = run_sweep(str(path), *SMOKE, "--storage", str(tmp_path / "out"), cwd=tmp_path,
                     environment=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    experiment = tmp_path / "out" / "newdata-smoke"
    dirs = trial_dirs(experiment)
    trials = [json.loads((d / "params.json").read_text())["trial"] for d in dirs]
    combos = {(trial["data"]["name"], trial["model"]["name"]) for trial in trials}
    assert combos == {(d, m) for d in ("cifar10", "imagefolder")
                      for m in ("resnet20", "torchvision:mobilenet_v3_small")}
    finals = {d.name: final_round(d) for d in dirs}
    for trial_dir in dirs:
        assert list(trial_dir.glob("events.out.tfevents.*")), trial_dir.name
        assert (trial_dir / "progress.csv").is_file(), trial_dir.name
        assert 0 < finals[trial_dir.name]["sparsity"] < 1

    # MLflow: one run per trial in the sweep's experiment, with its params and metrics.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{experiment / 'mlflow.db'}")
    mlflow_experiment = client.get_experiment_by_name("newdata-smoke")
    runs = client.search_runs([mlflow_experiment.experiment_id])
    assert len(runs) == len(dirs) == 4
    by_combo = {(run.data.params["trial/data/name"], run.data.params["trial/model/name"]): run
                for run in runs}
    for trial_dir in dirs:
        trial = json.loads((trial_dir / "params.json").read_text())["trial"]
        run = by_combo[(trial["data"]["name"], trial["model"]["name"])]
        assert run.data.params["trial/prune/target_sparsity"] == "0.5"
        assert run.data.metrics["test_acc"] == pytest.approx(finals[trial_dir.name]["test_acc"])
        assert run.info.status == "FINISHED"

    # W&B, offline: one run per trial under <experiment>/wandb, named by the trial id. W&B's
    # run file is a log of protobuf records; a history item holds a metric's key and its JSON
    # value side by side, so the trial's final test accuracy must appear right after "test_acc".
    for trial_dir, trial in zip(dirs, trials, strict=True):
        trial_id = "_".join(trial_dir.name.rsplit("_", 2)[-2:])
        (run_file,) = experiment.glob(f"wandb/offline-run-*-{trial_id}/run-{trial_id}.wandb")
        content = run_file.read_bytes()
        value = json.dumps(finals[trial_dir.name]["test_acc"]).encode()
        assert re.search(rb"test_acc.{1,4}" + re.escape(value), content, re.DOTALL), trial_dir
        assert trial["model"]["name"].encode() in content  # the trial's config is logged


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "trials"),
    # Counted by hand from each file: dense + IMP + 4 random + 4 SNIP targets, one seed here.
    [("lth_cifar10_resnet20.yaml", 10), ("lth_cifar10_vgg16.yaml", 10)],
)
def test_shipped_lth_sweeps_smoke_run_on_cifar_format_files(data, tmp_path, name, trials):
    settings = [f"data.root={data['cifar']}", "data.val_size=20", "grid.seed=[0]",
                "model.width=4", "train.batch_size=16"]
    if name.startswith("lth_cifar10_resnet20"):
        settings.append("loggers=[csv]")  # TensorBoard off: only what was asked for (+ JSON)
    proc = run_sweep(str(REPO / "sweeps" / name), *SMOKE,
                     *[arg for s in settings for arg in ("--set", s)],
                     "--storage", str(tmp_path / "out"), cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (experiment,) = [p for p in (tmp_path / "out").iterdir() if p.is_dir()]
    dirs = trial_dirs(experiment)
    assert len(dirs) == trials
    rounds = {d.name.split("_s0")[0]: [r["round"] for r in result_rows(d)
                                       if r.get("row_type") == "round"] for d in dirs}
    imp_rounds = 8 if "resnet20" in name else 19
    assert rounds["imp-rewind"] == list(range(imp_rounds + 1))
    for trial_dir in dirs:
        final_round(trial_dir)
        has_tensorboard = bool(list(trial_dir.glob("events.out.tfevents.*")))
        assert has_tensorboard == ("vgg16" in name), trial_dir.name
        assert (trial_dir / "progress.csv").is_file()


def test_a_missing_logger_extra_is_refused_before_ray_starts(tmp_path, monkeypatch, capsys):
    import importlib.util

    from sweeps import run_sweep as module

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec",
        lambda name, *args: None if name == "wandb" else real_find_spec(name, *args),
    )

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(module, "_start_ray", no_ray)
    path = tmp_path / "x.yaml"
    path.write_text("name: x\nloggers: [tensorboard, wandb]\n")
    assert module.main([str(path), "--storage", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "pip install 'prunetune[wandb]'" in error
    assert "'loggers'" in error


def test_imagenet_weights_of_every_model_are_checked_before_ray(tmp_path, monkeypatch, capsys):
    import torch
    import torchvision

    from sweeps import run_sweep as module

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(torchvision.models.resnet18().state_dict(), checkpoints / "resnet18-f37072fd.pth")

    def no_network(url, dst, *args, **kwargs):
        raise OSError("no network in this test")

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(module, "_start_ray", no_ray)
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump({
        "name": "x",
        "base": {"data": {"name": "synthetic"}, "model": {"pretrained": True}},
        "grid": {"model.name": ["resnet18", "torchvision:mobilenet_v3_small"]},
    }))
    assert module.main([str(path), "--storage", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "torchvision:mobilenet_v3_small" in error
    assert os.path.basename(
        torchvision.models.MobileNet_V3_Small_Weights.IMAGENET1K_V1.url
    ) in error
