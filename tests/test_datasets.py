"""Datasets registry: split sizes, determinism, storage rule, disk cache, one-line errors."""

from __future__ import annotations

import os
import threading
import time
import types
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits as sk_load_digits

from trainables import datasets as ds
from trainables.datasets import filelists, storage
from trainables.errors import ConfigError, DatasetUnavailableError

REPO_ROOT = Path(__file__).resolve().parents[1]


def data_cfg(name: str, **overrides) -> types.SimpleNamespace:
    """A DataConfig stand-in with DataConfig's defaults."""
    fields = dict(
        name=name,
        root=str(REPO_ROOT / "data"),
        image_size=None,
        download=True,
        split_seed=0,
        augment=True,
        crop_scale_min=None,
        hflip=None,
        cache_dir=None,
    )
    fields.update(overrides)
    return types.SimpleNamespace(**fields)


def flowers_root() -> Path:
    return Path(os.environ.get("PRUNETUNE_FLOWERS_ROOT", REPO_ROOT / ".." / "shared" / "data"))


# ----------------------------------------------------------------------------- registry


def test_every_module_of_the_package_is_discovered_and_registers_itself():
    # No list of names is kept: importing the package imports each of its modules, and each
    # dataset module's loaders are in the registry (those named by the tests below among them).
    import importlib
    import pkgutil

    import trainables.datasets

    shared = {"common", "storage", "streaming", "filelists"}  # what the datasets share
    modules = {m.name for m in pkgutil.iter_modules(trainables.datasets.__path__)} - shared
    loaders = {name: ds.DATASETS.get(name) for name in ds.DATASETS.names()}
    for module in modules:
        imported = importlib.import_module(f"trainables.datasets.{module}")
        owned = [name for name, loader in loaders.items() if loader.__module__ == imported.__name__]
        assert owned, f"trainables/datasets/{module}.py registers no dataset"
    assert {"cifar10", "digits", "flowers102", "synthetic"} <= set(loaders)


def test_registry_defaults():
    flowers = ds.dataset_defaults("flowers102")
    assert (flowers.image_size, flowers.crop_scale_min, flowers.hflip) == (224, 0.08, True)
    assert ds.dataset_defaults("digits") == ds.DatasetDefaults(32, 0.6, False)
    assert ds.dataset_defaults("synthetic") == ds.DatasetDefaults(16, 0.8, False)
    cifar = ds.dataset_defaults("cifar10")
    assert (cifar.image_size, cifar.crop, cifar.crop_padding) == (32, "padded", 4)
    assert cifar.hflip is True
    assert cifar.val_size == 5000
    with pytest.raises(ConfigError, match="allowed: cifar10, cifar100, digits, flowers102"):
        ds.dataset_defaults("mnist")
    with pytest.raises(ConfigError):
        ds.load_dataset(data_cfg("svhn"))


@pytest.mark.parametrize(("image_size", "store"), [(224, 256), (32, 37), (16, 18), (112, 128)])
def test_store_size_rule(image_size, store):
    assert ds.store_size_for(image_size) == store


def check_layout(splits: ds.ImageSplits, channels: int, image_size: int) -> None:
    store = ds.store_size_for(image_size)
    assert splits.image_size == image_size
    assert splits.store_size == store
    assert splits.in_channels == channels
    assert len(splits.mean) == len(splits.std) == channels
    assert all(0 <= m <= 1 for m in splits.mean) and all(0 < s <= 1 for s in splits.std)
    for split in ("train", "val", "test"):
        images, labels = splits.split(split)
        side = store if split == "train" else image_size
        assert images.dtype == torch.uint8 and images.is_contiguous()
        assert images.shape[1:] == (channels, side, side)
        assert labels.dtype == torch.int64 and labels.shape == (len(images),)
        assert int(labels.min()) >= 0 and int(labels.max()) < splits.num_classes


# ----------------------------------------------------------------------------- synthetic


def test_synthetic_layout_and_determinism():
    a = ds.load_synthetic(data_cfg("synthetic"))
    b = ds.load_synthetic(data_cfg("synthetic"))
    check_layout(a, channels=3, image_size=16)
    assert (len(a.train_labels), len(a.val_labels), len(a.test_labels)) == (256, 128, 128)
    assert a.num_classes == 10
    assert torch.bincount(a.train_labels).tolist() == [26] * 6 + [25] * 4
    for split in ("train", "val", "test"):
        assert torch.equal(a.split(split)[0], b.split(split)[0])
        assert torch.equal(a.split(split)[1], b.split(split)[1])


