"""From a sweep file to the trials of one Ray Tune experiment, all before Ray starts.

`plan_sweep` validates the file (`sweeps/spec.py`), composes every grid point of every experiment
from its layers (`sweeps/layers.py`), and returns a `SweepPlan`: typed `PlannedTrial`s, each
parsed once, with every path absolute (the dense cache inside the experiment directory
included), a label, a key and a readable name. Nothing downstream parses a planned trial again.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from sweeps.controls import CONTROLS
from sweeps.data_workers import check_data_workers
from sweeps.layers import Layer, SharedFieldUse, check_layer, compose_trial, nested, overrides_layer
from sweeps.search.spec import SearchSpec
from sweeps.search.units import SearchUnit, UnitPoint, build_units
from sweeps.spec import Experiment, Resources, SweepSpec, validate_spec
from trainables.config import TrialConfig, apply_overrides, read_yaml
from trainables.errors import ConfigError
from trainables.identity import trial_key
from trainables.methods import METHODS
from trainables.plugins import (
    Plugin,
    PluginError,
    import_plugins,
    load_installed_plugins,
    resolve_plugins,
)
from trainables.recipe import recipe_hash
from trainables.resolve import parse_trial_config

#: Grid points a sweep may expand into unless the command line raises the limit (`--max-trials`):
#: planning costs about a millisecond a trial, and a typo such as a range of 1,000 seeds crossed
#: with 1,000 levels should be one line, not twenty minutes of silence.
MAX_TRIALS = 10_000
#: What --smoke does to every trial (methods add their own, see Method.smoke_overrides): the same
#: grid shape, a few batches per phase.
SMOKE_SETTINGS = {
    "train.max_batches": 2,
    "train.max_eval_batches": 2,
    "train.warmup_epochs": 0,
    "train.lr_milestones": [],
}
# Relative paths in trial configs are resolved against the launch directory, because Ray runs
# each trial with its own trial directory as working directory.
_PATH_FIELDS = (
    ("data", "root"),
    ("data", "cache_dir"),
    ("model", "weights_path"),
    ("dense_model", "checkpoint"),
    ("dense_model", "cache"),
)

Progress = Callable[[int, int], None]
"""`progress(done, total)`: called while a large sweep is planned (grid points composed)."""


def is_uri(path: str) -> bool:
    return "://" in path


@dataclass(frozen=True)
class Output:
    """Where an experiment's results go: `storage` (an absolute path or a URI) and its name."""

    storage: str
    name: str

    @property
    def is_uri(self) -> bool:
        return is_uri(self.storage)

    @property
    def experiment_dir(self) -> str:
        if self.is_uri:
            return f"{self.storage.rstrip('/')}/{self.name}"
        return str(Path(self.storage) / self.name)

    @property
    def dense_cache(self) -> str:
        """Where trials that share a dense model find it. On cloud storage each node keeps its
        own cache (its file locks need a filesystem); elsewhere, inside the experiment."""
        if self.is_uri:
            return str(Path.home() / ".cache" / "prunetune" / "dense" / self.name)
        return str(Path(self.experiment_dir) / "dense_cache")


def output_for(spec: SweepSpec, launch_dir: Path, storage: str | None = None,
               name: str | None = None, smoke: bool = False) -> Output:
    """The output of a sweep: `--storage` (default ./output, relative to `launch_dir`) and
    `--name` (default the file's name, with -smoke for a smoke run)."""
    root = storage or "output"
    if not is_uri(root):
        root = str((launch_dir / root).expanduser().resolve())
    return Output(root, name or spec.name + ("-smoke" if smoke else ""))


@dataclass(frozen=True)
class PlannedTrial:
    """One trial of a plan: its config (parsed once, every path absolute), its experiment's
    label, its key (`trainables.identity.trial_key`) and its readable name."""

    config: TrialConfig
    label: str
    key: str
    name: str

    @cached_property
    def raw(self) -> dict[str, Any]:
        """The config as JSON values: what Ray hands the trial and params.json records."""
        return self.config.model_dump(mode="json")

    @property
    def method(self) -> str:
        return self.config.method


def config_text(raw: dict[str, Any]) -> str:
    """A trial's config as Ray hands it to the trial (`PlannedTrial.raw`), as the text a planned
    trial is found by again in the driver's callbacks."""
    return json.dumps(raw, sort_keys=True)


