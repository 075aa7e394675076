"""A streamed dataset as a trial reads it: one DataLoader per split kept for the whole trial
(persistent workers), the same batches as the in-memory path every epoch, and workers that fit
the trial's CPUs (a default below resources.cpu; an explicit count that does not fit refused
before Ray starts).

The images are files in ImageNet's layout as torchvision reads them (dataset_files.py); the
reference batches come from the same files decoded into memory. DataLoader constructions are
counted by replacing the streaming module's DataLoader with a recording subclass.
"""

from __future__ import annotations

import dataclasses
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from dataset_files import write_imagenet

from trainables.datasets import ImageSplits, StreamingSplits, batch_augment, load_dataset, streaming
from trainables.errors import ConfigError
from trainables.resolve import parse_trial_config
from trainables.runtime import resolve_runtime
from trainables.trial_data import TrialData

WNIDS = ["n01440764", "n01443537", "n01484850"]
# 6 + 6 + 6 training images, 3 held out for validation; the official val (2 a class) is test.
SIZES = {"train": 15, "val": 3, "test": 6}


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("imagenet-stream")
    write_imagenet(root, WNIDS, train_per_class=6, val_per_class=2)
    return root


def data_cfg(root: Path, **overrides: Any) -> types.SimpleNamespace:
    fields = dict(name="imagenet", root=str(root), image_size=16, download=False, split_seed=0,
                  val_size=3, split_fractions=None, storage="stream", workers=None,
                  prefetch=None, cache_dir=None, augment=True, crop=None, crop_padding=None,
                  crop_scale_min=None, hflip=None)
    fields.update(overrides)
    return types.SimpleNamespace(**fields)


@pytest.fixture
def loaders(monkeypatch) -> list[dict[str, Any]]:
    """Every DataLoader the streaming path builds: its split (by size) and settings."""
    built: list[dict[str, Any]] = []
    real = streaming.DataLoader

    class RecordingLoader(real):
        def __init__(self, dataset: Any, **kwargs: Any) -> None:
            split = next(name for name, size in SIZES.items() if size == len(dataset))
            built.append({"split": split, "workers": kwargs["num_workers"],
                          "persistent": kwargs.get("persistent_workers", False)})
            super().__init__(dataset, **kwargs)

    monkeypatch.setattr(streaming, "DataLoader", RecordingLoader)
    return built


def trial_config(root: Path, storage: str, workers: int | None) -> Any:
    return parse_trial_config({
        "data": {"name": "imagenet", "root": str(root), "image_size": 16, "val_size": 3,
                 "storage": storage, "workers": workers},
        "model": {"name": "resnet20", "width": 4},
        "train": {"epochs": 3, "batch_size": 4, "device": "cpu", "max_batches": 2},
    })


def train(root: Path, storage: str, workers: int | None) -> dict[str, torch.Tensor]:
    """Three epochs of a training phase through the trial's code path; its final weights."""
    from trainables.loop import train_phase
    from trainables.models import build_model

    config = trial_config(root, storage, workers)
    splits = load_dataset(config.data)
    runtime = resolve_runtime(config.train)
    torch.manual_seed(0)
    model = build_model(config.model, splits.num_classes, splits.in_channels)
    result = train_phase(model, TrialData.build(splits, config, runtime), config, runtime,
                         round_index=0, epochs=range(3), total_epochs=3, mask=None)
    return {"test_acc": torch.tensor(result.test_acc), **result.final_state}


def test_a_trial_builds_one_loader_per_split_with_persistent_workers(imagenet_root, loaders):
    streamed = train(imagenet_root, "stream", workers=2)
    # 3 epochs of training and of validation, then the test split once: one loader a split
    # (the old code built one per pass: 3 + 3 + 1 = 7, without persistent workers).
    assert sorted(loader["split"] for loader in loaders) == ["test", "train", "val"]
    assert all(loader["workers"] == 2 and loader["persistent"] for loader in loaders)
    memory = train(imagenet_root, "memory", workers=None)
    assert len(loaders) == 3  # the in-memory path builds none
    assert streamed.keys() == memory.keys()
    for key in memory:
        assert torch.equal(streamed[key], memory[key]), key


def _batches(splits: Any, split: str, augment: Any, seed: int | None) -> Any:
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return splits.batches(split, 4, shuffle=seed is not None, generator=generator,
                          device="cpu", augment=augment, drop_last=seed is not None)


def _same(got: list, expected: list) -> bool:
    return len(got) == len(expected) > 0 and all(
        torch.equal(x, x_ref) and torch.equal(y, y_ref)
        for (x, y), (x_ref, y_ref) in zip(got, expected, strict=True)
    )


