"""The on-disk form of a checkpoint: a JSON index plus safetensors, each tensor stored once.

A checkpoint's state is a tree of dicts, lists and scalars with tensors at its leaves (model,
masks, the weights a method carries from round to round). It is written as

* `tensors.safetensors`: the tensors this checkpoint is the first of its trial to hold, each
  under its content digest, encoded as the smallest of
  - `raw`: as it is;
  - `bits`: a bool tensor (a mask) bit-packed, 1 bit per entry (`<digest>.bits`);
  - `sparse`: a tensor most of whose entries are zero, as a bitmap of its nonzero entries
    (`<digest>.bits`) and their values (`<digest>.values`); `sparse_signed_zeros` adds a
    bitmap of its -0.0 entries (`<digest>.negzero`), which masking by multiplication leaves;
* `index.json`: the format version, the tree with every tensor replaced by `{"tensor": digest}`
  (dicts as `{"dict": [[key, value], ...]}` so that integer keys stay integers, tuples as
  `{"tuple": [...]}`), and per digest its dtype, shape, encoding and the checkpoint directory
  that holds it (`"in"`: null for this one, else a sibling's name in the same trial directory).

A tensor already held by an earlier round checkpoint of the trial (the init and rewind weights,
the unchanged masks of layers a round did not prune, `best_model` where it equals `model`) is
referenced, not written again. Only round checkpoints are referenced: a progress checkpoint is
deleted once a newer one is reported. Decoding is exact (bit for bit, -0.0 included). The index
is written last, under a temporary name and renamed: a directory without `index.json` holds no
checkpoint.

Reading without prunetune: `json.load(index.json)`, then `safetensors.safe_open` on the file
named by each digest's `"in"`; docs/results-and-checkpoints.md has the recipe.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainables.files import atomic_write

FORMAT_VERSION = 2
INDEX_FILE = "index.json"
TENSORS_FILE = "tensors.safetensors"
#: Integer views of each float width: a tensor's digest is taken over its bits.
_BIT_VIEWS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


class StoreFormatError(ValueError):
    """A checkpoint index or tensor file that cannot be decoded (the message is one line)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


@dataclass(frozen=True)
class Encoded:
    """One checkpoint's encoding: the index to write, and the tensors new to its trial."""

    index: dict[str, Any]
    tensors: dict[str, torch.Tensor]

    @property
    def digests(self) -> dict[str, dict[str, Any]]:
        return self.index["tensors"]


def digest(tensor: torch.Tensor) -> str:
    """Content address of a tensor: dtype, shape and bytes."""
    hasher = hashlib.sha256(f"{tensor.dtype}|{tuple(tensor.shape)}|".encode())
    hasher.update(_bytes(tensor))
    return hasher.hexdigest()[:32]


def _bytes(tensor: torch.Tensor) -> memoryview:
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.view(torch.uint8)
    elif flat.is_floating_point() or flat.is_complex():
        flat = flat.view(_BIT_VIEWS[flat.element_size()]) if flat.element_size() in _BIT_VIEWS \
            else flat
    return memoryview(flat.numpy()).cast("B")


def encode(state: Mapping[str, Any], stored: Mapping[str, str] | None = None) -> Encoded:
    """Encode `state`; `stored` maps the digests other checkpoints already hold to the
    holder's path relative to the trial directory (a sibling checkpoint, or the dense cache)."""
    stored = stored or {}
    table: dict[str, dict[str, Any]] = {}
    tensors: dict[str, torch.Tensor] = {}

    def leaf(tensor: torch.Tensor) -> dict[str, str]:
        key = digest(tensor)
        if key not in table:
            meta = {"dtype": str(tensor.dtype).removeprefix("torch."),
                    "shape": list(tensor.shape)}
            if key in stored:
                meta["in"] = stored[key]
                meta["encoding"] = None  # the holder's index says how it is stored
            else:
                meta["in"] = None
                meta["encoding"] = _encode_tensor(key, tensor, tensors)
            table[key] = meta
        return {"tensor": key}

    tree = _walk(dict(state), leaf)
    return Encoded({"format_version": FORMAT_VERSION, "state": tree, "tensors": table}, tensors)


def _walk(value: Any, leaf: Callable[[torch.Tensor], dict[str, str]]) -> Any:
    if isinstance(value, torch.Tensor):
        return leaf(value)
    if isinstance(value, Mapping):
        items = []
        for key, item in value.items():
            if not isinstance(key, str | int):
                raise TypeError(f"checkpoint dict keys must be str or int; got {key!r}")
            items.append([key, _walk(item, leaf)])
        return {"dict": items}
    if isinstance(value, tuple):
        return {"tuple": [_walk(item, leaf) for item in value]}
    if isinstance(value, list):
        return [_walk(item, leaf) for item in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"a checkpoint holds tensors, dicts, lists and scalars; got {type(value)}")


def _encode_tensor(key: str, tensor: torch.Tensor, out: dict[str, torch.Tensor]) -> str:
    tensor = tensor.detach().to("cpu").contiguous()
    count = tensor.numel()
    if tensor.dtype == torch.bool:
        out[f"{key}.bits"] = _pack(tensor.reshape(-1))
        return "bits"
    if tensor.is_floating_point() and count:
        flat = tensor.reshape(-1)
        kept = flat != 0  # NaN included
        # Masking by multiplication leaves -0.0 where a negative weight was pruned: its sign is
        # kept in a second bitmap (only when there is one) so that decoding is bit-exact.
        signed_zeros = (flat == 0) & torch.signbit(flat)
        has_signed = bool(signed_zeros.any())
        bitmap = (count + 7) // 8
        size = bitmap * (2 if has_signed else 1) + int(kept.sum()) * flat.element_size()
        if size < count * flat.element_size():
            out[f"{key}.bits"] = _pack(kept)
            out[f"{key}.values"] = flat[kept].clone()
            if has_signed:
                out[f"{key}.negzero"] = _pack(signed_zeros)
                return "sparse_signed_zeros"
            return "sparse"
    out[key] = tensor
    return "raw"


