"""Growing an experiment: the same sweep file with more seeds, levels or experiments, run
under the existing experiment's name, runs only its new trials.

A trial is identified by its trial key (`trainables.identity.trial_key`: the non-default values
of the fields that decide its result), as open_lth names runs by a hash of its hyperparameters.
So:

* every planned trial whose key a finished trial of the experiment has is reused, not rerun;
* a changed recipe is refused, with a one-line diff: for an experiment label the sweep had
  before, its trials must differ from the earlier ones only in the grid's axes (a new seed, a
  new level), never in a field that every trial shares (`train.epochs: 6 -> 8`);
* grid points the file no longer has are kept on disk and named in `prunetune_sweep.json`'s
  `removed_trials`: the analysis leaves them out unless asked for `--all`;
* an experiment with trials that did not finish is finished first (`--resume`), so that no
  trial key is ever run twice.

The new trials run as a fresh Ray Tune run in the same directory: the earlier run's state files
move to `.prunetune/runs/<n>/`; `reused_trials` in `prunetune_sweep.json` names the trial
directories of earlier runs that the sweep reuses, and `current_run_trials` how many the latest
Tune run holds (what a later `--resume`, which restores only that run, must end with).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweeps.plan import SweepPlan
from sweeps.state_files import STATE_COPY_DIR, STATE_PATTERNS
from trainables.errors import ConfigError
from trainables.identity import identity_values, trial_key
from trainables.resolve import parse_trial_config

RUNS_DIR = "runs"


@dataclass
class Growth:
    """What a grown sweep runs, reuses and leaves out."""

    to_run: list[int]
    """Indices into the plan's trials of the trials to run now."""
    reused: dict[int, Path] = field(default_factory=dict)
    """Plan index -> the finished trial directory it is."""
    removed: list[str] = field(default_factory=list)
    """Trial directories of the experiment that the sweep no longer has."""


@dataclass(frozen=True)
class _OldTrial:
    directory: Path
    label: str | None
    key: str
    identity: dict[str, Any]
    finished: bool


def plan_growth(directory: Path, plan: SweepPlan, saved: dict[str, Any]) -> Growth:
    """How `plan` grows the experiment in `directory` (whose `prunetune_sweep.json` is `saved`);
    ConfigError (one line) for a changed recipe or an experiment not finished."""
    old = _old_trials(directory, saved)
    axes = set(saved.get("grid_keys", [])) | set(plan.grid_keys) | {"seed"}
    _check_recipes(directory, old, [(trial.label, identity_values(trial.config))
                                    for trial in plan.trials], axes)
    keys = {trial.key: trial for trial in old}
    planned = [trial.key for trial in plan.trials]
    growth = Growth(to_run=[])
    for index, key in enumerate(planned):
        found = keys.get(key)
        if found is None:
            growth.to_run.append(index)
        elif not found.finished:
            raise ConfigError(
                f"{directory}: trial {found.directory.name} of this sweep did not finish; "
                "finish the experiment there first (--resume), then grow it")
        else:
            growth.reused[index] = found.directory
    current = set(planned)
    growth.removed = sorted(t.directory.name for t in old if t.key not in current)
    return growth


def grown_summary(plan: SweepPlan, growth: Growth) -> dict[str, Any]:
    """What `prunetune_sweep.json` says of a grown sweep: its trials as they are on disk (a
    reused trial as its own params.json has it), the directories reused from earlier runs, and
    those left out of the current set."""
    trials = []
    for index, trial in enumerate(plan.trials):
        raw = trial.raw
        if index in growth.reused:
            raw = json.loads((growth.reused[index] / "params.json").read_text())["trial"]
        trials.append({"label": trial.label, "trial": raw})
    summary = {"trials": trials,
               "reused_trials": sorted(path.name for path in growth.reused.values()),
               "removed_trials": growth.removed}
    if growth.to_run:  # a new Tune run, holding these; else the latest run stays as it was
        summary["current_run_trials"] = len(growth.to_run)
    return summary


def archive_previous_run(directory: Path) -> Path:
    """Move the earlier Ray Tune run's state files out of Ray's way, into
    `.prunetune/runs/<n>/` (their good copies from `.prunetune/` into its `copies/`); returns
    that folder."""
    runs = directory / STATE_COPY_DIR / RUNS_DIR
    target = runs / str(len(list(runs.iterdir())) + 1 if runs.is_dir() else 1)
    (target / "copies").mkdir(parents=True)
    for folder, into in ((directory, target), (directory / STATE_COPY_DIR, target / "copies")):
        for pattern in STATE_PATTERNS:
            for path in folder.glob(pattern):
                shutil.move(str(path), str(into / path.name))
    return target


def _old_trials(directory: Path, saved: dict[str, Any]) -> list[_OldTrial]:
    labels = {json.dumps(entry["trial"], sort_keys=True): entry.get("label")
              for entry in saved.get("trials", [])}
    found = []
    for params in sorted(directory.glob("*/params.json")):
        raw = json.loads(params.read_text()).get("trial")
        if not isinstance(raw, dict):
            continue
        config = _parsed(raw)
        found.append(_OldTrial(
            directory=params.parent,
            label=labels.get(json.dumps(raw, sort_keys=True)),
            key=trial_key(config),
            identity=identity_values(config),
            # run_sweep writes a finished trial's index of rounds when the sweep ends.
            finished=(params.parent / "rounds.json").is_file(),
        ))
    return found


def _parsed(raw: dict[str, Any]) -> Any:
    return parse_trial_config(raw, source="trial config", check_ignored=False)


def _check_recipes(directory: Path, old: list[_OldTrial],
                   new: list[tuple[str, dict[str, Any]]], axes: set[str]) -> None:
    """For each experiment label the sweep had before, its trials' fields outside the grid axes
    must be what they were."""
    before: dict[str, dict[str, Any]] = {}
    for trial in old:
        if trial.label is not None:
            before.setdefault(trial.label, _recipe(trial.identity, axes))
    for label, identity in new:
        if label not in before:
            continue  # a new experiment
        recipe = _recipe(identity, axes)
        if recipe != before[label]:
            raise ConfigError(
                f"{directory} holds this sweep with another recipe ({label}: "
                f"{_diff(before[label], recipe)}); choose another --name, or set it back")


def _recipe(identity: dict[str, Any], axes: set[str]) -> dict[str, Any]:
    from analysis.load import flatten  # the dotted names the grid axes use

    return {key: value for key, value in flatten(identity).items() if key not in axes}


def _diff(before: dict[str, Any], after: dict[str, Any]) -> str:
    changed = sorted(set(before) | set(after))
    parts = [f"{key}: {json.dumps(before.get(key, 'default'))} -> "
             f"{json.dumps(after.get(key, 'default'))}"
             for key in changed if before.get(key, "default") != after.get(key, "default")]
    return ", ".join(parts)