def test_kept_loaders_give_the_memory_paths_batches_every_epoch(imagenet_root, loaders):
    memory = load_dataset(data_cfg(imagenet_root, storage="memory"))
    shared = load_dataset(data_cfg(imagenet_root))
    stream = shared.for_trial(cpus=3)  # data.workers unset: 3 CPUs leave 2 for decoding
    assert stream.workers == 2 and shared.workers is None
    train_aug = batch_augment(data_cfg(imagenet_root), memory, train=True)
    eval_aug = batch_augment(data_cfg(imagenet_root), memory, train=False)
    for epoch in range(3):
        if epoch == 1:  # a pass left after one batch: the next pass still starts afresh
            abandoned = _batches(stream, "train", train_aug, seed=99)
            next(abandoned)
            abandoned.close()
        expected = list(_batches(memory, "train", train_aug, seed=epoch))
        assert _same(list(_batches(stream, "train", train_aug, seed=epoch)), expected), epoch
        assert _same(list(_batches(stream, "val", eval_aug, None)),
                     list(_batches(memory, "val", eval_aug, None))), epoch
    assert [(loader["split"], loader["persistent"]) for loader in loaders] == [
        ("train", True), ("val", True)]
    # Two passes over one split open at once: the second gets a loader of its own, and
    # both give the memory path's batches.
    expected = list(_batches(memory, "test", eval_aug, None))
    first = _batches(stream, "test", eval_aug, None)
    head = [next(first)]
    assert _same(list(_batches(stream, "test", eval_aug, None)), expected)
    assert _same(head + list(first), expected)
    assert [loader["split"] for loader in loaders][2:] == ["test", "test"]
    assert [loader["persistent"] for loader in loaders][2:] == [True, False]
    # The process-cached object itself keeps nothing: a loader per call, as before.
    list(_batches(shared, "val", eval_aug, None))
    assert loaders[-1] == {"split": "val", "workers": 4, "persistent": False}


@pytest.mark.parametrize(("cpus", "workers"), [(1, 0), (2, 1), (3, 2), (5, 4), (16, 15)])
def test_unset_workers_leave_the_training_process_a_cpu(imagenet_root, cpus, workers):
    # Hand-chosen: cpus - 1 decoding processes, at least 0 (decoding in the training process).
    assert streaming.default_workers(cpus) == workers
    config = trial_config(imagenet_root, "stream", workers=None)
    runtime = dataclasses.replace(resolve_runtime(config.train), cpus=cpus)
    data = TrialData.build(load_dataset(config.data), config, runtime)
    assert isinstance(data.splits, StreamingSplits) and data.splits.workers == workers


def test_explicit_workers_are_honoured_in_the_trial_and_memory_splits_pass_through(
    imagenet_root,
):
    config = trial_config(imagenet_root, "stream", workers=3)
    runtime = dataclasses.replace(resolve_runtime(config.train), cpus=2)
    assert TrialData.build(load_dataset(config.data), config, runtime).splits.workers == 3
    config = trial_config(imagenet_root, "memory", workers=None)
    splits = load_dataset(config.data)
    assert isinstance(splits, ImageSplits)
    assert TrialData.build(splits, config, runtime).splits is splits


def sweep(root: Path, cpu: float, **data: Any) -> dict[str, Any]:
    return {
        "name": "stream",
        "base": {"data": {"name": "imagenet", "root": str(root), "image_size": 16, **data},
                 "model": {"name": "resnet20", "width": 4}},
        "experiments": [{"label": "dense", "config": {"method": "dense"}}],
        "resources": {"cpu": cpu},
    }


def test_explicit_workers_beyond_the_cpu_request_are_refused_when_planned(imagenet_root):
    from sweeps.plan import plan_sweep

    with pytest.raises(ConfigError) as info:
        plan_sweep(sweep(imagenet_root, 3, storage="stream", workers=3), "stream.yaml")
    message = str(info.value)
    assert "\n" not in message and message.startswith("stream.yaml: experiments[0]")
    # 3 workers + the training process = 4 CPUs > 3; unset, 3 CPUs would stream with 2.
    for words in ("data.workers is 3", "needs 4 CPUs", "resources.cpu reserves 3",
                  "raise resources.cpu to 4", "streams with 2 here"):
        assert words in message, message
    with pytest.raises(ConfigError, match="resources.cpu reserves 2.5"):
        plan_sweep(sweep(imagenet_root, 2.5, workers=2), "stream.yaml")  # storage auto
    for cpu, data in (
        (4, {"storage": "stream", "workers": 3}),  # 3 + 1 fits in 4
        (1, {"storage": "stream"}),  # unset: the trial takes 0 workers
        (0.5, {"storage": "stream", "workers": 0}),  # decoding in the training process
        (1, {"storage": "memory", "workers": 3}),  # decoded into memory: no workers run
    ):
        assert len(plan_sweep(sweep(imagenet_root, cpu, **data), "stream.yaml").trials) == 1
