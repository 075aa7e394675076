"""Mask overlap from round checkpoints: the Jaccard overlap per layer and overall equals the
brute-force count over the sets of kept positions, for masks written by hand; the chance
baseline is d_a d_b / (d_a + d_b - d_a d_b)."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest
import torch

from analysis import aggregate, load_results
from analysis.mask_overlap import ALL_LAYERS, mask_overlap, round_masks
from analysis.plot import main

try:
    from fixtures_experiments import TrialSpec, build_experiment
except ImportError:  # tests/ collected as a package
    from tests.fixtures_experiments import TrialSpec, build_experiment
from trainables.checkpoints import save_round_checkpoint

MASKS = {  # (method, seed) -> layer -> kept positions, all at 50% sparsity
    ("snip", 0): {"conv.weight": [1, 1, 1, 1, 0, 0, 0, 0], "fc.weight": [1, 0, 1, 0]},
    ("snip", 1): {"conv.weight": [1, 1, 0, 0, 1, 1, 0, 0], "fc.weight": [1, 0, 1, 0]},
    ("random", 0): {"conv.weight": [0, 0, 0, 0, 1, 1, 1, 1], "fc.weight": [0, 1, 0, 1]},
}


@pytest.fixture()
def experiment(tmp_path):
    specs = [TrialSpec(method, seed, [(0.5, 0.8)]) for method, seed in MASKS]
    specs.append(TrialSpec("dense", 0, [(0.0, 0.9)]))
    root = build_experiment(tmp_path, "overlap", specs)
    for (method, seed), masks in MASKS.items():
        (trial_dir,) = root.glob(f"*method={method},seed={seed}_*")
        state = {"masks": {k: torch.tensor(v, dtype=torch.bool) for k, v in masks.items()}}
        save_round_checkpoint(next(trial_dir.glob("round_*")), state)
    return root


def brute_force(a: list[int], b: list[int]) -> float:
    kept_a = {i for i, keep in enumerate(a) if keep}
    kept_b = {i for i, keep in enumerate(b) if keep}
    return len(kept_a & kept_b) / len(kept_a | kept_b)


def test_every_pair_and_layer_is_the_brute_force_jaccard(experiment):
    results = load_results(experiment)
    overlap = mask_overlap(round_masks(results, aggregate(results)))
    labels = {"snip": "SNIP", "random": "random at init"}
    pairs = 0
    for (key_a, masks_a), (key_b, masks_b) in itertools.combinations(MASKS.items(), 2):
        rows = overlap[((overlap["a"] == labels[key_a[0]]) & (overlap["seed_a"] == key_a[1])
                        & (overlap["b"] == labels[key_b[0]]) & (overlap["seed_b"] == key_b[1]))
                       | ((overlap["a"] == labels[key_b[0]]) & (overlap["seed_a"] == key_b[1])
                          & (overlap["b"] == labels[key_a[0]]) & (overlap["seed_b"] == key_a[1]))]
        by_layer = rows.set_index("layer")["jaccard"]
        for layer in masks_a:
            assert by_layer[layer] == pytest.approx(brute_force(masks_a[layer], masks_b[layer]))
        joined_a = masks_a["conv.weight"] + masks_a["fc.weight"]
        joined_b = masks_b["conv.weight"] + masks_b["fc.weight"]
        assert by_layer[ALL_LAYERS] == pytest.approx(brute_force(joined_a, joined_b))
        pairs += 1
    assert pairs == 3 and set(overlap["target_sparsity"]) == {0.5}
    # Two 50% masks overlap by chance 0.25 / 0.75 = 1/3.
    assert overlap["jaccard_random"].tolist() == pytest.approx([1 / 3] * len(overlap))


def test_the_cli_writes_the_table_and_the_figure(experiment, capsys):
    assert main([str(experiment), "--mask-overlap"]) == 0
    table = pd.read_csv(experiment / "mask_overlap.csv")
    assert len(table) == 3 * 3  # three pairs, two layers each and all layers together
    assert (experiment / "mask_overlap.png").read_bytes()[:4] == b"\x89PNG"
    assert str(experiment / "mask_overlap.csv") in capsys.readouterr().out
