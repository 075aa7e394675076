"""Selection of a unit's recipe from its search trials' files, and what the report counts.

The trial directories are written here in the layout Ray Tune writes (`params.json` with the
search trial's Ray config, `result.json` with one JSON row per line). Expected choices come from
a brute-force argmax over those rows written in this file, never from `select` itself.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from sweeps.search.report import UnitReport, write_report
from sweeps.search.select import read_search_trial, select
from sweeps.search.spec import Distribution
from sweeps.search.stage import changes, drawn_samples
from sweeps.search.units import SearchUnit

SEEDS = [100, 101]


def write_trial(directory: Path, values: dict[str, Any], seed: int, val: list[float],
                test: float, epochs: int, finished: bool = True, index: int | None = None
                ) -> Path:
    """A search trial: `val[e]` after epoch e; if `finished`, its final round row with the best
    validation accuracy of the round and test accuracy `test`."""
    directory.mkdir(parents=True)
    config: dict[str, Any] = {"trial": {"method": "dense", "seed": 0}, "search": values,
                              "seeds": SEEDS}
    if index is None:
        config["seed"] = seed
    else:
        config["__trial_index__"] = index
    (directory / "params.json").write_text(json.dumps(config))
    rows = [{"row_type": "epoch", "round": 0, "epoch": e, "val_acc": val[e], "test_acc": None}
            for e in range(min(len(val), epochs))]
    if finished:
        rows.append({"row_type": "round", "round": 0, "final_round": True, "val_acc": max(val),
                     "test_acc": test})
    (directory / "result.json").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return directory


def brute_force_choice(unit: Path) -> tuple[dict[str, Any], float]:
    """Read every trial's rows by hand; a sample counts if each search seed's trial has a final
    round row; highest mean validation accuracy wins, ties to the smallest values (fields in
    name order)."""
    scores: dict[str, dict[int, float]] = {}
    for trial in unit.iterdir():
        config = json.loads((trial / "params.json").read_text())
        seed = config["seed"] if "seed" in config else SEEDS[config["__trial_index__"]]
        lines = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]
        final = [row for row in lines if row["row_type"] == "round" and row["final_round"]]
        if final:
            key = json.dumps(config["search"], sort_keys=True)
            scores.setdefault(key, {})[seed] = final[-1]["val_acc"]
    complete = {key: sum(by_seed.values()) / len(by_seed) for key, by_seed in scores.items()
                if set(by_seed) == set(SEEDS)}
    best = max(complete.values())
    tied = [json.loads(key) for key, score in complete.items() if score == best]
    tied.sort(key=lambda values: [values[name] for name in sorted(values)])
    return tied[0], best


def random_unit(directory: Path, rng: random.Random, samples: int = 8) -> Path:
    """Samples on both seeds; scores from a coarse grid so that ties happen; some trials
    stopped early (no final row), as ASHA leaves them."""
    for sample in range(samples):
        values = {"train.lr": rng.choice([0.01, 0.03, 0.1]),
                  "train.weight_decay": rng.choice([0.0, 5.0e-4])}
        values["train.lr"] += sample * 1e-4  # each sample's values distinct
        for index, seed in enumerate(SEEDS):
            val = [rng.choice([0.2, 0.4, 0.6, 0.8]) for _ in range(4)]
            finished = rng.random() > 0.25
            write_trial(directory / f"s{sample}_{seed}", values, seed, val,
                        test=rng.random(), epochs=4 if finished else rng.randint(1, 3),
                        finished=finished, index=index if sample % 2 else None)
    return directory


def trials_of(directory: Path) -> list[Any]:
    return [read_search_trial(path, "val_acc") for path in sorted(directory.iterdir())]


@pytest.mark.parametrize("seed", range(12))
def test_selection_equals_a_brute_force_argmax_of_the_rows(seed, tmp_path):
    unit = random_unit(tmp_path / "unit", random.Random(seed))
    try:
        expected, best = brute_force_choice(unit)
    except ValueError:
        pytest.skip("no sample finished on both seeds in this draw")
    chosen = select(trials_of(unit), SEEDS)
    assert chosen.values == expected
    assert chosen.score == pytest.approx(best, abs=1e-12)


def test_test_accuracy_takes_no_part_in_the_choice(tmp_path):
    rng = random.Random(7)
    unit = random_unit(tmp_path / "unit", rng)
    before = select(trials_of(unit), SEEDS)
    # Plant: the test accuracy of every trial replaced (the worst validation sample gets the
    # best test accuracy), every validation value kept.
    for trial in unit.iterdir():
        path = trial / "result.json"
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        for row in lines:
            if row["row_type"] == "round":
                row["test_acc"] = 1.0 - row["val_acc"]
        path.write_text("".join(json.dumps(row) + "\n" for row in lines))
    after = select(trials_of(unit), SEEDS)
    assert (after.values, after.score) == (before.values, before.score)
    # While a planted validation value does change it: the check can fail.
    loser = next(values for values, _ in before.candidates if values != before.values)
    for trial in unit.iterdir():
        config = json.loads((trial / "params.json").read_text())
        if config["search"] == loser:
            path = trial / "result.json"
            lines = [json.loads(line) for line in path.read_text().splitlines()]
            for row in lines:
                if row["row_type"] == "round":
                    row["val_acc"] = 0.99
            path.write_text("".join(json.dumps(row) + "\n" for row in lines))
    assert select(trials_of(unit), SEEDS).values == loser


def test_a_tie_goes_to_the_smaller_values_in_field_order(tmp_path):
    unit = tmp_path / "unit"
    for name, values in (("a", {"train.lr": 0.3, "train.weight_decay": 0.0}),
                         ("b", {"train.lr": 0.1, "train.weight_decay": 5.0e-4}),
                         ("c", {"train.lr": 0.1, "train.weight_decay": 0.0})):
        for seed in SEEDS:
            write_trial(unit / f"{name}{seed}", values, seed, [0.5, 0.7], test=0.1, epochs=2)
    chosen = select(trials_of(unit), SEEDS)
    assert chosen.values == {"train.lr": 0.1, "train.weight_decay": 0.0}


def test_a_sample_stopped_on_one_seed_is_no_candidate(tmp_path):
    unit = tmp_path / "unit"
    write_trial(unit / "a100", {"train.lr": 0.3}, 100, [0.9, 0.95], test=0.1, epochs=2)
    write_trial(unit / "a101", {"train.lr": 0.3}, 101, [0.9], test=0.1, epochs=1,
                finished=False)
    for seed in SEEDS:
        write_trial(unit / f"b{seed}", {"train.lr": 0.1}, seed, [0.4, 0.5], test=0.1, epochs=2)
    assert select(trials_of(unit), SEEDS).values == {"train.lr": 0.1}


def test_the_report_counts_epochs_from_the_rows(tmp_path):
    unit = tmp_path / "unit"
    write_trial(unit / "a", {"train.lr": 0.1}, 100, [0.3, 0.5, 0.6, 0.7], test=0.5, epochs=4)
    write_trial(unit / "b", {"train.lr": 0.2}, 100, [0.3, 0.2, 0.1, 0.1], test=0.5, epochs=1,
                finished=False)
    write_trial(unit / "c", {"train.lr": 0.3}, 100, [0.3, 0.4, 0.1, 0.1], test=0.5, epochs=2,
                finished=False)
    # A resumed trial may log an epoch row twice: it ran once.
    path = unit / "c" / "result.json"
    path.write_text(path.read_text() + path.read_text().splitlines(keepends=True)[-1])
    trials = trials_of(unit)
    assert [(t.status, t.epochs_run) for t in trials] == \
        [("finished", 4), ("stopped", 1), ("stopped", 2)]
    report = UnitReport("u", "dense", "level", "val_acc", {"train.lr": 0.1}, 0.7, trials,
                        [4, 4, 4])
    assert report.epochs_run == 7 and report.epochs_full == 12
    assert report.saved_share == pytest.approx(5 / 12)
    written = write_report([report], str(tmp_path / "experiment"), "tuned")
    text = written.read_text()
    assert "| u |" in text and "7 / 12" in text and "42%" in text
    units_csv = (tmp_path / "experiment" / "search_report.csv").read_text().splitlines()
    assert units_csv[0].startswith("unit,label,per,metric,score,chosen.train.lr")
    assert (tmp_path / "experiment" / "search_report.png").stat().st_size > 10_000


def unit_with(space: dict[str, Distribution]) -> SearchUnit:
    return SearchUnit("u", "dense", 0, "level", space, template=None)  # type: ignore[arg-type]


def test_random_samples_are_drawn_in_bounds_the_same_every_time():
    space = {"train.lr": Distribution(loguniform=(0.001, 1.0)),
             "train.weight_decay": Distribution(choice=[0.0, 1.0e-4, 5.0e-4]),
             "train.epochs": Distribution(randint=(2, 4)),
             "train.momentum": Distribution(uniform=(0.8, 0.95))}
    drawn = drawn_samples(unit_with(space), 2000, seed=3)
    assert drawn == drawn_samples(unit_with(space), 2000, seed=3)
    assert drawn != drawn_samples(unit_with(space), 2000, seed=4)
    lrs = [sample["train.lr"] for sample in drawn]
    assert all(0.001 <= lr <= 1.0 for lr in lrs)
    # Uniform in the logarithm: each decade of [1e-3, 1] holds about a third of the draws.
    decades = [sum(1 for lr in lrs if 10 ** (k - 3) <= lr < 10 ** (k - 2)) for k in range(3)]
    assert all(abs(count / 2000 - 1 / 3) < 0.05 for count in decades), decades
    assert {sample["train.epochs"] for sample in drawn} == {2, 3, 4}  # both bounds included
    assert {sample["train.weight_decay"] for sample in drawn} == {0.0, 1.0e-4, 5.0e-4}
    assert all(0.8 <= sample["train.momentum"] <= 0.95 for sample in drawn)
    assert math.isclose(sum(s["train.momentum"] for s in drawn) / 2000, 0.875, abs_tol=0.01)


def test_a_changed_search_is_named_field_by_field():
    before = {"samples": 8, "space": {"train.lr": {"loguniform": [0.01, 0.5]}}, "metric": "val_acc"}
    now = {**before, "space": {"train.lr": {"loguniform": [0.01, 1.0]}}}
    assert changes(before, now) == [
        'space: {"train.lr": {"loguniform": [0.01, 0.5]}} -> '
        '{"train.lr": {"loguniform": [0.01, 1.0]}}']
    assert changes(before, before) == []


def test_an_imp_sample_is_scored_by_its_last_round(tmp_path):
    """IMP's levels are the rounds of one trial: its score is the validation accuracy of the
    round row that ends the trial (the highest sparsity), whatever the earlier rounds did."""
    trial = tmp_path / "imp"
    trial.mkdir()
    (trial / "params.json").write_text(json.dumps(
        {"trial": {"method": "imp"}, "search": {"train.lr": 0.1}, "seeds": SEEDS, "seed": 100}))
    rows = []
    for round_index, (val, final) in enumerate(((0.95, False), (0.9, False), (0.7, True))):
        rows += [{"row_type": "epoch", "round": round_index, "epoch": e, "val_acc": val - 0.1 * e}
                 for e in range(2)]
        rows.append({"row_type": "round", "round": round_index, "final_round": final,
                     "val_acc": val, "test_acc": 0.99})
    (trial / "result.json").write_text("".join(json.dumps(row) + "\n" for row in rows))
    read = read_search_trial(trial, "val_acc")
    assert read.score == 0.7 and read.epochs_run == 6 and read.rows == 9
    assert read.status == "finished"
