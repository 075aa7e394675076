"""The contracts every registered method, model and dataset keeps, run over the registries
(`METHODS.names()`, `MODELS.names()`, `DATASETS.names()`, installed plug-ins included): a new
entry is covered without editing a test. Scorers have theirs in tests/test_pruning_scorers.py.

What each contract asserts is computed here, independently of the entry: counts of zeros in a
round's masks, the shapes a forward pass returns, what a config field path resolves to.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import pruning
from sweeps.plan import PlannedTrial, plan_sweep
from trainables.config import ModelConfig, TrialConfig
from trainables.datasets import DATASETS, dataset_defaults, load_dataset
from trainables.errors import PrunetuneError
from trainables.methods import METHODS
from trainables.models import MODELS, build_model, model_entry
from trainables.plugins import load_installed_plugins
from trainables.reporting import DirectoryReporter
from trainables.trial import run_trial

load_installed_plugins()
TAG_KEYS = {"label", "level_by", "schedule", "scorer"}
TINY = {"model": {"name": "resnet18_cifar", "width": 4},
        "train": {"epochs": 2, "batch_size": 32, "eval_batch_size": 512, "device": "cpu"},
        "measure": {"batch_sizes": [1], "budget_s": 0.0, "min_repeats": 1}}


def smoke_trial(method: str, data_root: Path, launch_dir: Path) -> PlannedTrial:
    """`method` with its defaults, as a --smoke sweep plans it."""
    sweep = {"name": "contract", "base": {**TINY, "data": {"name": "digits",
                                                           "root": str(data_root)}},
             "experiments": [{"config": {"method": method}}]}
    plan = plan_sweep(sweep, f"{method}.yaml", smoke=True, launch_dir=launch_dir)
    (trial,) = [trial for trial in plan.trials if trial.method == method]
    return trial


def field_exists(config: TrialConfig, dotted: str) -> bool:
    """Whether `dotted` (or `section.*`) names a field of `config` or of its method's section."""
    section, _, rest = dotted.partition(".")
    node: Any = config.settings if section == config.method else getattr(config, section, None)
    if node is None:
        return False
    if rest in ("*", ""):
        return True
    for part in rest.split("."):
        if part not in type(node).model_fields:
            return False
        node = getattr(node, part)
    return True


# ---- methods -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_plans_with_its_defaults_and_describes_itself(
    name: str, data_root: Path, tmp_path: Path
) -> None:
    trial = smoke_trial(name, data_root, tmp_path)
    method, config = METHODS.get(name), trial.config
    assert isinstance(method.label, str) and method.label
    assert trial.name.startswith(f"{name}_s0") and all(
        isinstance(part, str) and part for part in method.name_parts(config))
    tags = method.row_tags(config)
    assert set(tags) >= TAG_KEYS and isinstance(tags["label"], str) and tags["label"]
    assert tags["level_by"] in ("dense", "target_sparsity", "round", "target_channel_fraction")
    unknown = [path for path in method.reads(config) if not field_exists(config, path)]
    assert unknown == [], f"{name}.reads names fields that do not exist"
    for path in method.smoke_overrides(config):
        top = path.split(".")[0]
        assert top == name or field_exists(config, path), path
    assert method.round_checkpoints(config) >= 1 and method.smoke_epochs(config) >= 1
    assert method.training_epochs(config) >= config.train.epochs
    allocations = method.supported_allocations()
    assert set(allocations) <= set(pruning.ALLOCATIONS.names())


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_runs_and_reports_what_it_promises(
    name: str, data_root: Path, tmp_path: Path, checkpoint_contract: Any
) -> None:
    trial = smoke_trial(name, data_root, tmp_path / "plan")
    method, config = METHODS.get(name), trial.config
    reporter = DirectoryReporter(tmp_path / "trial")
    run_trial(config, reporter, cpus=1)
    rounds = [row for row in reporter.rows if row["row_type"] == "round"]
    assert len(rounds) == method.round_checkpoints(config)
    assert [row["final_round"] for row in rounds] == [False] * (len(rounds) - 1) + [True]
    assert [row["round"] for row in rounds] == sorted({row["round"] for row in rounds})
    checkpoints = sorted((tmp_path / "trial").glob("round_*"))
    assert len(checkpoints) == len(rounds)
    for row, directory in zip(rounds, checkpoints, strict=True):
        tags = method.row_tags(config)
        assert {key: row[key] for key in TAG_KEYS if key != "label"} == {
            key: tags[key] for key in TAG_KEYS if key != "label"}
        assert row["method"] == name and row["seed"] == config.seed
        assert 0.0 <= row["test_acc"] <= 1.0 and 0.0 <= row["val_acc"] <= 1.0
        state = checkpoint_contract(directory, trial.raw)
        # Sparsity and counts from the masks, counted here: the prunable weights a mask drops.
        masks = state["masks"]
        if state.get("layer_widths") is None:
            weights = state["best_model"]
            kept = sum(int((weights[key] != 0).logical_and(keep).sum())
                       for key, keep in masks.items())
            total = sum(keep.numel() for keep in masks.values())
            assert all(int((weights[key] != 0).logical_and(~keep).sum()) == 0
                       for key, keep in masks.items()), "a pruned weight is not zero"
            assert row["params_prunable"] == kept
            assert row["sparsity"] == pytest.approx((total - kept) / total, abs=0, rel=1e-12)
        assert json.loads((directory / "metrics.json").read_text())["round"] == row["round"]


# ---- models --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("in_channels", [1, 3])
def test_every_model_builds_runs_and_has_prunable_weights(name: str, in_channels: int) -> None:
    width = 4 if model_entry(name).standard_width is not None else None
    model = build_model(ModelConfig(name=name, width=width), 5, in_channels).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, in_channels, 32, 32))
    assert logits.shape == (2, 5)
    prunable = pruning.prunable_parameter_names(model)
    # Every Conv2d and Linear weight, found here from the modules themselves.
    expected = [f"{module_name}.weight" for module_name, module in model.named_modules()
                if isinstance(module, torch.nn.Conv2d | torch.nn.Linear)]
    assert prunable == expected and prunable


# ---- datasets ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_dataset_has_defaults_and_loads_or_says_what_is_missing(
    name: str, tmp_path: Path
) -> None:
    defaults = dataset_defaults(name)
    assert 8 <= defaults.image_size <= 1024 and 0.0 < defaults.crop_scale_min <= 1.0
    data = TrialConfig.model_validate({"data": {"name": name, "root": str(tmp_path / "empty"),
                                                "download": False}}).data
    try:
        splits = load_dataset(data)
    except PrunetuneError as error:  # a dataset of files, absent here: one line naming the root
        assert "\n" not in str(error) and str(tmp_path / "empty") in str(error)
        return
    images, labels = splits.split("train")
    assert images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert len(images) == len(labels) > 0
    assert int(labels.max()) < splits.num_classes
