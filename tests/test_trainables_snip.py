"""The prune-at-initialisation methods (snip, grasp, synflow, random, magnitude_init): exact
target sparsity counted from the saved weights, the layerwise-shuffle mask control, and
reinitialisation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

import pruning
import trainables.loop
import trainables.methods.rounds
from trainables.checkpoints import load_round_checkpoint
from trainables.errors import ConfigError
from trainables.reporting import DirectoryReporter
from trainables.resolve import parse_trial_config
from trainables.trial import run_trial

TARGET = 0.7


SCORERS = {"snip": "snip", "random": "random", "magnitude_init": "magnitude", "grasp": "grasp",
           "synflow": "synflow"}


def run_snip(tiny_trial, directory: Path, method: str = "snip", **prune: Any) -> dict[str, Any]:
    settings = {"synflow": {"iterations": 5}} if method == "synflow" else {}
    trial = tiny_trial(method=method, prune={"target_sparsity": TARGET, **prune}, **settings)
    reporter = DirectoryReporter(directory)
    run_trial(parse_trial_config(trial), reporter)
    (row,) = [row for row in reporter.rows if row["row_type"] == "round"]
    assert row["round"] == 1 and row["final_round"] is True
    (checkpoint,) = directory.glob("round_*")  # progress checkpoints are gone by now
    return load_round_checkpoint(checkpoint)


@pytest.mark.parametrize("method", list(SCORERS))
def test_every_scorer_reaches_the_exact_target(tiny_trial, tmp_path, method):
    state = run_snip(tiny_trial, tmp_path, method)
    names = list(state["masks"])
    # The trial's one pruned round keeps one weight set, its best-validation one.
    assert "model" not in state
    weights = state["best_model"]
    total = sum(weights[name].numel() for name in names)
    zeros = sum(int((weights[name] == 0).sum()) for name in names)
    assert zeros == round(TARGET * total)
    for name in names:
        assert torch.equal(weights[name] == 0, ~state["masks"][name]), name
    assert state["metrics"]["scorer"] == SCORERS[method]


def test_layerwise_shuffle_keeps_layer_counts_and_moves_positions(tiny_trial, tmp_path):
    plain = run_snip(tiny_trial, tmp_path / "plain")["masks"]
    shuffled = run_snip(tiny_trial, tmp_path / "shuffled",
                        mask_control="layerwise_shuffle")["masks"]  # fmt: skip
    assert plain.keys() == shuffled.keys()
    for name in plain:
        assert int(plain[name].sum()) == int(shuffled[name].sum()), name
    moved = [name for name in plain if not torch.equal(plain[name], shuffled[name])]
    # Every layer with something both kept and pruned gets new positions.
    mixed = [name for name, keep in plain.items() if 0 < int(keep.sum()) < keep.numel()]
    assert moved == mixed and mixed


def test_reinit_keeps_the_mask_and_draws_different_weights(tiny_trial, tmp_path, monkeypatch):
    starts: list[dict[str, torch.Tensor]] = []
    real = trainables.loop.train_phase

    def spy(model, *args, **kwargs):
        starts.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return real(model, *args, **kwargs)

    monkeypatch.setattr(trainables.methods.rounds, "train_phase", spy)
    kept = run_snip(tiny_trial, tmp_path / "kept")
    fresh = run_snip(tiny_trial, tmp_path / "fresh", reinit=True)
    for name, keep in kept["masks"].items():
        assert torch.equal(keep, fresh["masks"][name]), name
    init = kept["init_weights"]
    for key, tensor in init.items():  # same seed: the same initialisation was scored
        assert torch.equal(fresh["init_weights"][key], tensor), key
    for name, keep in kept["masks"].items():
        # Without reinit training starts from init * mask; with it, from other weights on the
        # surviving positions (and still zero on the pruned ones).
        assert torch.equal(starts[0][name], init[name] * keep), name
        assert not torch.equal(starts[1][name][keep], init[name][keep]), name
        assert (starts[1][name][~keep] == 0).all(), name


# ---- prune_at_init: any registered scorer, with its own settings --------------------------


@dataclass(frozen=True)
class RecordingMagnitude(pruning.Scorer):
    """|w|, recording the settings it was called with (registered only inside the test)."""

    power: float = 1.0
    calls: ClassVar[list[float]] = []

    def __post_init__(self) -> None:
        if not self.power > 0:
            raise ValueError(f"power must be > 0; got {self.power}")

    def __call__(self, model: Any, mask: pruning.Mask,
                 inputs: pruning.ScoringInputs) -> pruning.Scores:
        RecordingMagnitude.calls.append(self.power)
        return {name: value ** self.power
                for name, value in pruning.magnitude_scores(model, mask).items()}


@pytest.fixture
def recording_scorer():
    pruning.SCORERS.register("test_recording")(RecordingMagnitude)
    RecordingMagnitude.calls.clear()
    try:
        yield RecordingMagnitude
    finally:
        pruning.SCORERS.unregister("test_recording")


def test_any_registered_scorer_runs_with_the_settings_the_file_gives(
    tiny_trial, tmp_path, recording_scorer
):
    trial = tiny_trial(method="prune_at_init", prune={"target_sparsity": TARGET},
                       prune_at_init={"scorer": "test_recording", "settings": {"power": 3.0}})
    config = parse_trial_config(trial)
    assert config.model_dump(mode="json")["prune_at_init"] == {
        "scorer": "test_recording", "settings": {"power": 3.0}}
    reporter = DirectoryReporter(tmp_path)
    run_trial(config, reporter)
    assert recording_scorer.calls == [3.0]
    (row,) = [row for row in reporter.rows if row["row_type"] == "round"]
    assert (row["scorer"], row["label"]) == ("test_recording", "test_recording at init")
    total = row["params_prunable_dense"]
    assert row["params_prunable"] == total - round(TARGET * total)


def test_a_scorers_defaults_written_or_not_are_one_trial(recording_scorer, tiny_trial):
    from trainables.identity import trial_key

    implicit = parse_trial_config(tiny_trial(method="prune_at_init",
                                             prune_at_init={"scorer": "test_recording"}))
    explicit = parse_trial_config(tiny_trial(
        method="prune_at_init",
        prune_at_init={"scorer": "test_recording", "settings": {"power": 1.0}}))
    assert implicit.settings.settings == {"power": 1.0}
    assert trial_key(implicit) == trial_key(explicit)


@pytest.mark.parametrize("section, words", [
    ({"scorer": "test_recording", "settings": {"pwr": 2}},
     "scorer 'test_recording' has no setting 'pwr' (did you mean 'power'?)"),
    ({"scorer": "test_recording", "settings": {"power": -1.0}}, "power must be > 0; got -1.0"),
    ({"scorer": "test_recordin"}, "unknown scorer 'test_recordin' (did you mean 'test_recording'"),
    ({"scorer": "test_recording", "setting": {}}, "setting"),
])
def test_bad_scorer_settings_are_one_config_error_naming_the_section(
    recording_scorer, tiny_trial, section, words
):
    with pytest.raises(ConfigError) as refused:
        parse_trial_config(tiny_trial(method="prune_at_init", prune_at_init=section))
    message = str(refused.value)
    assert "\n" not in message and words in message and "prune_at_init" in message