def planned(config: TrialConfig, label: str) -> PlannedTrial:
    """`config` as a planned trial of the line `label`."""
    parts = METHODS.get(config.method).name_parts(config)
    name = "_".join([label, f"s{config.seed}", *parts])
    return PlannedTrial(config, label, trial_key(config), name)


Chosen = dict[str, dict[str, Any]]
"""A search's selection: unit name -> searched field -> the value chosen for it."""


@dataclass(frozen=True)
class SearchPlan:
    """The search stage of a tuned sweep (`search:`): its settings as this run uses them
    (`--smoke` shrinks them), its units, and, once selected, what each unit chose."""

    spec: SearchSpec
    units: tuple[SearchUnit, ...]
    chosen: Chosen | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class SweepPlan:
    """A sweep file expanded into its trials, in the order they should run. A tuned sweep's
    trials are its final trials: on the values its search chose once `search.chosen` is set,
    else on the file's own values (what --dry-run shows before a search)."""

    spec: SweepSpec
    trials: tuple[PlannedTrial, ...]
    grid_keys: tuple[str, ...]
    source: str
    output: Output
    plugins: tuple[Plugin, ...] = ()
    search: SearchPlan | None = None

    @property
    def raw_trials(self) -> list[dict[str, Any]]:
        return [trial.raw for trial in self.trials]

    def summary(self) -> dict[str, Any]:
        """What run_sweep saves beside the results (and analysis reads back)."""
        summary = {
            "name": self.spec.name,
            "grid_keys": list(self.grid_keys),
            "sweep": self.spec.model_dump(mode="json"),
            "trials": [{"label": trial.label, "trial": trial.raw} for trial in self.trials],
        }
        if self.search is not None:
            from sweeps.search.report import REPORT_FILE

            summary["search"] = {"report": REPORT_FILE, "units": len(self.search.units),
                                 "chosen": self.search.chosen or {}}
        return summary


def smoke_layer(config: TrialConfig, epochs: int) -> dict[str, Any]:
    """The --smoke settings of one trial: `epochs` (the same for every trial of the sweep, so
    that dense recipes still match) plus the shared and the method's own shrinking."""
    method = METHODS.get(config.method)
    settings = {**SMOKE_SETTINGS, "train.epochs": epochs, **method.smoke_overrides(config)}
    return overrides_layer([_as_override(key, value) for key, value in settings.items()])


def _as_override(key: str, value: Any) -> str:
    return f"{key}={json.dumps(value)}"


def _grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]


def grid_size(spec: SweepSpec) -> int:
    """How many grid points the sweep expands into (before duplicates and controls), counted
    from the axes' lengths without building any."""
    return sum(math.prod(len(values) for values in {**spec.grid, **experiment.grid}.values())
               for experiment in spec.experiments)


def _check_size(spec: SweepSpec, source: str, max_trials: int) -> int:
    size = grid_size(spec)
    if size > max_trials:
        shapes = []
        for index, experiment in enumerate(spec.experiments):
            axes = {**spec.grid, **experiment.grid}
            shape = " x ".join(f"{len(values):,} {key}" for key, values in axes.items())
            shapes.append(f"experiments[{index}]: {shape or '1'}")
        raise ConfigError(
            f"{source}: the grid has {size:,} trials ({'; '.join(shapes)}), more than the "
            f"{max_trials:,} a sweep may have unless you say so: pass --max-trials {size} if you "
            "mean it"
        )
    return size


def with_absolute_paths(config: TrialConfig, launch_dir: Path) -> TrialConfig:
    """`config` with every relative path field resolved against `launch_dir`."""
    sections: dict[str, Any] = {}
    for section, key in _PATH_FIELDS:
        current = sections.get(section, getattr(config, section))
        value = getattr(current, key)
        if isinstance(value, str) and not is_uri(value):
            absolute = str((launch_dir / value).expanduser().resolve())
            if absolute != value:
                sections[section] = current.model_copy(update={key: absolute})
    return config.model_copy(update=sections) if sections else config


@dataclass
class _Point:
    """One grid point of one experiment, and the trial it gives as the file is written."""

    index: int
    experiment: Experiment
    point: dict[str, Any]
    written: TrialConfig | None = None

    def layers(self, spec: SweepSpec) -> list[Layer]:
        top = {k: v for k, v in self.point.items() if k not in self.experiment.grid}
        own = {k: v for k, v in self.point.items() if k in self.experiment.grid}
        where = f"experiments[{self.index}]"
        return [
            Layer("base", spec.base),
            Layer(f"{where}.config", self.experiment.config),
            Layer("grid", overrides_layer([_as_override(k, v) for k, v in top.items()])),
            Layer(f"{where}.grid", overrides_layer([_as_override(k, v) for k, v in own.items()])),
        ]

    def context(self, source: str, note: str = "") -> str:
        point = ", ".join(f"{key}={value!r}" for key, value in self.point.items())
        where = f"{source}: experiments[{self.index}]" + (f" at {{{point}}}" if point else "")
        return where + note

    def label(self, config: TrialConfig) -> str:
        return self.experiment.label or config.method


