"""The checkpoint store (trainables/round_store.py, through trainables/checkpoints.py): exact
round trips, the encoding each tensor gets, tensors written once per trial, and damage found.

Expected sizes are counted here from the tensors themselves (entries, nonzero bit patterns),
and equality is checked on the bits, so -0.0 and NaN payloads count."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from trainables.checkpoints import (
    LEGACY_STATE_FILE,
    CheckpointError,
    load_round_checkpoint,
    save_round_checkpoint,
    stored_tensors,
)
from trainables.round_store import INDEX_FILE, TENSORS_FILE, digest, encode


def bits(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's bit patterns, so that equality sees -0.0 and NaN payloads."""
    views = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    if tensor.dtype == torch.bool or not tensor.is_floating_point():
        return tensor
    return tensor.contiguous().view(views[tensor.element_size()])


def assert_same_tree(a, b) -> None:
    assert type(a) is type(b) or (isinstance(a, dict) and isinstance(b, dict)), (a, b)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(bits(a), bits(b))
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            assert_same_tree(a[key], b[key])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same_tree(x, y)
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)
    else:
        assert a == b


def sparse_weight(shape: tuple[int, ...], density: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(shape, generator=generator)
    return weight * (torch.rand(shape, generator=generator) < density)


def a_state(seed: int = 0) -> dict:
    weight = sparse_weight((64, 32, 3, 3), 0.1, seed)
    weight[0, 0, 0, 0] = -0.0  # a signed zero is a value to keep, bit for bit
    weight[0, 0, 0, 1] = float("nan")
    return {
        "kind": "round",
        "round": 2,
        "sparsity": 0.9,
        "metrics": {"test_acc": 0.5, "loss": float("nan")},
        "layer_sparsity": {"conv.weight": {"remaining": 1843, "total": 18432}},
        "model": {"conv.weight": weight, "bn.running_mean": torch.randn(64),
                  "bn.num_batches_tracked": torch.tensor(7), "head.bias": torch.zeros(0)},
        "masks": {"conv.weight": weight != 0},
        "epoch_weights": {1: {"w": torch.randn(5)}, 3: {"w": torch.randn(5)}},
        "half": torch.randn(16, dtype=torch.bfloat16),
        "shape": (3, 32, 32),
        "layer_widths": None,
    }


def test_a_state_round_trips_exactly_with_int_keys_tuples_and_every_dtype(tmp_path: Path):
    state = a_state()
    save_round_checkpoint(tmp_path, state)
    loaded = load_round_checkpoint(tmp_path)
    assert loaded.pop("format_version") == 2
    assert_same_tree(state, loaded)
    assert sorted(p.name for p in tmp_path.iterdir()) == [INDEX_FILE, "metrics.json", TENSORS_FILE]


def test_each_tensor_gets_the_smallest_encoding(tmp_path: Path):
    multiplied = sparse_weight((1000,), 0.1, 1)  # pruned negatives are -0.0 here
    filled = multiplied.masked_fill(multiplied == 0, 0.0)  # +0.0 only, as apply_mask leaves
    dense = torch.randn(1000)
    mask = multiplied != 0
    encoded = encode({"filled": filled, "multiplied": multiplied, "dense": dense, "mask": mask})
    table, tensors = encoded.digests, encoded.tensors
    assert table[digest(filled)]["encoding"] == "sparse"
    assert table[digest(multiplied)]["encoding"] == "sparse_signed_zeros"
    assert table[digest(dense)]["encoding"] == "raw"
    assert table[digest(mask)]["encoding"] == "bits"
    nonzero = int(np.count_nonzero(filled.numpy()))
    negative_zeros = int(np.sum((multiplied.numpy() == 0) & np.signbit(multiplied.numpy())))
    assert negative_zeros > 0
    assert tensors[f"{digest(filled)}.values"].numel() == nonzero
    assert tensors[f"{digest(filled)}.bits"].numel() == 125  # 1000 entries / 8 bits
    assert f"{digest(filled)}.negzero" not in tensors
    assert tensors[f"{digest(multiplied)}.negzero"].numel() == 125
    assert tensors[f"{digest(mask)}.bits"].numel() == 125
    assert tensors[digest(dense)].numel() == 1000


def test_a_tensor_held_twice_is_stored_once_and_read_back_as_two(tmp_path: Path):
    weight = torch.randn(100)
    save_round_checkpoint(tmp_path, {"model": {"w": weight}, "best_model": {"w": weight.clone()}})
    with safe_open(str(tmp_path / TENSORS_FILE), framework="pt") as stored:
        assert list(stored.keys()) == [digest(weight)]
    loaded = load_round_checkpoint(tmp_path)
    assert torch.equal(loaded["model"]["w"], weight)
    loaded["model"]["w"].add_(1)  # the two leaves are separate tensors, as torch.load gives
    assert torch.equal(loaded["best_model"]["w"], weight)


def trial_with_two_rounds(trial: Path) -> tuple[dict, dict]:
    """Round 0 holds the init weights; round 1 carries them again beside new weights."""
    init = {"w": torch.randn(50, 50)}
    first = {"kind": "round", "round": 0, "init_weights": init, "model": {"w": torch.randn(50, 50)},
             "metrics": {"round": 0}, "layer_sparsity": {}}
    second = {"kind": "round", "round": 1, "init_weights": init,
              "model": {"w": sparse_weight((50, 50), 0.2, 3)},
              "metrics": {"round": 1}, "layer_sparsity": {}}
    save_round_checkpoint(trial / "round_000000", first)
    held = stored_tensors([trial / "round_000000"])
    save_round_checkpoint(trial / "round_000001", second, held)
    return first, second


def test_tensors_an_earlier_round_holds_are_referenced_not_written_again(tmp_path: Path):
    first, second = trial_with_two_rounds(tmp_path)
    index = json.loads((tmp_path / "round_000001" / INDEX_FILE).read_text())
    init_key = digest(first["init_weights"]["w"])
    assert index["tensors"][init_key]["in"] == "round_000000"
    with safe_open(str(tmp_path / "round_000001" / TENSORS_FILE), framework="pt") as own:
        assert not any(key.startswith(init_key) for key in own.keys())  # noqa: SIM118
    loaded = load_round_checkpoint(tmp_path / "round_000001")
    assert torch.equal(loaded["init_weights"]["w"], first["init_weights"]["w"])
    assert torch.equal(loaded["model"]["w"], second["model"]["w"])


def test_a_progress_checkpoint_is_never_referenced(tmp_path: Path):
    """Progress checkpoints are deleted once superseded: what they hold must be written again."""
    save_round_checkpoint(tmp_path / "round_000000", {"kind": "progress", "w": torch.ones(9)})
    assert stored_tensors([tmp_path / "round_000000"]) == {}


def test_changed_bytes_in_a_tensor_file_are_refused_not_loaded(tmp_path: Path):
    weight = torch.randn(1000)
    save_round_checkpoint(tmp_path, {"model": {"w": weight}})
    path = tmp_path / TENSORS_FILE
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # inside the tensor data; the file keeps its size and header
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match its digest"):
        load_round_checkpoint(tmp_path)


def test_a_missing_referenced_round_is_a_checkpoint_error_naming_it(tmp_path: Path):
    trial_with_two_rounds(tmp_path)
    (tmp_path / "round_000000" / TENSORS_FILE).unlink()
    with pytest.raises(CheckpointError, match="round_000000") as raised:
        load_round_checkpoint(tmp_path / "round_000001")
    assert "\n" not in str(raised.value)


def test_an_index_of_another_version_is_refused_naming_it(tmp_path: Path):
    save_round_checkpoint(tmp_path, {"w": torch.ones(3)})
    index = json.loads((tmp_path / INDEX_FILE).read_text())
    (tmp_path / INDEX_FILE).write_text(json.dumps({**index, "format_version": 9}))
    with pytest.raises(CheckpointError, match="format version 9"):
        load_round_checkpoint(tmp_path)


def test_a_checkpoint_of_the_earlier_layout_still_loads(tmp_path: Path):
    state = {"format_version": 1, "kind": "round", "model": {"w": torch.randn(4)}}
    torch.save(state, tmp_path / LEGACY_STATE_FILE)
    loaded = load_round_checkpoint(tmp_path)
    assert torch.equal(loaded["model"]["w"], state["model"]["w"]) and loaded["format_version"] == 1


class CapturingReporter:
    """A DirectoryReporter that keeps a deep copy of every checkpoint state as it was handed
    over, before it is encoded: what a round held in memory."""

    def __init__(self, directory: Path) -> None:
        from trainables.reporting import DirectoryReporter

        self.inner = DirectoryReporter(directory)
        self.states: list[dict] = []

    def report(self, rows, state=None, shared=None) -> None:
        import copy

        if state is not None:
            self.states.append(copy.deepcopy(state))
        self.inner.report(rows, state, shared)

    def latest_state(self):
        return self.inner.latest_state()


def test_every_round_of_a_trial_loads_bit_for_bit_and_the_dense_round_is_referenced(
    tiny_trial, tmp_path: Path
):
    """An IMP trial whose dense model comes through the experiment's dense cache: each round
    checkpoint decodes to exactly the state the trial handed over, `load_round` rebuilds its
    weights exactly, and the trial's round 0 holds none of the dense model's tensors itself."""
    from trainables.resolve import parse_trial_config
    from trainables.tickets import RoundNotFoundError, load_round
    from trainables.trial import run_trial

    experiment = tmp_path / "experiment"
    trial_dir = experiment / "imp_s0_00000_00000"
    cache = experiment / "dense_cache"
    raw = tiny_trial(method="imp", imp={"rounds": 2, "rate": 0.5, "rewind": "epoch:1"},
                     dense_model={"cache": str(cache), "keep_epochs": [1]})
    trial_dir.mkdir(parents=True)
    (trial_dir / "params.json").write_text(json.dumps({"trial": raw}))
    reporter = CapturingReporter(trial_dir)
    run_trial(parse_trial_config(raw), reporter, cpus=1)

    rounds = [state for state in reporter.states if state["kind"] == "round"]
    directories = sorted(p for p in trial_dir.glob("round_*")
                         if (p / "metrics.json").is_file())
    assert [state["round"] for state in rounds] == [0, 1, 2] and len(directories) == 3
    for state, directory in zip(rounds, directories, strict=True):
        loaded = load_round_checkpoint(directory)
        loaded.pop("format_version")
        assert_same_tree(state, loaded)
        # The last round keeps one weight set: asking for the other is refused in one line.
        if "model" not in state:
            assert state["round"] == 2
            with pytest.raises(RoundNotFoundError, match="keeps only its best-validation"):
                load_round(experiment, trial_dir.name, 2, weights="last")
        for weights, key in (("best", "best_model"), ("last", "model"))[:1 + ("model" in state)]:
            model, _ = load_round(experiment, trial_dir.name, state["round"], weights=weights)
            for name, tensor in model.state_dict().items():
                assert torch.equal(bits(tensor), bits(state[key][name])), (state["round"], name)

    (entry,) = [p for p in cache.iterdir() if p.is_dir()]
    round0 = json.loads((directories[0] / INDEX_FILE).read_text())["tensors"]
    assert {meta["in"] for meta in round0.values()} == {f"../dense_cache/{entry.name}"}
    assert not (directories[0] / TENSORS_FILE).exists()
    later = json.loads((directories[2] / INDEX_FILE).read_text())["tensors"]
    init = rounds[2]["init_weights"]
    assert {later[digest(t)]["in"] for t in init.values()} == {f"../dense_cache/{entry.name}"}

    # A second trial of the recipe reuses the cached dense model: its round 0 references it too.
    other_dir = experiment / "imp_s0_00000_00001"
    other = {**raw, "imp": {"rounds": 1, "rate": 0.3, "rewind": "epoch:1"}}
    other_dir.mkdir()
    (other_dir / "params.json").write_text(json.dumps({"trial": other}))
    run_trial(parse_trial_config(other), CapturingReporter(other_dir), cpus=1)
    first = min(other_dir.glob("round_*"))
    reused = json.loads((first / INDEX_FILE).read_text())["tensors"]
    assert {meta["in"] for meta in reused.values()} == {f"../dense_cache/{entry.name}"}
    reused_state, trained_state = map(load_round_checkpoint, (first, directories[0]))
    for key in ("model", "best_model", "masks", "init_weights", "epoch_weights"):
        assert_same_tree(reused_state[key], trained_state[key])


def test_the_docs_recipe_reads_a_round_without_prunetune(tmp_path: Path, monkeypatch):
    """docs/results-and-checkpoints.md's snippet (safetensors + numpy only) gives every weight
    of a round bit for bit, including those an earlier round holds."""
    docs = Path(__file__).resolve().parents[1] / "docs" / "results-and-checkpoints.md"
    text = docs.read_text().split("Reading a round without prunetune")[1]
    snippet = text.split("```python")[1].split("```")[0]
    first, second = trial_with_two_rounds(tmp_path)
    second_dir = tmp_path / "round_000001"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(snippet.replace("round_000002", second_dir.name), namespace)  # noqa: S102
    weights = namespace["weights"]
    assert sorted(weights) == sorted(second["model"])
    for name, tensor in second["model"].items():
        assert np.array_equal(weights[name].reshape(-1).view(np.uint8),
                              tensor.contiguous().reshape(-1).numpy().view(np.uint8)), name
    init = first["init_weights"]["w"]  # held by round_000000, referenced by the second
    assert np.array_equal(namespace["tensor"](second_dir, digest(init)), init.numpy())


def test_only_the_entries_asked_for_are_read(tmp_path: Path):
    """`only` decodes just those entries: with the round holding the init weights gone, the
    later round's own model still loads, and the full state does not."""
    _, second = trial_with_two_rounds(tmp_path)
    (tmp_path / "round_000000" / TENSORS_FILE).unlink()
    later = tmp_path / "round_000001"
    partial = load_round_checkpoint(later, only=("model", "round"))
    assert set(partial) == {"format_version", "model", "round"} and partial["round"] == 1
    assert torch.equal(partial["model"]["w"], second["model"]["w"])
    with pytest.raises(CheckpointError):
        load_round_checkpoint(later)