def test_synthetic_is_learnable_by_nearest_class_mean():
    splits = ds.load_synthetic(data_cfg("synthetic"))
    # Center-crop train like eval so both are 16 px, then a nearest-class-mean classifier.
    train = splits.train_images[..., 1:17, 1:17].flatten(1).float()
    centroids = torch.stack([train[splits.train_labels == k].mean(0) for k in range(10)])
    val = splits.val_images.flatten(1).float()
    predicted = torch.cdist(val, centroids).argmin(1)
    accuracy = (predicted == splits.val_labels).float().mean().item()
    assert accuracy > 0.8  # chance is 0.1


def test_split_accessor_rejects_unknown_split():
    with pytest.raises(ValueError, match="train, val, test"):
        ds.load_synthetic(data_cfg("synthetic")).split("holdout")


# ----------------------------------------------------------------------------- digits


def test_digits_split_is_stratified_disjoint_covering_and_seeded():
    target = sk_load_digits().target
    a = ds.digits_split_indices(0)
    assert [len(a[s]) for s in ("train", "val", "test")] == [1078, 359, 360]
    union = np.concatenate([a["train"], a["val"], a["test"]])
    assert len(union) == len(set(union.tolist())) == 1797  # disjoint
    assert sorted(union.tolist()) == list(range(1797))  # covering
    for split in ("train", "val", "test"):  # stratified: each class within 2 of its share
        expected = np.bincount(target) * len(a[split]) / 1797
        assert np.abs(np.bincount(target[a[split]], minlength=10) - expected).max() <= 2
    b = ds.digits_split_indices(0)
    c = ds.digits_split_indices(1)
    for split in ("train", "val", "test"):
        assert np.array_equal(a[split], b[split])
        assert not np.array_equal(a[split], c[split])


def test_digits_images_labels_and_layout():
    splits = ds.load_digits(data_cfg("digits"))
    check_layout(splits, channels=1, image_size=32)
    assert splits.num_classes == 10
    digits = sk_load_digits()
    index = ds.digits_split_indices(0)
    for split in ("train", "val", "test"):
        images, labels = splits.split(split)
        assert labels.tolist() == digits.target[index[split]].tolist()
        assert set(labels.tolist()) == set(range(10))
    # Independent check of content: area-averaging the stored 37 px train image back down to
    # 8x8 gives (a blurred copy of) the original 0..16 image scaled to 0..255.
    original = torch.from_numpy(digits.images[index["train"]]).float().flatten(1) * 255 / 16
    back = F.adaptive_avg_pool2d(splits.train_images.float(), 8).flatten(1)
    correlation = torch.nn.functional.cosine_similarity(
        back - back.mean(1, keepdim=True), original - original.mean(1, keepdim=True)
    )
    assert correlation.min() > 0.8 and correlation.mean() > 0.9
    assert abs(back.mean().item() - original.mean().item()) < 3


def test_digits_split_seed_changes_data():
    a = ds.load_digits(data_cfg("digits", split_seed=0))
    b = ds.load_digits(data_cfg("digits", split_seed=3))
    assert not torch.equal(a.test_labels, b.test_labels)


def test_load_dataset_caches_per_process_by_data_fields():
    from trainables.config.sections import DataConfig

    def config(**fields) -> DataConfig:
        return DataConfig(name="digits", root=str(REPO_ROOT / "data"), **fields)

    ds.clear_process_cache()
    a = ds.load_dataset(config())
    # Augmentation is applied to batches: the decoded copy is shared.
    assert ds.load_dataset(config(augment=False, hflip=True)) is a
    b = ds.load_dataset(config(image_size=24))
    assert b is not a and b.image_size == 24 and b.train_images.shape[-1] == 27
    assert ds.load_dataset(config(split_seed=1)) is not a
    assert ds.load_dataset(data_cfg("digits")) is not a  # a stand-in keys on all it holds
    ds.clear_process_cache()
    assert ds.load_dataset(config()) is not a


def test_imagesplits_pickles_small():
    import pickle

    splits = ds.load_synthetic(data_cfg("synthetic"))
    clone = pickle.loads(pickle.dumps(splits))
    assert torch.equal(clone.train_images, splits.train_images)
    assert clone.mean == splits.mean and clone.name == "synthetic"


def test_works_with_the_real_data_config():
    config = pytest.importorskip("trainables.config")
    cfg = config.DataConfig(name="synthetic", image_size=16)
    assert ds.load_dataset(cfg).image_size == 16


# ----------------------------------------------------------------------------- disk cache


