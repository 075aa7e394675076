"""Image-file datasets (imagefolder, imagenet) from trees in torchvision's layouts, written by the
test (dataset_files.py), and the streaming path that reads them from disk every epoch.

References: torchvision's own ImageFolder and ImageNet classes on the same trees, and the class
colour each test image was painted in.
"""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
import torch
from dataset_files import CLASS_COLOURS, write_image_tree, write_imagenet
from torchvision.datasets import ImageFolder, ImageNet

from trainables.datasets import (
    ImageSplits,
    StreamingSplits,
    batch_augment,
    clear_process_cache,
    load_dataset,
)
from trainables.datasets.filelists import decoded_bytes, resolved_storage
from trainables.datasets.imagefolder import imagefolder_file_lists
from trainables.errors import ConfigError, DatasetUnavailableError

CLASSES = ["ant", "bee", "cat"]


def data_cfg(root: Path, name: str = "imagefolder", **overrides) -> types.SimpleNamespace:
    fields = dict(name=name, root=str(root), image_size=16, download=False, split_seed=0,
                  val_size=None, split_fractions=None, storage=None, workers=0, prefetch=None,
                  cache_dir=None, augment=True, crop=None, crop_padding=None,
                  crop_scale_min=None, hflip=None)
    fields.update(overrides)
    return types.SimpleNamespace(**fields)


def colour_labels(images: torch.Tensor) -> list[int]:
    """The class whose colour is nearest each image's mean colour."""
    means = images.float().mean(dim=(2, 3))
    colours = torch.tensor(CLASS_COLOURS, dtype=torch.float32)
    return torch.cdist(means, colours).argmin(dim=1).tolist()


@pytest.fixture(scope="module")
def split_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("folder-splits")
    write_image_tree(root / "train", CLASSES, per_class=6, seed=1)
    write_image_tree(root / "val", CLASSES, per_class=2, seed=2, extension=".jpg")
    write_image_tree(root / "test", CLASSES, per_class=3, seed=3)
    return root


@pytest.fixture(scope="module")
def single_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("folder-single")
    write_image_tree(root, CLASSES, per_class=8, seed=4)
    return root


def test_split_layout_matches_torchvision_imagefolder(split_tree):
    splits = load_dataset(data_cfg(split_tree))
    assert isinstance(splits, ImageSplits)
    for split in ("train", "val", "test"):
        reference = ImageFolder(str(split_tree / split))
        images, labels = splits.split(split)
        assert labels.tolist() == reference.targets  # same files, same order, same class ids
        assert colour_labels(images) == labels.tolist()  # the pixels are those files'
    assert splits.num_classes == 3 and splits.in_channels == 3
    assert splits.store_size == 18 and splits.val_images.shape[-1] == 16


def test_split_layout_without_val_holds_out_part_of_train(tmp_path):
    write_image_tree(tmp_path / "train", CLASSES, per_class=8)
    write_image_tree(tmp_path / "test", CLASSES, per_class=2)
    lists = imagefolder_file_lists(data_cfg(tmp_path, val_size=0.25))
    reference = ImageFolder(str(tmp_path / "train"))
    train, val = lists.files["train"], lists.files["val"]
    assert len(val[0]) == 6 and sorted(val[1]) == [0, 0, 1, 1, 2, 2]  # 25% of 24, stratified
    assert sorted(list(zip(*train, strict=True)) + list(zip(*val, strict=True))) == sorted(
        reference.samples
    )
    with pytest.raises(ConfigError, match="split_fractions applies to a single tree"):
        imagefolder_file_lists(data_cfg(tmp_path, split_fractions=[0.5, 0.25, 0.25]))


def test_single_tree_is_split_by_seed_with_the_fractions(single_tree):
    cfg = data_cfg(single_tree, split_fractions=[0.5, 0.25, 0.25])
    lists = imagefolder_file_lists(cfg)
    counts = {split: len(paths) for split, (paths, _) in lists.files.items()}
    assert counts == {"train": 12, "val": 6, "test": 6}  # of 24 images
    for split in ("val", "test"):  # stratified: 2 of each class
        assert sorted(lists.files[split][1]) == [0, 0, 1, 1, 2, 2]
    union = [sample for paths, labels in lists.files.values()
             for sample in zip(paths, labels, strict=True)]
    assert sorted(union) == sorted(ImageFolder(str(single_tree)).samples)  # disjoint, covering
    again = imagefolder_file_lists(cfg)
    other = imagefolder_file_lists(data_cfg(single_tree, split_fractions=[0.5, 0.25, 0.25],
                                            split_seed=1))
    assert again.files == lists.files and other.files["test"] != lists.files["test"]


