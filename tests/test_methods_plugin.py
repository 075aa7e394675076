"""The proof that a method is a plug-in: a toy method registered inside this test module (no other
file changed) is validated, planned, named, run by Ray Tune through sweeps/run_sweep.py, and
labelled in the analysis, with its own config section and its own refusals."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import Field

import pruning
from trainables.config import MethodSection, TrialConfig
from trainables.methods import METHODS, Method, register_method
from trainables.methods.context import TrialContext
from trainables.methods.controls import full_mask
from trainables.methods.rounds import RoundPlan, run_round


class EveryOtherConfig(MethodSection):
    offset: int = Field(0, ge=0, le=1, description="keep the weights at odd (1) or even (0) index")


class EveryOther(Method):
    """Keeps every other weight of each layer: a deterministic 50% mask, then trains."""

    name = "every_other"
    label = "every other weight"
    section = EveryOtherConfig
    sweep_order = 5

    def name_parts(self, config: TrialConfig) -> list[str]:
        return [f"offset{config.settings.offset}"]

    def row_tags(self, config: TrialConfig) -> dict[str, Any]:
        return {**super().row_tags(config), "scorer": "parity"}

    def run(self, context: TrialContext) -> None:
        if context.completed_round() >= 1:
            return
        offset = context.config.settings.offset

        def setup() -> tuple[pruning.Mask, dict[str, Any]]:
            mask = {
                name: (keep.flatten().cumsum(0) % 2 == 1 - offset).view(keep.shape)
                for name, keep in full_mask(context).items()
            }
            pruning.apply_mask(context.model, mask)
            return mask, {}

        epochs = context.config.train.epochs
        run_round(context, RoundPlan(1, 0.5, range(epochs), epochs, final=True), setup)


@pytest.fixture
def every_other() -> Iterator[None]:
    register_method(EveryOther)
    try:
        yield
    finally:
        METHODS.unregister("every_other")


def sweep_file(tmp_path: Path, data_root: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "plugin.yaml"
    path.write_text(yaml.safe_dump({
        "name": "plugin",
        "base": {"data": {"name": "digits", "root": str(data_root)},
                 "model": {"name": "resnet18_cifar", "width": 4},
                 "train": {"epochs": 1, "max_batches": 2, "max_eval_batches": 2,
                           "device": "cpu"}},
        "experiments": [{"label": "dense", "config": {"method": "dense"}},
                        {"config": config, "grid": {"every_other.offset": [0, 1]}}],
        "resources": {"cpu": 1, "gpu": 0},
    }))
    return path


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from sweeps import run_sweep

    code = run_sweep.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.slow
def test_a_method_registered_in_a_test_module_runs_through_run_sweep(
    every_other, data_root, tmp_path, capsys
):
    path = sweep_file(tmp_path, data_root, {"method": "every_other"})
    out_dir = tmp_path / "out"
    code, out, err = run_main([str(path), "--storage", str(out_dir), "--dry-run"], capsys)
    assert code == 0, err
    # Its sweep_order (5) puts it after dense (0) and its name parts name the trials.
    assert out.index("dense_s0") < out.index("every_other_s0_offset0") < out.index("offset1")

    code, out, err = run_main([str(path), "--storage", str(out_dir)], capsys)
    assert code == 0, out + err
    # run_sweep switched off Ray's default loggers for its own Tuner only, not for this process.
    assert "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS" not in os.environ
    experiment = out_dir / "plugin"
    trials = {}
    for result in experiment.glob("*/result.json"):
        rows = [json.loads(line) for line in result.read_text().splitlines()]
        trials[result.parent.name] = [row for row in rows if row["row_type"] == "round"]
    toy = {name: rows for name, rows in trials.items() if name.startswith("every_other")}
    assert len(toy) == 2
    for rows in toy.values():
        (row,) = rows
        assert (row["method"], row["label"], row["scorer"]) == (
            "every_other", "every other weight", "parity")
        # Exactly half of every layer kept: the layers here all have an even number of weights.
        assert row["sparsity"] == 0.5

    from analysis import aggregate, load_results
    from analysis.report import line_labels

    agg = aggregate(load_results(experiment))
    labels = set(line_labels(agg).values())  # its label, and the swept key that splits its lines
    assert {label.split(",")[0] for label in labels} == {"dense", "every other weight"}
    assert len(labels) == 3


def test_its_section_is_validated_and_what_it_ignores_is_refused(
    every_other, data_root, tmp_path, capsys
):
    from sweeps.plan import plan_sweep

    good = yaml.safe_load(sweep_file(tmp_path, data_root, {"method": "every_other"}).read_text())
    assert len(plan_sweep(good, "plugin.yaml").trials) == 3
    bad_cases = {
        "unknown field": ({"method": "every_other", "every_other": {"ofset": 1}},
                          ["'every_other.ofset'", "did you mean 'offset'"]),
        "ignored shared field": ({"method": "every_other", "prune": {"reinit": True}},
                                 ["experiments[1].config sets prune.reinit",
                                  "ignored by method every_other"]),
    }
    for config, words in bad_cases.values():
        raw = yaml.safe_load(sweep_file(tmp_path, data_root, config).read_text())
        with pytest.raises(Exception) as raised:
            plan_sweep(raw, "plugin.yaml")
        for word in words:
            assert word in str(raised.value), (word, str(raised.value))
