"""Selecting a unit's recipe from its search trials' rows, on validation accuracy alone.

A search trial's score is the `search.metric` (validation accuracy) of its last round's row:
the best validation accuracy of the round its trial ends with. For a method whose levels are
the rounds of one trial (iterative IMP), that is the highest sparsity the trial reaches.

Only samples whose every search trial (one per search seed) ran to the end are candidates:
ASHA stopped the others because they were behind at a rung. A candidate's score is the mean of
its trials' scores. The highest wins; a tie goes to the sample whose values come first in the
order of the space's fields, sorted by name, each compared by value (the smaller learning rate,
then the smaller weight decay, ...). Test accuracy is never read.

The rows are read here from each trial's own files (`params.json`, `result.json`), so that a
selection can be recomputed from disk at any time.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainables.schema import EPOCH_ROW, ROUND_ROW, SEARCH_KEY, search_seed


@dataclass
class SearchTrial:
    """What selection and the report need of one search trial."""

    trial_dir: str
    values: dict[str, Any]
    seed: int
    score: float | None  # None: it did not run to its last round's row
    epochs_run: int
    rows: int
    status: str = ""  # finished, stopped (by the scheduler, or cut off) or errored
    last_value: float | None = None  # the metric of its last epoch row
    config: dict[str, Any] = field(default_factory=dict)  # its Ray config (params.json)

    @property
    def finished(self) -> bool:
        return self.score is not None


@dataclass
class Selection:
    """A unit's choice: the chosen values, their mean score, and every candidate's."""

    values: dict[str, Any]
    score: float
    candidates: list[tuple[dict[str, Any], float]] = field(default_factory=list)


class NoCandidateError(Exception):
    """No sample of a unit ran to the end on every search seed."""


def _sort_key(values: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(_comparable(values[key]) for key in sorted(values))


def _comparable(value: Any) -> tuple[int, Any]:
    if isinstance(value, bool | int | float):
        return (0, float(value))
    return (1, json.dumps(value, sort_keys=True))


def select(trials: list[SearchTrial], seeds: list[int]) -> Selection:
    """The chosen sample of one unit (see the module docstring); NoCandidateError if none ran to
    the end on every seed."""
    by_values: dict[str, dict[int, float | None]] = {}
    values_of: dict[str, dict[str, Any]] = {}
    for trial in trials:
        key = json.dumps(trial.values, sort_keys=True)
        values_of[key] = trial.values
        by_values.setdefault(key, {})[trial.seed] = trial.score
    candidates = []
    for key, scores in by_values.items():
        if all(scores.get(seed) is not None for seed in seeds):
            mean = sum(float(scores[seed]) for seed in seeds) / len(seeds)  # type: ignore[arg-type]
            if math.isfinite(mean):
                candidates.append((values_of[key], mean))
    if not candidates:
        raise NoCandidateError(f"none of {len(by_values)} sample(s) ran to the end on every search "
                          f"seed {seeds}")
    candidates.sort(key=lambda item: _sort_key(item[0]))
    best = max(candidates, key=lambda item: item[1])  # max keeps the first of equals
    return Selection(dict(best[0]), best[1], candidates)


def read_search_trial(trial_dir: Path, metric: str) -> SearchTrial | None:
    """One search trial from its directory; None if Ray never wrote its config."""
    params = trial_dir / "params.json"
    if not params.is_file():
        return None
    config = json.loads(params.read_text(encoding="utf-8"))
    values = config.get(SEARCH_KEY) or {}
    seed = search_seed(config)
    score, epochs, rows, last = None, set(), 0, None
    result = trial_dir / "result.json"
    lines = result.read_text(encoding="utf-8").splitlines() if result.is_file() else []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line a killed trial cut off
        kind = row.get("row_type")
        if kind == "epoch":
            epochs.add((EPOCH_ROW.get(row, "round"), EPOCH_ROW.get(row, "epoch")))
            last = EPOCH_ROW.get(row, metric)
        if kind in ("epoch", "round"):
            rows += 1
        if kind == "round" and ROUND_ROW.get(row, "final_round"):
            score = float(ROUND_ROW.get(row, metric))
    status = "finished" if score is not None else (
        "errored" if (trial_dir / "error.txt").is_file() else "stopped")
    return SearchTrial(str(trial_dir), values, seed, score, len(epochs), rows, status,
                       None if last is None else float(last), config)