def _fake_build(calls: list[int]):
    def build():
        calls.append(1)
        time.sleep(0.2)  # widen the race window
        return {
            s: {"images": torch.full((2, 1, 4, 4), i, dtype=torch.uint8), "labels": torch.arange(2)}
            for i, s in enumerate(("train", "val", "test"))
        }

    return build


def test_disk_cache_builds_once_under_concurrency(tmp_path):
    calls: list[int] = []
    results = []
    threads = [
        threading.Thread(
            target=lambda: results.append(
                storage.disk_cached_splits(tmp_path, "x", _fake_build(calls))
            )
        )
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(results) == 3
    for r in results:
        assert torch.equal(r["val"]["images"], torch.ones((2, 1, 4, 4), dtype=torch.uint8))
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["x-test.pt", "x-train.pt", "x-val.pt"]
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temp files


def test_disk_cache_rebuilds_a_corrupt_or_old_file(tmp_path):
    calls: list[int] = []
    storage.disk_cached_splits(tmp_path, "x", _fake_build(calls))
    (tmp_path / "x-val.pt").write_bytes(b"truncated")
    storage.disk_cached_splits(tmp_path, "x", _fake_build(calls))
    assert len(calls) == 2
    torch.save(
        {"images": torch.zeros(1), "labels": torch.zeros(1), "format": -1}, tmp_path / "x-test.pt"
    )
    storage.disk_cached_splits(tmp_path, "x", _fake_build(calls))
    assert len(calls) == 3
    storage.disk_cached_splits(tmp_path, "x", _fake_build(calls))
    assert len(calls) == 3


# ----------------------------------------------------------------------------- flowers102


def test_flowers_absent_without_download_is_one_line(tmp_path):
    cfg = data_cfg("flowers102", root=str(tmp_path), download=False, image_size=32)
    with pytest.raises(DatasetUnavailableError) as info:
        ds.load_flowers102(cfg)
    message = str(info.value)
    assert "\n" not in message
    assert f"{tmp_path}/flowers-102/{{jpg/,imagelabels.mat,setid.mat}}" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_flowers_failed_download_is_one_line(tmp_path, monkeypatch):
    import torchvision.datasets.flowers102 as tv_flowers

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(tv_flowers, "download_and_extract_archive", no_network)
    cfg = data_cfg("flowers102", root=str(tmp_path), download=True, image_size=32)
    with pytest.raises(DatasetUnavailableError, match="download failed: URLError") as info:
        ds.load_flowers102(cfg)
    assert "\n" not in str(info.value)
    assert "flowers-102/{jpg/,imagelabels.mat,setid.mat}" in str(info.value)


@pytest.fixture(scope="session")
def flowers_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("flowers_cache")


@pytest.mark.slow
def test_flowers_official_split_from_shared_copy(flowers_cache, monkeypatch):
    root = flowers_root().resolve()
    if not (root / "flowers-102" / "setid.mat").exists():
        pytest.skip(f"no Flowers-102 copy at {root} (set PRUNETUNE_FLOWERS_ROOT)")
    cfg = data_cfg(
        "flowers102", root=str(root), download=False, image_size=32, cache_dir=str(flowers_cache)
    )
    start = time.perf_counter()
    splits = ds.load_flowers102(cfg)
    build_s = time.perf_counter() - start
    check_layout(splits, channels=3, image_size=32)
    assert splits.num_classes == 102
    assert [len(splits.split(s)[1]) for s in ("train", "val", "test")] == [1020, 1020, 6149]
    assert torch.bincount(splits.train_labels, minlength=102).tolist() == [10] * 102
    assert torch.bincount(splits.val_labels, minlength=102).tolist() == [10] * 102
    test_counts = torch.bincount(splits.test_labels, minlength=102)
    assert int(test_counts.min()) == 20 and int(test_counts.max()) == 238
    assert splits.mean == ds.IMAGENET_MEAN and splits.std == ds.IMAGENET_STD
    assert 40 < splits.test_images.float().mean().item() < 200  # real photos, not blank
    assert build_s < 120

    # A second load is a disk-cache hit: no decoding at all.
    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the cache was complete")

    monkeypatch.setattr(filelists, "decode_files", no_decoding)
    start = time.perf_counter()
    again = ds.load_flowers102(cfg)
    hit_s = time.perf_counter() - start
    assert torch.equal(again.test_images, splits.test_images)
    assert torch.equal(again.train_labels, splits.train_labels)
    assert hit_s < build_s
    print(f"flowers102 @32px: build {build_s:.1f}s, cache hit {hit_s:.2f}s")
