"""The schema of rows and checkpoints (trainables/schema.py) against the real writers and the
real readers.

Real tiny trials write rows and checkpoints through the trainables (IMP with rewinding, SNIP,
structured channels, RigL); every row and state they write must be as the schema declares.
The analysis and `load_round` then read those files, and every declared field must arrive. A
field renamed on disk in the schema alone is written under its new name and read back under
its old key, and the earlier name still reads: that is what "renaming a field is one edit"
means. Rows of a newer schema version are refused in one line; an experiment of the earlier
layout (Ray's `checkpoint_dir_name`, `checkpoint_NNNNNN/` with a `state.pt`) still loads.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from analysis.load import AnalysisInputError, load_layer_sparsity, load_results
from trainables.reporting import DirectoryReporter
from trainables.resolve import parse_trial_config
from trainables.schema import (
    EPOCH_ROW,
    PROGRESS_STATE,
    ROUND_CHECKPOINT,
    ROUND_ROW,
    ROUND_STATE,
    SCHEMA_VERSION,
    Field,
    Record,
    row_checkpoint,
)
from trainables.tickets import load_round
from trainables.trial import run_trial

TRIALS = {
    "imp": {"method": "imp", "imp": {"rounds": 2, "rate": 0.5, "rewind": "epoch:1"}},
    "snip": {"method": "snip", "prune": {"target_sparsity": 0.8}},
    "channels": {"method": "channels", "prune": {"target_sparsity": 0.5}},
    "rigl": {"method": "rigl", "prune": {"target_sparsity": 0.8}},
}
#: Declared round-row fields the analysis table does not carry as columns.
NOT_COLUMNS = {"row_type", "schema_version", "layer_sparsity"}


class CapturingReporter(DirectoryReporter):
    """A DirectoryReporter that also keeps every checkpoint state as it was handed over."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.states: list[dict[str, Any]] = []

    def report(self, rows, state=None, shared=None) -> None:
        if state is not None:
            self.states.append(copy.deepcopy(state))
        super().report(rows, state, shared)


def run_experiment(tiny_trial, root: Path, kinds: list[str]) -> dict[str, CapturingReporter]:
    """One Tune-like experiment directory (`params.json` per trial) written by real trials."""
    reporters = {}
    for kind in kinds:
        raw = tiny_trial(**TRIALS[kind], train={"max_eval_batches": 2})
        trial_dir = root / f"{kind}_00000"
        trial_dir.mkdir(parents=True)
        (trial_dir / "params.json").write_text(json.dumps({"trial": raw}))
        reporters[kind] = CapturingReporter(trial_dir)
        run_trial(parse_trial_config(raw), reporters[kind], cpus=1)
    return reporters


@pytest.fixture(scope="module")
def written(tiny_trial, tmp_path_factory) -> tuple[Path, dict[str, CapturingReporter]]:
    root = tmp_path_factory.mktemp("schema") / "experiment"
    return root, run_experiment(tiny_trial, root, list(TRIALS))


def test_every_row_and_state_the_trainables_write_is_as_declared(written) -> None:
    _, reporters = written
    for kind, reporter in reporters.items():
        rows = [json.loads(line)
                for line in (reporter.directory / "result.json").read_text().splitlines()]
        epochs = [row for row in rows if row["row_type"] == "epoch"]
        rounds = [row for row in rows if row["row_type"] == "round"]
        assert epochs and rounds, kind
        for row in epochs:
            assert EPOCH_ROW.problems(row) == [], (kind, row)
        for row in rounds:
            assert ROUND_ROW.problems(row) == [], (kind, row)
            assert row["schema_version"] == SCHEMA_VERSION
            assert (reporter.directory / row_checkpoint(row)).is_dir()
        kinds = {state["kind"] for state in reporter.states}
        for state in reporter.states:
            record = ROUND_STATE if state["kind"] == "round" else PROGRESS_STATE
            assert record.problems(state) == [], (kind, state["kind"])
        round_states = [s for s in reporter.states if s["kind"] == "round"]
        # A round's metrics.json is the row it was reported with, plus its per-layer counts.
        for state, row in zip(round_states, rounds, strict=True):
            stored = json.loads((reporter.directory / row[ROUND_CHECKPOINT] / "metrics.json")
                                .read_text())
            assert stored == {**{k: v for k, v in row.items() if k != ROUND_CHECKPOINT},
                              "layer_sparsity": state["layer_sparsity"]}
        if kind == "imp":
            assert kinds == {"round", "progress"}  # epochs 2: one progress checkpoint a round


def test_the_readers_get_every_declared_field_the_writers_wrote(written) -> None:
    root, reporters = written
    table = load_results(root)
    written_rounds = sum(len([r for r in reporter.rows if r["row_type"] == "round"])
                         for reporter in reporters.values())
    assert len(table) == written_rounds
    for spec in ROUND_ROW.by_key.values():
        if spec.key in NOT_COLUMNS:
            continue
        assert spec.key in table.columns, spec.key
        if spec.required or spec.key == ROUND_CHECKPOINT:
            assert table[spec.key].notna().all(), spec.key
    layers = load_layer_sparsity(table)
    assert set(layers["trial_id"]) == set(table["trial_id"])
    for kind, reporter in reporters.items():
        last = [r for r in reporter.rows if r["row_type"] == "round"][-1]
        _, info = load_round(root, reporter.directory.name)
        for key in ("test_acc", "sparsity", "round", "params_prunable"):
            assert info.row[key] == last[ROUND_ROW.name(key)], (kind, key)


