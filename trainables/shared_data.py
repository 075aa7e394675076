"""Sharing one decoded dataset between the trials of a node through Ray's object store.

Ray deserialises numpy arrays from the object store without copying (they stay in shared
memory), but copies torch tensors. So splits travel as numpy arrays and become tensors that
view the shared memory again inside each trial: N concurrent trials hold one copy, not N.
Streamed datasets (`StreamingSplits`) are only file lists and travel as they are.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np
import torch

from trainables.datasets import ImageSplits

_ARRAY_FIELDS = tuple(
    field.name for field in dataclasses.fields(ImageSplits)
    if field.name.endswith(("_images", "_labels"))
)


def to_shareable(splits: Any) -> Any:
    """A plain dict of numpy arrays and metadata, cheap to `ray.put` and zero-copy to get
    (a `StreamingSplits` is returned as it is)."""
    if not isinstance(splits, ImageSplits):
        return splits
    shared = dataclasses.asdict(splits)
    for name in _ARRAY_FIELDS:
        shared[name] = getattr(splits, name).numpy()
    return shared


def from_shareable(shared: Any) -> Any:
    """ImageSplits whose tensors view the (read-only) shared arrays; nothing is copied
    (anything but a `to_shareable` dict is returned as it is)."""
    if not isinstance(shared, dict):
        return shared
    fields = dict(shared)
    with warnings.catch_warnings():
        # The object store's arrays are read-only; the training loop only ever reads them.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        for name in _ARRAY_FIELDS:
            fields[name] = torch.from_numpy(np.asarray(shared[name]))
    return ImageSplits(**fields)