def test_the_cache_inside_a_single_tree_is_not_a_class(single_tree):
    clear_process_cache()
    first = load_dataset(data_cfg(single_tree))
    assert (single_tree / ".prunetune_cache").is_dir()
    clear_process_cache()
    second = load_dataset(data_cfg(single_tree))  # read back from the disk cache
    assert second.num_classes == first.num_classes == 3
    assert torch.equal(second.train_images, first.train_images)
    assert colour_labels(second.test_images) == second.test_labels.tolist()


@pytest.mark.parametrize(
    ("layout", "words"),
    [
        ("missing", ["is not a directory"]),
        ("train-only", ["no test/ folder"]),
        ("unknown-test-class", ["classes that train/ lacks: wasp"]),
        ("empty", ["no class folders"]),
    ],
)
def test_bad_trees_are_one_line_errors(tmp_path, layout, words):
    root = tmp_path / "tree"
    if layout != "missing":
        root.mkdir()
    if layout in ("train-only", "unknown-test-class"):
        write_image_tree(root / "train", CLASSES, per_class=2)
    if layout == "unknown-test-class":
        write_image_tree(root / "test", [*CLASSES, "wasp"], per_class=1)
    with pytest.raises(DatasetUnavailableError) as info:
        load_dataset(data_cfg(root))
    assert "\n" not in str(info.value)
    for word in words:
        assert word in str(info.value)


# ---- ImageNet ----------------------------------------------------------------------------------

WNIDS = ["n01440764", "n01443537", "n01484850"]


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("imagenet")
    write_imagenet(root, WNIDS, train_per_class=6, val_per_class=2)
    return root


def test_imagenet_matches_torchvision_imagenet(imagenet_root):
    splits = load_dataset(data_cfg(imagenet_root, "imagenet", val_size=3))
    official_train = ImageNet(str(imagenet_root), split="train")
    official_val = ImageNet(str(imagenet_root), split="val")
    assert splits.test_labels.tolist() == official_val.targets  # the official val is our test
    assert colour_labels(splits.test_images) == official_val.targets
    train_labels = splits.train_labels.tolist() + splits.val_labels.tolist()
    assert sorted(train_labels) == sorted(official_train.targets)
    assert sorted(splits.val_labels.tolist()) == [0, 1, 2]  # stratified hold-out of 3
    assert splits.num_classes == 3


def test_imagenet_absent_is_a_one_line_error(tmp_path):
    with pytest.raises(DatasetUnavailableError) as info:
        load_dataset(data_cfg(tmp_path, "imagenet"))
    message = str(info.value)
    assert "\n" not in message and "never downloaded" in message
    assert "ILSVRC2012_devkit_t12.tar.gz" in message and str(tmp_path) in message


# ---- memory or stream ----------------------------------------------------------------------


def test_auto_storage_switches_on_the_decoded_size(imagenet_root, monkeypatch):
    from trainables.datasets import filelists

    cfg = data_cfg(imagenet_root, "imagenet", val_size=3)
    lists = filelists.FileLists(
        {s: (["x"] * n, [0] * n) for s, n in (("train", 15), ("val", 3), ("test", 6))}, 1
    )
    # 15 train images at 18 px (store size of 16), 9 eval images at 16 px, 3 bytes a pixel.
    assert decoded_bytes(lists, 16) == 15 * 3 * 18 * 18 + 9 * 3 * 16 * 16
    assert resolved_storage(cfg, lists, 16) == "memory"
    monkeypatch.setattr(filelists, "AUTO_MEMORY_LIMIT_BYTES", decoded_bytes(lists, 16) - 1)
    assert resolved_storage(cfg, lists, 16) == "stream"
    assert resolved_storage(data_cfg(imagenet_root, storage="memory"), lists, 16) == "memory"


