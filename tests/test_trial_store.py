"""The trial store's slots: names and order, replacement of an earlier attempt's copy, what a
new round may reference, and the same slots on a filesystem that is not local (cloud storage,
played by pyarrow's SubTreeFileSystem over a temporary directory)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.fs
import pytest
import torch

from trainables.checkpoints import load_round_checkpoint
from trainables.round_store import INDEX_FILE, read_index
from trainables.trial_store import TrialStore, held_for, slot_name, slot_order


def round_state(number: int, weights: torch.Tensor) -> dict[str, Any]:
    return {"kind": "round", "round": number, "metrics": {"round": number},
            "layer_sparsity": {}, "model": {"w": weights}, "init_weights": {"w": torch.zeros(4)}}


def progress_state(number: int, epochs_done: int) -> dict[str, Any]:
    return {"kind": "progress", "round": number, "phase": {"epochs_done": epochs_done},
            "model": {"w": torch.full((4,), float(epochs_done))}}


def test_slot_names_sort_in_the_order_a_trial_writes_them() -> None:
    written = [round_state(0, torch.ones(4)), progress_state(1, 1), progress_state(1, 12),
               round_state(1, torch.ones(4)), progress_state(2, 3)]
    names = [slot_name(state) for state in written]
    assert names == ["round_000000", "progress_000001_000001", "progress_000001_000012",
                     "round_000001", "progress_000002_000003"]
    assert sorted(reversed(names), key=slot_order) == names
    for other in ("checkpoint_000001", "round_1", "round_000001_000002", "progress_000001"):
        assert slot_order(other) is None, other


def test_a_rewritten_round_replaces_the_earlier_attempts_copy(tmp_path: Path) -> None:
    store = TrialStore.for_directory(tmp_path)
    store.write(round_state(0, torch.ones(4)))
    store.write(round_state(0, torch.full((4,), 2.0)))
    assert store.slots() == ["round_000000"]
    assert torch.equal(store.load("round_000000")["model"]["w"], torch.full((4,), 2.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["round_000000"]  # no staging left


def test_a_round_references_only_the_rounds_before_it(tmp_path: Path) -> None:
    """A later round left by an earlier attempt may be rewritten: nothing may depend on it."""
    store = TrialStore.for_directory(tmp_path)
    shared = torch.arange(4.0)
    store.write(round_state(0, torch.ones(4)))
    store.write(round_state(2, shared))  # a leftover of an earlier attempt
    store.write(round_state(1, shared))
    holders = {meta["in"] for meta in read_index(tmp_path / "round_000001")["tensors"].values()}
    assert holders == {None, "round_000000"}  # its weights are its own, its init is round 0's
    assert set(held_for(tmp_path, before="round_000001").values()) == {"round_000000"}


def remote(tmp_path: Path) -> TrialStore:
    filesystem = pyarrow.fs.SubTreeFileSystem(str(tmp_path), pyarrow.fs.LocalFileSystem())
    filesystem.create_dir("experiment/trial")
    return TrialStore(filesystem, "experiment/trial")


def test_on_cloud_storage_slots_are_uploaded_whole_and_stand_alone(tmp_path: Path) -> None:
    store = remote(tmp_path)
    assert not store.local
    store.write(round_state(0, torch.ones(4)))
    store.write(progress_state(1, 1))
    store.write(progress_state(1, 2))
    store.keep_only("progress_000001_000002")
    assert store.slots() == ["round_000000", "progress_000001_000002"]
    local = tmp_path / "experiment" / "trial"
    assert sorted(p.name for p in (local / "round_000000").iterdir()) == [
        INDEX_FILE, "metrics.json", "tensors.safetensors"]
    name, state = store.newest_usable()
    assert name == "progress_000001_000002"
    assert torch.equal(state["model"]["w"], torch.full((4,), 2.0))
    # Every slot stands alone there: nothing references another directory.
    assert torch.equal(load_round_checkpoint(local / "round_000000")["model"]["w"], torch.ones(4))


def test_a_half_uploaded_slot_is_passed_over_with_a_message(tmp_path: Path) -> None:
    store = remote(tmp_path)
    store.write(round_state(0, torch.ones(4)))
    store.write(round_state(1, torch.full((4,), 3.0)))
    (tmp_path / "experiment" / "trial" / "round_000001" / INDEX_FILE).unlink()  # cut off
    warnings: list[str] = []
    name, state = store.newest_usable(warn=warnings.append)
    assert name == "round_000000" and torch.equal(state["model"]["w"], torch.ones(4))
    assert len(warnings) == 1 and "round_000001" in warnings[0]


@pytest.mark.parametrize("where", ["local", "remote"])
def test_keep_only_removes_every_other_progress_slot(tmp_path: Path, where: str) -> None:
    store = TrialStore.for_directory(tmp_path) if where == "local" else remote(tmp_path)
    for epochs in (1, 2, 3):
        store.write(progress_state(1, epochs))
    store.write(round_state(1, torch.ones(4)))
    store.keep_only("round_000001")
    assert store.slots() == ["round_000001"]
