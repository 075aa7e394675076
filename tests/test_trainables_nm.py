"""`prune.pattern: "N:M"` at the trial level: the saved masks are exactly the N:M masks a brute
force over every group's choices picks, pruned weights are zero, the rows say what was measured;
methods it does not apply to refuse it."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import torch

from pruning.nm_latency import CPU_NOTE
from trainables.checkpoints import load_round_checkpoint
from trainables.errors import ConfigError
from trainables.reporting import DirectoryReporter
from trainables.resolve import parse_trial_config
from trainables.trial import run_trial


def run(trial: dict[str, Any], directory: Path) -> tuple[list[dict[str, Any]], list[dict]]:
    reporter = DirectoryReporter(directory)
    run_trial(parse_trial_config(trial), reporter)
    paths = sorted(path for path in directory.glob("round_*") if path.is_dir())
    states = [load_round_checkpoint(p) for p in paths]
    return [r for r in reporter.rows if r["row_type"] == "round"], states


def brute_force_nm(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """For each group of m consecutive entries of each row of scores.reshape(out, -1), the
    n-subset with the largest score sum (found by trying every subset)."""
    groups = scores.reshape(-1, m).tolist()
    keep = []
    for group in groups:
        best = max(itertools.combinations(range(m), n), key=lambda s: sum(group[i] for i in s))
        keep.append([i in best for i in range(m)])
    return torch.tensor(keep).reshape(scores.shape)


@pytest.mark.parametrize("pattern", ["2:4", "1:4"])
def test_imp_oneshot_masks_are_the_brute_force_n_of_m_by_magnitude(tiny_trial, tmp_path, pattern):
    n, m = map(int, pattern.split(":"))
    rows, states = run(tiny_trial(method="imp", imp={"schedule": "oneshot"},
                                  prune={"pattern": pattern}), tmp_path)
    dense, pruned = states
    covered = 0
    for name, keep in pruned["masks"].items():
        weights = dense["model"][name]  # what one-shot IMP scores: the trained dense weights
        if keep[0].numel() % m:  # rows M does not divide (the 1-channel 3x3 stem): untouched
            assert keep.all(), name
            continue
        assert torch.equal(keep, brute_force_nm(weights.abs(), n, m)), name
        assert torch.equal(pruned["best_model"][name] == 0, ~keep), name
        covered += 1
    assert covered == len(pruned["masks"]) - 1
    row = rows[1]
    assert row["label"] == f"IMP one-shot {pattern}" and row["pattern"] == pattern
    assert row["target_sparsity"] == 1 - n / m
    assert row["latency_note"] == CPU_NOTE


def test_prune_at_init_keeps_exactly_n_of_every_m(tiny_trial, tmp_path):
    rows, (state,) = run(tiny_trial(method="snip", prune={"pattern": "2:4"}), tmp_path)
    for name, keep in state["masks"].items():
        if keep[0].numel() % 4:
            continue
        kept_per_group = keep.reshape(-1, 4).sum(dim=1)
        assert torch.equal(kept_per_group, torch.full_like(kept_per_group, 2)), name
        assert not state["best_model"][name][~keep].any()
    assert rows[0]["target_sparsity"] == 0.5


@pytest.mark.parametrize(("settings", "words"), [
    ({"method": "gmp"}, "prune.pattern is ignored by method gmp"),
    ({"method": "rigl"}, "prune.pattern is ignored by method rigl"),
    ({"method": "set"}, "prune.pattern is ignored by method set"),
    ({"method": "channels"}, "prune.pattern is ignored by method channels"),
    ({"method": "dense"}, "prune.pattern is ignored by method dense"),
    ({"method": "imp"}, "needs imp.schedule: oneshot"),
    ({"method": "snip", "prune": {"mask_control": "layerwise_shuffle"}}, "would break the N:M"),
    ({"method": "snip", "prune": {"target_sparsity": 0.9}}, "prune.target_sparsity is ignored"),
    ({"method": "random", "prune": {"allocation": "erk"}}, "prune.allocation is ignored"),
])
def test_pattern_is_refused_where_it_does_not_apply(tiny_trial, settings, words):
    prune = {"pattern": "2:4", **settings.pop("prune", {})}
    with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
        parse_trial_config(tiny_trial(prune=prune, **settings))


def test_an_unquoted_yaml_pattern_is_explained():
    with pytest.raises(ConfigError, match="write the pattern quoted"):
        parse_trial_config({"method": "snip", "prune": {"pattern": 124}})  # YAML's 2:4
