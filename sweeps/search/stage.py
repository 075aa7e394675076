"""The search stage of a tuned sweep: one Ray Tune experiment per unit, then a selection.

Each unit (sweeps/search/units.py) is searched in `<experiment>/search/<unit>/`, a Tune
experiment of its own: Ray Tune's `OptunaSearch` (or samples drawn up front, `random`) proposes
values for the searched fields, `ASHAScheduler` stops trials that are behind on validation
accuracy, and every trial is the unit's recipe at a search seed with the proposed values. When a
unit's experiment ends, its selection (sweeps/search/select.py) is written beside it
(`selection.json`), with the fingerprint of everything that decided it (`unit.json`).

Run again, a finished unit is not searched again: its selection is reused. An interrupted one is
restored with `Tuner.restore`, which brings back the searcher's and the scheduler's state. A
unit whose space, settings or recipe changed is refused before Ray starts, with what changed.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sweeps.plan import Chosen, SearchPlan
from sweeps.search.report import UnitReport, write_report
from sweeps.search.select import (
    NoCandidateError,
    SearchTrial,
    read_search_trial,
    select,
)
from sweeps.search.units import SearchUnit, asha_last_rung
from trainables.errors import ConfigError
from trainables.files import atomic_write
from trainables.schema import SEARCH_KEY, search_trial_config

SEARCH_DIR = "search"
UNIT_FILE = "unit.json"
SELECTION_FILE = "selection.json"


class SearchFailedError(Exception):
    """A unit's search ended without a candidate (every sample errored or was stopped)."""


def unit_dir(experiment_dir: str, unit: SearchUnit) -> Path:
    return Path(experiment_dir) / SEARCH_DIR / unit.name


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def changes(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """`key: old -> new` for every top-level key whose value differs."""
    out = []
    for key in sorted(set(before) | set(now)):
        if before.get(key) != now.get(key):
            out.append(f"{key}: {json.dumps(before.get(key))} -> {json.dumps(now.get(key))}")
    return out


def check_earlier_search(search: SearchPlan, experiment_dir: str, source: str) -> None:
    """Refuse (ConfigError, one line) a unit searched before with another space, metric,
    setting or recipe: its trials and selection would not be this file's."""
    for unit in search.units:
        saved = _read_json(unit_dir(experiment_dir, unit) / UNIT_FILE)
        if saved is None:
            continue
        now = unit.fingerprint(search.spec)
        diff = changes(saved.get("fingerprint", {}), now)
        if diff:
            raise ConfigError(
                f"{source}: the search of unit {unit.name} in {experiment_dir} ran with other "
                f"settings ({'; '.join(diff)}); restore them, or choose another --name")


def earlier_selection(unit: SearchUnit, experiment_dir: str) -> dict[str, Any] | None:
    """A finished unit's saved selection (None: not finished)."""
    return _read_json(unit_dir(experiment_dir, unit) / SELECTION_FILE)


def stable_seed(*parts: Any) -> int:
    text = json.dumps(parts, sort_keys=True, default=str)
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def drawn_samples(unit: SearchUnit, samples: int, seed: int) -> list[dict[str, Any]]:
    """`random`: the unit's samples drawn up front from a generator seeded by the unit, the
    same on every run of the file."""
    import numpy as np

    rng = np.random.default_rng(seed)
    drawn = []
    for _ in range(samples):
        values: dict[str, Any] = {}
        for key in sorted(unit.space):
            distribution = unit.space[key]
            if distribution.uniform is not None:
                values[key] = float(rng.uniform(*distribution.uniform))
            elif distribution.loguniform is not None:
                low, high = distribution.loguniform
                values[key] = float(math.exp(rng.uniform(math.log(low), math.log(high))))
            elif distribution.randint is not None:
                values[key] = int(rng.integers(distribution.randint[0],
                                               distribution.randint[1] + 1))
            else:
                choices = list(distribution.choice or [])
                values[key] = choices[int(rng.integers(len(choices)))]
        drawn.append(values)
    return drawn


def search_trainable(config: dict[str, Any], **parameters: Any) -> None:
    """One search trial (see `search_trial_config`), run as any trial of a sweep."""
    from trainables.tune_trainable import prunetune_trainable

    prunetune_trainable({"trial": search_trial_config(config)}, **parameters)


def unit_report(unit: SearchUnit, search: SearchPlan, trials: list[SearchTrial],
                selection: dict[str, Any]) -> UnitReport:
    """The report of one searched unit, from its trials as read from their files."""
    from trainables.methods import METHODS
    from trainables.resolve import parse_trial_config

    full = []
    for trial in trials:
        config = parse_trial_config(search_trial_config(trial.config), source=trial.trial_dir,
                                    check_ignored=False)
        full.append(METHODS.get(config.method).training_epochs(config))
    log_fields = frozenset(key for key, d in unit.space.items() if d.loguniform is not None)
    choices = {key: list(d.choice) for key, d in unit.space.items() if d.choice is not None}
    return UnitReport(unit.name, unit.label, unit.per, search.spec.metric,
                      dict(selection["values"]), float(selection["score"]), trials, full,
                      log_fields, choices)


class SearchTrialNamer:
    """Search trials' names: the unit's name and the trial's number in its experiment."""

    def __init__(self, unit: str) -> None:
        self.unit = unit

    def name(self, trial: Any) -> str:
        return f"{self.unit}_{str(trial.trial_id).rsplit('_', 1)[-1]}"

    dirname = name


def _tuner(unit: SearchUnit, search: SearchPlan, directory: Path, trainable: Any,
           max_concurrent: int | None, max_failures: int, callbacks: list[Any]) -> Any:
    from ray import tune

    spec = search.spec
    seed = stable_seed(unit.name, spec.seeds)
    raw = unit.template.model_dump(mode="json")
    space: dict[str, Any] = {"trial": raw, "seeds": list(spec.seeds)}
    searcher, samples = None, spec.samples * len(spec.seeds)
    if spec.searcher == "random":
        space[SEARCH_KEY] = tune.grid_search(drawn_samples(unit, spec.samples, seed))
        space["seed"] = tune.grid_search(list(spec.seeds))
        samples = 1
    else:
        import optuna
        from ray.tune.search import Repeater
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a line per study created

        space[SEARCH_KEY] = {key: unit.space[key].tune_domain() for key in sorted(unit.space)}
        searcher = OptunaSearch(metric=spec.metric, mode="max", seed=seed)
        if len(spec.seeds) > 1:
            searcher = Repeater(searcher, repeat=len(spec.seeds))
    scheduler = None
    if unit.scheduler == "asha":
        scheduler = tune.schedulers.ASHAScheduler(
            time_attr="training_iteration", metric=spec.metric, mode="max",
            max_t=asha_last_rung(unit), grace_period=spec.grace_rows,
            reduction_factor=spec.reduction_factor, stop_last_trials=False)
    namer = SearchTrialNamer(unit.name)
    return tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler, num_samples=samples,
            max_concurrent_trials=max_concurrent, reuse_actors=True,
            trial_name_creator=namer.name, trial_dirname_creator=namer.dirname),
        run_config=tune.RunConfig(
            name=directory.name, storage_path=str(directory.parent),
            failure_config=tune.FailureConfig(max_failures=max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=callbacks, verbose=0, log_to_file=True),
    )