def test_a_field_renamed_in_the_schema_alone_is_written_and_read_under_its_key(
        tiny_trial, tmp_path, monkeypatch) -> None:
    old = ROUND_ROW.by_key["test_acc"]
    monkeypatch.setitem(ROUND_ROW.by_key, "test_acc",
                        dataclasses.replace(old, name="accuracy_on_test", aliases=("test_acc",)))
    root = tmp_path / "renamed"
    (reporter,) = run_experiment(tiny_trial, root, ["snip"]).values()
    (row,) = [r for r in reporter.rows if r["row_type"] == "round"]
    assert "test_acc" not in row and 0 <= row["accuracy_on_test"] <= 1
    table = load_results(root)
    assert table["test_acc"].tolist() == [row["accuracy_on_test"]]
    assert "accuracy_on_test" not in table.columns
    _, info = load_round(root, reporter.directory.name)
    assert info.row["test_acc"] == row["accuracy_on_test"]
    # Rows written before the rename still read, through the alias.
    assert ROUND_ROW.read({"test_acc": 0.5}) == {"test_acc": 0.5}


def test_a_writer_cannot_write_an_undeclared_field_as_declared() -> None:
    with pytest.raises(TypeError, match=r"undeclared field\(s\) \['test_accuracy'\]"):
        ROUND_ROW.row(test_accuracy=0.5)
    # Tags and measurements ride along as extras, declared keys among them renamed.
    assert ROUND_ROW.row({"label": "SNIP", "flops": 12}, row_type="round") == {
        "row_type": "round", "label": "SNIP", "flops": 12}


def test_problems_name_a_missing_field_and_a_wrong_type() -> None:
    record = Record("demo", (Field("a", (int,), "an int"),
                             Field("b", (str,), "optional", required=False)))
    assert record.problems({"a": 1}) == []
    assert record.problems({}) == ["demo row lacks 'a'"]
    assert record.problems({"a": True, "b": 3}) == [
        "demo field 'a' is bool, not int", "demo field 'b' is int, not str"]


def test_rows_of_a_newer_schema_version_are_refused_in_one_line(written, tmp_path) -> None:
    root, _ = written
    newer = tmp_path / "newer"
    shutil.copytree(root / "snip_00000", newer / "snip_00000")
    results = newer / "snip_00000" / "result.json"
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    for row in lines:
        if row["row_type"] == "round":
            row["schema_version"] = SCHEMA_VERSION + 1
    results.write_text("".join(json.dumps(row) + "\n" for row in lines))
    with pytest.raises(AnalysisInputError) as raised:
        load_results(newer)
    message = str(raised.value)
    assert "\n" not in message and f"schema version {SCHEMA_VERSION + 1}" in message
    assert "upgrade prunetune" in message and str(results) in message


def test_an_experiment_of_the_earlier_layout_still_loads(written, tmp_path) -> None:
    """As the layout before the trial store wrote it: rows naming Ray's checkpoint directory
    in `checkpoint_dir_name`, no `schema_version`, each round in `checkpoint_NNNNNN/state.pt`
    (format version 1)."""
    from trainables.checkpoints import load_round_checkpoint

    root, reporters = written
    source = reporters["imp"].directory
    legacy = tmp_path / "legacy" / source.name
    legacy.mkdir(parents=True)
    shutil.copy(source / "params.json", legacy / "params.json")
    rows = []
    for line in (source / "result.json").read_text().splitlines():
        row = json.loads(line)
        row.pop("schema_version", None)
        if row["row_type"] == "round":
            slot = row.pop(ROUND_CHECKPOINT)
            name = f"checkpoint_{row['round']:06d}"
            row["checkpoint_dir_name"] = name
            (legacy / name).mkdir()
            shutil.copy(source / slot / "metrics.json", legacy / name / "metrics.json")
            state = load_round_checkpoint(source / slot)
            torch.save({**state, "format_version": 1}, legacy / name / "state.pt")
        rows.append(row)
    (legacy / "result.json").write_text("".join(json.dumps(row) + "\n" for row in rows))

    table = load_results(legacy.parent)
    assert table[ROUND_CHECKPOINT].tolist() == ["checkpoint_000000", "checkpoint_000001",
                                                 "checkpoint_000002"]
    assert len(load_layer_sparsity(table)) == 3 * len(json.loads(
        (source / "round_000000" / "metrics.json").read_text())["layer_sparsity"])
    model, info = load_round(legacy.parent, legacy.name, round=2)
    fresh_model, fresh = load_round(root, source.name, round=2)
    assert info.row["test_acc"] == fresh.row["test_acc"]
    assert info.masks.keys() == fresh.masks.keys()
    assert all(torch.equal(info.masks[name], fresh.masks[name]) for name in info.masks)
    fresh_weights = fresh_model.state_dict()
    assert all(torch.equal(tensor, fresh_weights[name])
               for name, tensor in model.state_dict().items())
