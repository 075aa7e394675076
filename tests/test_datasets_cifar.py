"""CIFAR-10/100 from files in the official pickle layout, written by the test (dataset_files.py).

The reference reader is torchvision's own CIFAR10/CIFAR100 class, pointed at the same files with
their MD5 sums computed here by hashlib (it refuses files whose sums differ from its lists).
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import types
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from dataset_files import write_cifar
from torchvision.datasets import CIFAR10, CIFAR100

from trainables.datasets import cifar
from trainables.errors import ConfigError, DatasetUnavailableError


def data_cfg(root: Path, name: str = "cifar10", **overrides) -> types.SimpleNamespace:
    fields = dict(name=name, root=str(root), image_size=None, download=False, split_seed=0,
                  val_size=10, cache_dir=None)
    fields.update(overrides)
    return types.SimpleNamespace(**fields)


def torchvision_reader(cls: type[CIFAR10], root: Path, train: bool) -> CIFAR10:
    """torchvision's class, with the MD5 lists recomputed for the files under `root`."""

    def with_sums(entries: list[list[str]]) -> list[list[str]]:
        folder = root / cls.base_folder
        return [[name, hashlib.md5((folder / name).read_bytes()).hexdigest()]
                for name, _ in entries]

    meta_path = root / cls.base_folder / cls.meta["filename"]
    patched = type(
        "Patched" + cls.__name__, (cls,),
        {
            "train_list": with_sums(cls.train_list),
            "test_list": with_sums(cls.test_list),
            "meta": {**cls.meta, "md5": hashlib.md5(meta_path.read_bytes()).hexdigest()},
        },
    )
    return patched(str(root), train=train)


@pytest.fixture(scope="module")
def cifar10_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cifar10")
    write_cifar(root, "cifar10", train_per_file=8, test=10)  # 40 train images, 4 per class
    return root


@pytest.mark.parametrize(("kind", "cls", "classes"), [("cifar10", CIFAR10, 10),
                                                      ("cifar100", CIFAR100, 100)])
def test_reads_what_torchvision_reads(tmp_path, kind, cls, classes):
    per_file = 8 if kind == "cifar10" else 200
    write_cifar(tmp_path, kind, train_per_file=per_file, test=12)
    val_size = 10 if kind == "cifar10" else 100
    splits = cifar.load_cifar(data_cfg(tmp_path, kind, val_size=val_size), cls, classes)
    reference_train = torchvision_reader(cls, tmp_path, train=True)
    reference_test = torchvision_reader(cls, tmp_path, train=False)

    # Test split: torchvision's test set, in its order (torchvision stores HWC).
    expected_test = torch.from_numpy(reference_test.data).permute(0, 3, 1, 2)
    assert torch.equal(splits.test_images, expected_test)
    assert splits.test_labels.tolist() == reference_test.targets
    # Train + val: exactly torchvision's training set, each image with its label, none twice.
    reference = {image.tobytes(): label for image, label in
                 zip(reference_train.data.transpose(0, 3, 1, 2), reference_train.targets,
                     strict=True)}
    ours = [(image.numpy().tobytes(), int(label))
            for split in ("train", "val") for image, label in zip(*splits.split(split),
                                                                   strict=True)]
    assert len(ours) == len(reference) == len(set(image for image, _ in ours))
    assert all(reference[image] == label for image, label in ours)
    assert len(splits.val_labels) == val_size
    assert splits.num_classes == classes and splits.in_channels == 3
    assert splits.image_size == splits.store_size == 32


def test_cifar100_uses_the_fine_labels(tmp_path):
    written = write_cifar(tmp_path, "cifar100", train_per_file=200, test=12)
    splits = cifar.load_cifar(data_cfg(tmp_path, "cifar100", val_size=100), CIFAR100, 100)
    assert splits.test_labels.tolist() == written["test_labels"].tolist()
    assert int(splits.train_labels.max()) > 19  # coarse labels stop at 19


