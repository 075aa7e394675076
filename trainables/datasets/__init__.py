"""Datasets registry: one module per dataset, each registering a loader with `register_dataset`.

Adding a dataset means adding one module here that registers its loader: every module of this
package is imported here, so nothing else names it (a dataset from the user's own package is a
plug-in, see `trainables/plugins.py`).

Every loader returns `ImageSplits` (decoded once into uint8 tensors: digits, synthetic, CIFAR,
and file datasets that fit in memory) or `StreamingSplits` (file datasets read from disk every
epoch); the training loop draws batches from either through `batches(split, ...)`.
"""

from trainables.datasets.common import (
    DATASETS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    OPTIONAL_FIELDS,
    DatasetDefaults,
    ImageSplits,
    batch_augment,
    clear_process_cache,
    data_identity,
    dataset_defaults,
    load_dataset,
    register_dataset,
    resolved,
    resolved_cache_dir,
    resolved_image_size,
    store_size_for,
)
from trainables.datasets.digits import digits_split_indices, load_digits
from trainables.datasets.flowers102 import load_flowers102
from trainables.datasets.streaming import StreamingSplits
from trainables.datasets.synthetic import load_synthetic
from trainables.plugins import import_submodules

import_submodules(__name__, __path__)

#: What `load_dataset` returns: decoded uint8 splits, or splits streamed from files.
DatasetSplits = ImageSplits | StreamingSplits

__all__ = [
    "DATASETS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "OPTIONAL_FIELDS",
    "DatasetDefaults",
    "DatasetSplits",
    "ImageSplits",
    "batch_augment",
    "StreamingSplits",
    "clear_process_cache",
    "data_identity",
    "dataset_defaults",
    "digits_split_indices",
    "load_dataset",
    "load_digits",
    "load_flowers102",
    "load_synthetic",
    "register_dataset",
    "resolved",
    "resolved_cache_dir",
    "resolved_image_size",
    "store_size_for",
]