def _pack(flags: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.packbits(flags.numpy().astype(np.uint8)))


def _unpack(packed: torch.Tensor, count: int) -> torch.Tensor:
    return torch.from_numpy(np.unpackbits(packed.numpy(), count=count).astype(bool))


def write(directory: Path, encoded: Encoded,
          before_each: Callable[[Path], None] = lambda target: None) -> None:
    """Write the tensor file (if any tensor is new) and then the index, each atomically;
    `before_each(temporary_path)` runs before each file is written (the tests' fault hook)."""
    from safetensors.torch import save_file

    def tensors(target: Path) -> None:
        before_each(target)
        save_file(encoded.tensors, str(target))

    def index(target: Path) -> None:
        before_each(target)
        target.write_text(json.dumps(encoded.index, allow_nan=True))

    if encoded.tensors:
        atomic_write(directory / TENSORS_FILE, tensors)
    atomic_write(directory / INDEX_FILE, index)


def read_index(directory: Path) -> dict[str, Any]:
    """A checkpoint's index; StoreFormatError when it is not a readable index of this format."""
    path = directory / INDEX_FILE
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise StoreFormatError(f"{path}: unreadable index ({type(error).__name__})") from None
    version = index.get("format_version") if isinstance(index, dict) else None
    if version != FORMAT_VERSION:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        advice = ": written by a newer prunetune, upgrade to read it" if newer else ""
        raise StoreFormatError(f"{path}: checkpoint format version {version!r}; this prunetune "
                               f"reads version {FORMAT_VERSION}{advice}")
    return index


def held_digests(directory: Path) -> dict[str, str]:
    """Where each tensor of a checkpoint is held, relative to the checkpoint's parent: its own
    name for the ones its tensor file holds, else the holder its index names."""
    index = read_index(directory)
    return {key: meta["in"] or directory.name for key, meta in index["tensors"].items()}


def read(directory: Path, only: Collection[str] | None = None) -> dict[str, Any]:
    """Decode a checkpoint written by `write`, following references to sibling checkpoints;
    `only`: decode just these top-level entries of the state (the others are not read)."""
    from safetensors import safe_open

    index = read_index(directory)
    files: dict[str, Any] = {}
    holders: dict[str, dict[str, Any]] = {}

    def open_file(holder: str | None) -> Any:
        name = holder or ""
        if name not in files:
            base = directory if holder is None else directory.parent / holder
            path = base / TENSORS_FILE
            try:
                files[name] = safe_open(str(path), framework="pt")
            except Exception as error:  # missing, truncated or corrupt: many types
                raise StoreFormatError(f"{path}: unreadable tensors ({error})") from None
        return files[name]

    def encoding_of(key: str, meta: dict[str, Any]) -> str:
        if meta["in"] is None:
            return meta["encoding"]
        if meta["in"] not in holders:
            holders[meta["in"]] = read_index(directory.parent / meta["in"])["tensors"]
        held = holders[meta["in"]].get(key)
        if held is None or held["in"] is not None:
            raise StoreFormatError(f"{directory}: tensor {key} is not held by {meta['in']}")
        return held["encoding"]

    def tensor(key: str) -> torch.Tensor:
        value = stored_tensor(key)
        if digest(value) != key:  # bytes changed on disk: never hand back altered weights
            raise StoreFormatError(f"{directory}: tensor {key} does not match its digest "
                                   f"(a corrupt {TENSORS_FILE})")
        return value

    def stored_tensor(key: str) -> torch.Tensor:
        meta = index["tensors"][key]
        source = open_file(meta["in"])
        shape, count = meta["shape"], int(np.prod(meta["shape"], dtype=np.int64))
        encoding = encoding_of(key, meta)
        try:
            if encoding == "raw":
                return source.get_tensor(key)
            if encoding == "bits":
                return _unpack(source.get_tensor(f"{key}.bits"), count).reshape(shape)
            if encoding in ("sparse", "sparse_signed_zeros"):
                kept = _unpack(source.get_tensor(f"{key}.bits"), count)
                values = source.get_tensor(f"{key}.values")
                dense = torch.zeros(count, dtype=values.dtype)
                dense[kept] = values
                if encoding == "sparse_signed_zeros":
                    dense[_unpack(source.get_tensor(f"{key}.negzero"), count)] = -0.0
                return dense.reshape(shape)
        except Exception as error:
            raise StoreFormatError(f"{directory}: tensor {key}: {error}") from None
        raise StoreFormatError(f"{directory}: tensor {key} has unknown encoding {encoding!r}")

    decoded: dict[str, torch.Tensor] = {}

    def rebuild(value: Any) -> Any:
        if isinstance(value, list):
            return [rebuild(item) for item in value]
        if isinstance(value, dict):
            if "tensor" in value:
                key = value["tensor"]
                if key not in decoded:
                    decoded[key] = tensor(key)
                    return decoded[key]
                return decoded[key].clone()  # each leaf its own tensor, as torch.load gives
            if "dict" in value:
                return {key: rebuild(item) for key, item in value["dict"]}
            if "tuple" in value:
                return tuple(rebuild(item) for item in value["tuple"])
            raise StoreFormatError(f"{directory}: unknown node {sorted(value)}")
        return value

    tree = index["state"]
    if only is not None:
        tree = {"dict": [[key, value] for key, value in tree["dict"] if key in only]}
    return rebuild(tree)