def _check_all_layers(spec: SweepSpec, overrides: list[str], source: str) -> None:
    """Rule 1 of sweeps/layers.py: every value of every layer, on its own."""
    check_layer(Layer("base", spec.base), source)
    grids = [("grid", spec.grid)]
    for index, experiment in enumerate(spec.experiments):
        check_layer(Layer(f"experiments[{index}].config", experiment.config), source)
        if any(not values for values in experiment.grid.values()):
            empty = next(key for key, values in experiment.grid.items() if not values)
            raise ConfigError(f"{source}: experiments[{index}].grid: grid axis {empty!r} has no "
                              "values, so the sweep has no trials")
        grids.append((f"experiments[{index}].grid", experiment.grid))
    for name, grid in grids:
        for key, values in grid.items():
            for value in values:
                check_layer(Layer(f"{name} {key}", nested(key, value)), source)
    if overrides:
        check_layer(Layer("--set", overrides_layer(overrides)), source)


class _Counter:
    """Calls `progress` as grid points are composed (both passes, with --set or --smoke)."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total, self.progress, self.done = total, progress, 0

    def step(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)


def plan_sweep(
    raw: dict[str, Any],
    source: str,
    overrides: list[str] | None = None,
    smoke: bool = False,
    launch_dir: Path | None = None,
    sweep_dir: Path | None = None,
    storage: str | None = None,
    name: str | None = None,
    max_trials: int = MAX_TRIALS,
    progress: Progress | None = None,
    chosen: Chosen | None = None,
) -> SweepPlan:
    """Validate a sweep mapping and expand it into trials; ConfigError (one line) if invalid.

    Its `plugins` (files relative to `sweep_dir`, default `launch_dir`) and the installed
    packages' plug-ins are imported first, so that the trials can name what they register;
    PluginError (one line) if one fails.

    `overrides` are dotted `key=value` settings: keys naming a sweep field (`name`,
    `resources.gpu`, `max_failures`, ...) change the sweep; all others change every trial,
    after the base, experiment and grid values. The file is validated as written first, then
    again with `overrides` and `smoke` applied (see sweeps/layers.py for every rule).

    `storage` and `name` place the experiment (`output_for`); relative paths are resolved
    against `launch_dir` (default: the working directory). A grid of more than `max_trials`
    points is refused before any is planned; `progress(done, total)` follows the planning.
    """
    overrides = list(overrides or [])
    sweep_fields = set(SweepSpec.model_fields)
    sweep_overrides = [o for o in overrides if o.split(".", 1)[0].split("=", 1)[0] in sweep_fields]
    user_overrides = [o for o in overrides if o not in sweep_overrides]
    spec = validate_spec(raw, source)
    if sweep_overrides:
        spec = validate_spec(apply_overrides(raw, sweep_overrides), f"{source} (with --set)")
    launch_dir = (launch_dir or Path.cwd()).resolve()
    output = output_for(spec, launch_dir, storage, name, smoke)
    size = _check_size(spec, source, max_trials)
    plugins = _import_plugins(spec, source, sweep_dir or launch_dir, launch_dir)
    _check_all_layers(spec, user_overrides, source)

    points = [
        _Point(index, experiment, point)
        for index, experiment in enumerate(spec.experiments)
        for point in _grid_points({**spec.grid, **experiment.grid})
    ]
    again = bool(user_overrides or smoke)
    # The file as written, then with --set/--smoke, then with a search's choice.
    counter = _Counter(size * (1 + int(again) + int(chosen is not None)), progress)
    written_use = SharedFieldUse()
    for point in points:
        point.written = compose_trial(point.layers(spec), point.context(source), written_use)
        counter.step()
    written_use.check(source)
    epochs = _smoke_epochs(points) if smoke else 0
    configs = [point.written for point in points]
    if again:
        configs = _with_command_line(spec, points, user_overrides, smoke, epochs, source,
                                     counter)
    search = None
    if spec.search is not None:
        search, point_units = _plan_search(spec, points, configs, user_overrides, smoke, epochs,
                                           source, launch_dir)
        if chosen is not None:
            search = replace(search, chosen=chosen)
            extra = [None if unit is None or unit not in chosen else
                     Layer("search", overrides_layer([_as_override(k, v)
                                                      for k, v in chosen[unit].items()]))
                     for unit in point_units]
            configs = _with_command_line(spec, points, user_overrides, smoke, epochs, source,
                                         counter, extra, note=" (with the search's choice)")

    trials: list[PlannedTrial] = []
    seen: set[str] = set()

    def add(config: TrialConfig, label: str) -> None:
        trial = planned(with_absolute_paths(config, launch_dir), label)
        if trial.key not in seen:  # the same trial from two grid points runs once
            seen.add(trial.key)
            trials.append(trial)

    for point, config in zip(points, configs, strict=True):
        if config.train.device == "cuda" and spec.resources.gpu == 0:
            raise ConfigError(
                f"{point.context(source)}: train.device is 'cuda' but resources.gpu is 0; Ray "
                "gives a trial no GPU unless resources.gpu asks for one"
            )
        check_data_workers(config.data, spec.resources.cpu, point.context(source))
        check_data_parallel(config, spec.resources, point.context(source))
        add(config, point.label(config))
    for control in spec.controls:  # after the experiments: their labels name the controls
        for point, config in zip(points, configs, strict=True):
            label = point.label(config)
            control_raw = CONTROLS.get(control)(config, label)
            if control_raw is not None:
                where = f"{point.context(source)} (controls: {control})"
                add(parse_trial_config(control_raw, source=where), f"{label}_budget")
    if spec.share_dense:
        trials = _share_dense_models(trials, output.dense_cache)
    # Dense first, so that the others find their seed's dense model in the cache; long trials
    # before short ones, so that no long trial is left running alone at the end.
    trials.sort(key=lambda trial: METHODS.get(trial.method).sweep_order)
    grid_keys = list(spec.grid)
    for experiment in spec.experiments:
        grid_keys += [key for key in experiment.grid if key not in grid_keys]
    return SweepPlan(spec=spec, trials=tuple(trials), grid_keys=tuple(grid_keys),
                     source=source, output=output, plugins=tuple(plugins), search=search)


def _smoke_epochs(points: list[_Point]) -> int:
    return max(METHODS.get(p.written.method).smoke_epochs(p.written) for p in points
               if p.written is not None)


def _run_layers(spec: SweepSpec, point: _Point, overrides: list[str], smoke: bool, epochs: int,
                extra: Layer | None = None) -> list[Layer]:
    """The layers of a trial as it runs: the file's, a search's choice, --set, --smoke."""
    layers = point.layers(spec) + ([extra] if extra is not None else [])
    layers.append(Layer("--set", overrides_layer(overrides)))
    if smoke:
        layers.append(Layer("--smoke", smoke_layer(point.written, epochs)))
    return layers


def _with_command_line(spec: SweepSpec, points: list[_Point], overrides: list[str], smoke: bool,
                       epochs: int, source: str, counter: _Counter,
                       extra: list[Layer | None] | None = None, note: str = ""
                       ) -> list[TrialConfig]:
    """Rule 2 of sweeps/layers.py: the trials again, with --set and --smoke applied (and a
    search's choice, `extra`, per point)."""
    applied = [name for name, on in (("--set", overrides), ("--smoke", smoke)) if on]
    note = note or f" (with {' and '.join(applied)})"
    use = SharedFieldUse()
    configs = []
    for index, point in enumerate(points):
        layers = _run_layers(spec, point, overrides, smoke, epochs,
                             extra[index] if extra is not None else None)
        configs.append(compose_trial(layers, point.context(source, note), use))
        counter.step()
    use.check(source)
    return configs


def _plan_search(spec: SweepSpec, points: list[_Point], configs: list[TrialConfig],
                 overrides: list[str], smoke: bool, epochs: int, source: str,
                 launch_dir: Path) -> tuple[SearchPlan, list[str | None]]:
    """The units of a tuned sweep, checked (sweeps/search/units.py). `--smoke` runs two
    samples per unit, and without ASHA where its trials leave it no rung."""
    assert spec.search is not None
    search_spec = spec.search
    if smoke:
        search_spec = search_spec.model_copy(update={"samples": min(2, search_spec.samples)})
    unit_points = [
        UnitPoint(point.index, point.label(point.written), point.written,
                  with_absolute_paths(config, launch_dir),
                  frozenset({**spec.grid, **point.experiment.grid}),
                  tuple(_run_layers(spec, point, overrides, smoke, epochs)), point.context(source))
        for point, config in zip(points, configs, strict=True)
    ]
    experiments_search = [experiment.search for experiment in spec.experiments]
    final_seeds = {config.seed for config in configs}
    units, point_units, notes = build_units(search_spec, experiments_search, unit_points,
                                            final_seeds, source, smoke)
    return SearchPlan(search_spec, tuple(units), notes=tuple(notes)), point_units


def _import_plugins(spec: SweepSpec, source: str, sweep_dir: Path,
                    launch_dir: Path) -> list[Plugin]:
    try:
        load_installed_plugins()
        plugins = resolve_plugins(spec.plugins, sweep_dir, launch_dir)
        import_plugins(plugins)
    except PluginError as error:
        raise PluginError(f"{source}: {error}") from None
    return plugins


def check_data_parallel(config: TrialConfig, resources: Resources, where: str) -> None:
    """ConfigError unless the trial can run on `resources.workers` data-parallel workers: the
    global batch splits evenly across them (DDP averages the workers' gradients, and equal parts
    make that the global batch's mean), and `train.sync_bn` has the GPUs torch's SyncBatchNorm
    needs."""
    workers = resources.workers
    if config.train.batch_size % workers:
        raise ConfigError(
            f"{where}: train.batch_size {config.train.batch_size} is the global batch and must "
            f"split evenly across resources.workers {workers} (each worker trains on "
            f"batch_size / workers); use a multiple of {workers}"
        )
    if config.train.sync_bn and workers > 1 and resources.gpu == 0:
        raise ConfigError(
            f"{where}: train.sync_bn needs GPUs (torch's SyncBatchNorm runs on CUDA only); "
            "set resources.gpu, or leave sync_bn off on the CPU"
        )


def _share_dense_models(trials: list[PlannedTrial], cache: str) -> list[PlannedTrial]:
    """Trials that start from the dense model share it per recipe: one cache entry (in `cache`
    unless the trial names its own) that keeps the weights of every epoch any of them rewinds
    to."""
    groups: dict[str, set[int]] = {}
    for trial in trials:
        config = trial.config
        method = METHODS.get(config.method)
        if method.starts_from_dense(config) and not config.dense_model.checkpoint:
            groups.setdefault(recipe_hash(config), set()).update(
                method.dense_epochs(config) | set(config.dense_model.keep_epochs))
    shared = []
    for trial in trials:
        config = trial.config
        keep = groups.get(recipe_hash(config))
        method = METHODS.get(config.method)
        if keep is None or not method.starts_from_dense(config) or config.dense_model.checkpoint:
            shared.append(trial)
            continue
        dense = config.dense_model.model_copy(
            update={"cache": config.dense_model.cache or cache, "keep_epochs": sorted(keep)})
        shared.append(PlannedTrial(config.model_copy(update={"dense_model": dense}),
                                   trial.label, trial.key, trial.name))
    return shared


def load_sweep(
    path: str | Path,
    overrides: list[str] | None = None,
    smoke: bool = False,
    launch_dir: Path | None = None,
    **placement: Any,
) -> SweepPlan:
    """Read and expand a sweep file (see `plan_sweep`; `placement`: its storage, name,
    max_trials and progress)."""
    return plan_sweep(read_yaml(path), str(path), overrides, smoke, launch_dir,
                      sweep_dir=Path(path).parent, **placement)


@dataclass
class PlanningProgress:
    """`progress` for `plan_sweep` that prints a line to `write` every `every_s` seconds once
    planning has taken `after_s`, so that a large sweep is not planned in silence."""

    write: Callable[[str], None]
    after_s: float = 3.0
    every_s: float = 5.0
    clock: Callable[[], float] = time.monotonic
    started: float = field(default=0.0)
    last: float | None = None  # when the last line was written

    def __post_init__(self) -> None:
        self.started = self.clock()

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        if now - self.started < self.after_s or (
                self.last is not None and now - self.last < self.every_s):
            return
        self.last = now
        rate = done / (now - self.started)
        left = (total - done) / rate if rate > 0 else float("nan")
        self.write(f"planning: {done:,} of {total:,} trial configs composed "
                   f"({100 * done / total:.0f}%, about {left:.0f} s left)")