def unit_trials(directory: Path, metric: str) -> list[SearchTrial]:
    """The search trials in a unit's directory, with the statuses Ray gave them where known."""
    trials = []
    for trial_dir in sorted(p for p in directory.iterdir() if p.is_dir()):
        trial = read_search_trial(trial_dir, metric)
        if trial is not None:
            trials.append(trial)
    return trials


def run_unit(unit: SearchUnit, search: SearchPlan, experiment_dir: str, trainable: Any,
             max_concurrent: int | None, max_failures: int,
             callbacks: Callable[[int], list[Any]], say: Callable[[str], None]
             ) -> tuple[dict[str, Any], list[SearchTrial]]:
    """Search one unit (or restore its interrupted search) and save its selection; the
    selection and the trials it was made from."""
    from ray import tune

    directory = unit_dir(experiment_dir, unit)
    directory.mkdir(parents=True, exist_ok=True)
    fingerprint = {"unit": unit.name, "label": unit.label, "per": unit.per,
                   "fingerprint": unit.fingerprint(search.spec)}
    atomic_write(directory / UNIT_FILE,
                 lambda target: target.write_text(json.dumps(fingerprint, indent=1)))
    total = search.spec.samples * len(search.spec.seeds)
    if tune.Tuner.can_restore(str(directory)):
        say(f"resuming its search ({directory})")
        tuner = tune.Tuner.restore(str(directory), trainable=trainable, resume_unfinished=True,
                                   resume_errored=True)
    else:
        tuner = _tuner(unit, search, directory, trainable, max_concurrent, max_failures,
                       callbacks(total))
    tuner.fit()
    trials = unit_trials(directory, search.spec.metric)
    errored = [trial for trial in trials if trial.status == "errored"]
    if errored:
        say(f"{len(errored)} of {len(trials)} search trial(s) errored (no candidates): "
            f"{', '.join(Path(trial.trial_dir).name for trial in errored)}")
    try:
        chosen = select(trials, list(search.spec.seeds))
    except NoCandidateError as error:
        raise SearchFailedError(f"unit {unit.name}: {error}; see {directory}") from None
    selection = {"unit": unit.name, "label": unit.label, "values": chosen.values,
                 "score": chosen.score, "metric": search.spec.metric}
    atomic_write(directory / SELECTION_FILE,
                 lambda target: target.write_text(json.dumps(selection, indent=1)))
    return selection, trials


def run_search(search: SearchPlan, experiment_dir: str, name: str, trainable: Any,
               max_concurrent: int | None, max_failures: int,
               callbacks: Callable[[int], list[Any]], write: Callable[[str], None] = print
               ) -> Chosen:
    """The search stage: every unit searched (or its earlier selection reused), then the
    report written; what each unit chose. SearchFailedError if a unit has no candidate."""
    chosen: Chosen = {}
    reports = []
    count = len(search.units)
    spec = search.spec
    for index, unit in enumerate(search.units, start=1):
        def say(text: str, index: int = index, unit: SearchUnit = unit) -> None:
            write(f"run_sweep: search stage, unit {index}/{count} ({unit.name}): {text}")

        selection = earlier_selection(unit, experiment_dir)
        if selection is None:
            say(f"{spec.samples} sample(s) x {len(spec.seeds)} seed(s), {spec.searcher} search, "
                f"scheduler {unit.scheduler}")
            selection, trials = run_unit(unit, search, experiment_dir, trainable,
                                         max_concurrent, max_failures, callbacks, say)
        else:
            say("searched before; its selection is reused")
            trials = unit_trials(unit_dir(experiment_dir, unit), spec.metric)
        values = ", ".join(f"{key}={value!r}" for key, value in selection["values"].items())
        say(f"chose {values} ({selection['metric']} {selection['score']:.4f})")
        chosen[unit.name] = dict(selection["values"])
        reports.append(unit_report(unit, search, trials, selection))
    path = write_report(reports, experiment_dir, name)
    write(f"run_sweep: search stage done: {path}")
    sys.stdout.flush()
    return chosen