def _all_batches(splits, split, augment, seed, **kwargs):
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return list(splits.batches(split, 4, shuffle=seed is not None, generator=generator,
                               device="cpu", augment=augment, **kwargs))


@pytest.mark.parametrize("workers", [0, 2])
def test_streaming_yields_the_batches_of_the_memory_path(imagenet_root, workers):
    memory = load_dataset(data_cfg(imagenet_root, "imagenet", val_size=3, storage="memory"))
    stream = load_dataset(data_cfg(imagenet_root, "imagenet", val_size=3, storage="stream",
                                   workers=workers))
    assert isinstance(stream, StreamingSplits) and stream.workers == workers
    assert stream.store_size == memory.store_size
    cfg = data_cfg(imagenet_root)
    train_aug = batch_augment(cfg, memory, train=True)
    eval_aug = batch_augment(cfg, memory, train=False)
    for split, augment, seed, kwargs in (
        ("train", train_aug, 7, {"drop_last": True}),
        ("test", eval_aug, None, {}),
        ("val", eval_aug, None, {"max_batches": 1}),
    ):
        expected = _all_batches(memory, split, augment, seed, **kwargs)
        got = _all_batches(stream, split, augment, seed, **kwargs)
        assert len(got) == len(expected) > 0
        for (x, y), (x_ref, y_ref) in zip(got, expected, strict=True):
            assert torch.equal(y, y_ref)
            assert torch.equal(x, x_ref)


def test_a_streamed_training_phase_equals_the_in_memory_one(imagenet_root):
    from trainables.loop import train_phase
    from trainables.models import build_model
    from trainables.resolve import parse_trial_config
    from trainables.runtime import resolve_runtime
    from trainables.trial_data import TrialData

    def run(storage: str) -> dict[str, torch.Tensor]:
        config = parse_trial_config({
            "data": {"name": "imagenet", "root": str(imagenet_root), "image_size": 16,
                     "val_size": 3, "storage": storage, "workers": 0},
            "model": {"name": "resnet20", "width": 4},
            "train": {"epochs": 2, "batch_size": 4, "device": "cpu", "max_batches": 2},
        })
        splits = load_dataset(config.data)
        runtime = resolve_runtime(config.train)
        torch.manual_seed(0)
        model = build_model(config.model, splits.num_classes, splits.in_channels)
        result = train_phase(
            model, TrialData.build(splits, config, runtime), config, runtime, round_index=0,
            epochs=range(2), total_epochs=2, mask=None,
        )
        return {"test_acc": torch.tensor(result.test_acc), **result.final_state}

    memory, stream = run("memory"), run("stream")
    assert memory.keys() == stream.keys()
    for key in memory:
        assert torch.equal(memory[key], stream[key]), key
    assert not np.isnan(float(memory["test_acc"]))


def test_streaming_keeps_at_most_workers_x_prefetch_batches_decoded(imagenet_root, monkeypatch):
    import multiprocessing
    import time

    from trainables.datasets import streaming

    decoded = multiprocessing.get_context("fork").Value("i", 0)
    real_decode = streaming.decode_image_file

    def counting_decode(path: str) -> torch.Tensor:
        with decoded.get_lock():
            decoded.value += 1
        return real_decode(path)

    # DataLoader workers are forked, so they inherit the patched function and the counter.
    monkeypatch.setattr(streaming, "decode_image_file", counting_decode)
    stream = load_dataset(data_cfg(imagenet_root, "imagenet", val_size=3, storage="stream",
                                   workers=2, prefetch=1, image_size=8))
    augment = batch_augment(data_cfg(imagenet_root), stream, train=False)
    batch_size, consumed, ahead = 2, 0, []
    for images, _ in stream.batches("train", batch_size, shuffle=False, generator=None,
                                    device="cpu", augment=augment):
        consumed += len(images)
        time.sleep(0.3)  # a slow training step: the workers run ahead as far as allowed
        ahead.append(decoded.value - consumed)
    assert consumed == stream.size("train") == 15
    # workers x prefetch = 2 batches of 2 images decoded ahead at the most (measured: exactly
    # that, here); at least one batch ahead shows the workers do run ahead of the consumer.
    assert batch_size <= max(ahead) <= 2 * 1 * batch_size