def test_hold_out_is_stratified_seeded_and_disjoint(cifar10_root):
    a = cifar.load_cifar(data_cfg(cifar10_root), CIFAR10, 10)
    # 40 training images, 4 per class; a 10-image stratified hold-out takes one of each class.
    assert sorted(a.val_labels.tolist()) == list(range(10))
    assert torch.bincount(a.train_labels, minlength=10).tolist() == [3] * 10
    train = {image.numpy().tobytes() for image in a.train_images}
    assert not train & {image.numpy().tobytes() for image in a.val_images}
    b = cifar.load_cifar(data_cfg(cifar10_root), CIFAR10, 10)
    c = cifar.load_cifar(data_cfg(cifar10_root, split_seed=1), CIFAR10, 10)
    assert torch.equal(a.val_images, b.val_images)
    assert not torch.equal(a.val_images, c.val_images)
    with pytest.raises(ConfigError, match="data.val_size 40"):
        cifar.load_cifar(data_cfg(cifar10_root, val_size=40), CIFAR10, 10)


def test_statistics_are_the_training_split_s_own(cifar10_root):
    splits = cifar.load_cifar(data_cfg(cifar10_root), CIFAR10, 10)
    pixels = splits.train_images.numpy().astype(np.float64) / 255
    assert splits.mean == pytest.approx(pixels.mean(axis=(0, 2, 3)).tolist(), abs=1e-12)
    # torch's std is the unbiased one; numpy's with ddof=1 is the same estimator.
    per_channel = pixels.transpose(1, 0, 2, 3).reshape(3, -1)
    assert splits.std == pytest.approx(per_channel.std(axis=1, ddof=1).tolist(), abs=1e-12)


def test_image_size_resizes_every_split(cifar10_root):
    splits = cifar.load_cifar(data_cfg(cifar10_root, image_size=16), CIFAR10, 10)
    for split in ("train", "val", "test"):
        assert splits.split(split)[0].shape[1:] == (3, 16, 16)
    # A 2x bilinear antialiased downscale of a 32 px image averages 2x2 (and neighbouring)
    # pixels: the means agree closely.
    full = cifar.load_cifar(data_cfg(cifar10_root), CIFAR10, 10)
    assert splits.test_images.float().mean() == pytest.approx(
        full.test_images.float().mean().item(), abs=1.0
    )


def test_md5_mismatch_is_a_one_line_warning_naming_the_file(cifar10_root, caplog):
    with caplog.at_level(logging.WARNING, logger="trainables.datasets.cifar"):
        cifar.load_cifar(data_cfg(cifar10_root), CIFAR10, 10)
    messages = [record.getMessage() for record in caplog.records]
    folder = cifar10_root / "cifar-10-batches-py"
    for name in ("data_batch_1", "data_batch_5", "test_batch"):
        (line,) = [m for m in messages if f"{folder / name} " in m]
        assert "\n" not in line and "differs from the official CIFAR release" in line
        assert hashlib.md5((folder / name).read_bytes()).hexdigest() in line


def test_absent_files_are_a_one_line_error_naming_the_folder(tmp_path, monkeypatch):
    with pytest.raises(DatasetUnavailableError) as info:
        cifar.load_cifar(data_cfg(tmp_path), CIFAR10, 10)
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "cifar-10-batches-py") in message
    assert "data.download" in message

    from torchvision.datasets import utils as tv_utils

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", no_network)
    with pytest.raises(DatasetUnavailableError, match="download failed: URLError") as info:
        cifar.load_cifar(data_cfg(tmp_path, "cifar100", download=True), CIFAR100, 100)
    assert "\n" not in str(info.value) and "cifar-100-python" in str(info.value)


class _RunsCode:
    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    write_cifar(tmp_path, "cifar10")
    marker = tmp_path / "code-ran"
    hostile = _RunsCode()
    hostile.target = str(marker)
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_3", "wb") as file:
        pickle.dump({"data": hostile, "labels": []}, file, protocol=2)
    with pytest.raises(DatasetUnavailableError, match="data_batch_3 is not a CIFAR batch"):
        cifar.load_cifar(data_cfg(tmp_path), CIFAR10, 10)
    assert not marker.exists()
