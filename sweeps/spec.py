"""Sweep files: a base trial config, experiments (method variants) and a grid, expanded into the
validated trial configs of one Ray Tune experiment, all before Ray starts.

```yaml
name: compare
base: {data: {name: digits}, model: {width: 16}, train: {epochs: 10}}   # TrialConfig fields
grid: {seed: [0, 1, 2]}                                                  # every experiment
experiments:
  - {label: dense, config: {method: dense}}
  - label: snip
    config: {method: snip}
    grid: {prune.target_sparsity: [0.5, 0.8]}                            # this experiment only
resources: {cpu: 1, gpu: 0}
```
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sweeps.controls import budget_matched_dense
from sweeps.data_workers import check_data_workers
from sweeps.layers import Layer, SharedFieldUse, check_layer, compose_trial, nested, overrides_layer
from sweeps.loggers import DEFAULT_LOGGERS, LOGGERS, check_installed
from trainables.config import (
    TrialConfig,
    apply_overrides,
    did_you_mean,
    fields_at,
    format_validation_error,
    read_yaml,
)
from trainables.errors import ConfigError
from trainables.identity import identity_values
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

# Relative paths in trial configs are resolved against the launch directory, because Ray runs
# each trial with its own trial directory as working directory.
_PATH_FIELDS = (
    ("data", "root"),
    ("data", "cache_dir"),
    ("model", "weights_path"),
    ("dense_model", "checkpoint"),
    ("dense_model", "cache"),
)
# Placeholder run_sweep replaces with <experiment dir>/dense_cache once the output is known.
AUTO_DENSE_CACHE = "<experiment>/dense_cache"
# What --smoke does to every trial (methods add their own, see Method.smoke_overrides): the same
# grid shape, a few batches per phase.
SMOKE_SETTINGS = {
    "train.max_batches": 2,
    "train.max_eval_batches": 2,
    "train.warmup_epochs": 0,
    "train.lr_milestones": [],
}


def smoke_layer(config: TrialConfig, epochs: int) -> dict[str, Any]:
    """The --smoke settings of one trial: `epochs` (the same for every trial of the sweep, so
    that dense recipes still match) plus the shared and the method's own shrinking."""
    method = METHODS.get(config.method)
    settings = {**SMOKE_SETTINGS, "train.epochs": epochs, **method.smoke_overrides(config)}
    return overrides_layer([_as_override(key, value) for key, value in settings.items()])


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Resources(_Strict):
    cpu: float = Field(1.0, gt=0, description="CPUs per trial (torch threads follow it)")
    gpu: float = Field(0.0, ge=0, description="GPUs per trial, at most 1 (no data parallelism "
                       "yet); fractions pack trials on a GPU")

    @field_validator("gpu")
    @classmethod
    def _one_gpu_at_most(cls, gpu: float) -> float:
        # Ray refuses fractions above 1 (1.5) inside tuner.fit; a whole number above 1 would
        # reserve GPUs a trial never uses, since a trial trains on one device.
        if gpu > 1:
            whole = "" if gpu.is_integer() else "; Ray accepts fractions only below 1, and "
            raise ValueError(
                f"{gpu:g} GPUs per trial{whole or ': '}a trial trains on one GPU (prunetune has "
                "no data parallelism yet); use 1, or a fraction such as 0.5 to pack trials"
            )
        return gpu


class Experiment(_Strict):
    label: str | None = Field(None, min_length=1, description="name in plots and trial names")
    config: dict[str, Any] = Field(default_factory=dict, description="TrialConfig fields")
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="dotted key -> values")


class SweepSpec(_Strict):
    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9_.-]+$",
                      description="the experiment's name: output/<name>/ (letters, digits, _.-)")
    description: str = Field("", description="free text for people; prunetune does not read it")
    base: dict[str, Any] = Field(default_factory=dict, description="TrialConfig fields")
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="dotted key -> values")
    experiments: list[Experiment] = Field(
        default_factory=lambda: [Experiment()], min_length=1,
        description="the lines of the comparison: each a config over base and its own grid",
    )
    resources: Resources = Field(Resources(), description="what Ray reserves for each trial")
    max_concurrent_trials: int | None = Field(
        None, ge=1, description="cap on trials running at once; None = as resources allow"
    )
    max_failures: int = Field(1, ge=0, description="restarts of a crashed trial")
    controls: list[Literal["budget_matched_dense"]] = Field(
        default_factory=list,
        description="extra trials reviewers ask for: budget_matched_dense = for each experiment "
        "that trains longer than dense (IMP, channels), dense trained for its total epochs",
    )
    share_dense: bool = Field(
        True, description="IMP trials reuse the dense model of the same seed and recipe"
    )
    plugins: list[str] = Field(
        default_factory=list,
        description="modules that register methods, datasets or models: dotted names "
        "(mypkg.mymethods) or Python files relative to the sweep file (./local_method.py)",
    )
    loggers: list[str] = Field(
        default_factory=lambda: list(DEFAULT_LOGGERS),
        description="experiment tracking through Ray Tune's logger callbacks: tensorboard, csv, "
        "mlflow, wandb (JSON always)",
    )

    @field_validator("loggers")
    @classmethod
    def _extras_installed(cls, loggers: list[str]) -> list[str]:
        for logger in loggers:
            LOGGERS.check(logger)
        check_installed(loggers)
        return loggers

    @field_validator("grid")
    @classmethod
    def _non_empty_axes(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        _check_axes(grid)
        return grid


CONTROL_TRIALS = {"budget_matched_dense": budget_matched_dense}


def _check_axes(grid: dict[str, list[Any]]) -> None:
    for key, values in grid.items():
        if not values:
            raise ValueError(f"grid axis {key!r} has no values, so the sweep has no trials")


def trial_key(config: TrialConfig) -> str:
    """A trial config's identity: the non-default values of the fields that decide its result
    (`trainables.identity`), so configs that differ only in how they run share a key."""
    return json.dumps(identity_values(config), sort_keys=True)


def _as_override(key: str, value: Any) -> str:
    return f"{key}={json.dumps(value)}"


def _grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]


def _absolute_paths(trial: dict[str, Any], launch_dir: Path) -> dict[str, Any]:
    for section, key in _PATH_FIELDS:
        value = trial.get(section, {}).get(key)
        if isinstance(value, str) and "://" not in value:
            trial[section][key] = str((launch_dir / value).expanduser().resolve())
    return trial


class SweepPlan(BaseModel):
    """A sweep spec expanded into its trials (validated TrialConfig dicts, with labels)."""

    spec: SweepSpec
    trials: list[dict[str, Any]]
    labels: list[str]
    grid_keys: list[str]
    source: str
    plugins: list[Plugin] = []

    def summary(self) -> dict[str, Any]:
        """What run_sweep saves beside the results (and analysis reads back)."""
        return {
            "name": self.spec.name,
            "grid_keys": self.grid_keys,
            "sweep": self.spec.model_dump(mode="json"),
            "trials": [{"label": label, "trial": trial}
                       for label, trial in zip(self.labels, self.trials, strict=True)],
        }


def _sweep_error(error: ValidationError, source: str) -> ConfigError:
    first = error.errors()[0]
    loc = tuple(first["loc"])
    if first["type"] == "extra_forbidden":
        allowed = fields_at(SweepSpec, loc[:-1])
        hint = did_you_mean(str(loc[-1]), allowed)
        path = ".".join(str(part) for part in loc)
        return ConfigError(
            f"{source}: unknown sweep key {path!r}{hint}; allowed here: {', '.join(allowed)}"
        )
    if first["type"] == "missing":
        # The generic message quotes the whole input mapping, e.g. a pasted Ray cluster file.
        path = ".".join(str(part) for part in loc)
        return ConfigError(f"{source}: missing required sweep key {path!r} (see sweeps/*.yaml)")
    return ConfigError(f"{source}: {format_validation_error(error, SweepSpec)}")


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


def _check_all_layers(spec: SweepSpec, overrides: list[str], source: str) -> None:
    """Rule 1 of sweeps/layers.py: every value of every layer, on its own."""
    check_layer(Layer("base", spec.base), source)
    grids = [("grid", spec.grid)]
    for index, experiment in enumerate(spec.experiments):
        check_layer(Layer(f"experiments[{index}].config", experiment.config), source)
        try:
            _check_axes(experiment.grid)
        except ValueError as error:
            raise ConfigError(f"{source}: experiments[{index}].grid: {error}") from None
        grids.append((f"experiments[{index}].grid", experiment.grid))
    for name, grid in grids:
        for key, values in grid.items():
            for value in values:
                check_layer(Layer(f"{name} {key}", nested(key, value)), source)
    if overrides:
        check_layer(Layer("--set", overrides_layer(overrides)), source)


def _validate_spec(raw: dict[str, Any], source: str) -> SweepSpec:
    try:
        return SweepSpec.model_validate(raw)
    except ValidationError as error:
        raise _sweep_error(error, source) from None


def plan_sweep(
    raw: dict[str, Any],
    source: str,
    overrides: list[str] | None = None,
    smoke: bool = False,
    launch_dir: Path | None = None,
    sweep_dir: Path | None = None,
) -> SweepPlan:
    """Validate a sweep mapping and expand it into trials; ConfigError (one line) if invalid.

    Its `plugins` (files relative to `sweep_dir`, default `launch_dir`) and the installed
    packages' plug-ins are imported first, so that the trials can name what they register;
    PluginError (one line) if one fails.

    `overrides` are dotted `key=value` settings: keys naming a sweep field (`name`,
    `resources.gpu`, `max_failures`, ...) change the sweep; all others change every trial,
    after the base, experiment and grid values. The file is validated as written first, then
    again with `overrides` and `smoke` applied (see sweeps/layers.py for every rule).
    """
    overrides = list(overrides or [])
    sweep_fields = set(SweepSpec.model_fields)
    sweep_overrides = [o for o in overrides if o.split(".", 1)[0].split("=", 1)[0] in sweep_fields]
    user_overrides = [o for o in overrides if o not in sweep_overrides]
    spec = _validate_spec(raw, source)
    if sweep_overrides:
        spec = _validate_spec(apply_overrides(raw, sweep_overrides), f"{source} (with --set)")
    launch_dir = launch_dir or Path.cwd()
    plugins = _import_plugins(spec, source, sweep_dir or launch_dir, launch_dir)
    _check_all_layers(spec, user_overrides, source)

    points = [
        _Point(index, experiment, point)
        for index, experiment in enumerate(spec.experiments)
        for point in _grid_points({**spec.grid, **experiment.grid})
    ]
    written_use = SharedFieldUse()
    for point in points:
        point.written = compose_trial(point.layers(spec), point.context(source), written_use)
    written_use.check(source)
    configs = [point.written for point in points]
    if user_overrides or smoke:
        epochs = max(METHODS.get(c.method).smoke_epochs(c) for c in configs) if smoke else 0
        applied = [name for name, on in (("--set", user_overrides), ("--smoke", smoke)) if on]
        note = f" (with {' and '.join(applied)})"
        use = SharedFieldUse()
        configs = []
        for point in points:
            layers = point.layers(spec) + [Layer("--set", overrides_layer(user_overrides))]
            if smoke:
                layers.append(Layer("--smoke", smoke_layer(point.written, epochs)))
            configs.append(compose_trial(layers, point.context(source, note), use))
        use.check(source)

    trials, labels, seen = [], [], set()
    for point, config in zip(points, configs, strict=True):
        resolved = _absolute_paths(config.model_dump(mode="json"), launch_dir)
        if resolved["train"]["device"] == "cuda" and spec.resources.gpu == 0:
            raise ConfigError(
                f"{point.context(source)}: train.device is 'cuda' but resources.gpu is 0; Ray "
                "gives a trial no GPU unless resources.gpu asks for one"
            )
        check_data_workers(config.data, spec.resources.cpu, point.context(source))
        key = trial_key(config)  # paths, made absolute in `resolved`, are not in it
        if key in seen:
            continue  # the same trial from two grid points runs once
        seen.add(key)
        trials.append(resolved)
        labels.append(point.experiment.label or config.method)
    for control in spec.controls:  # after the experiments: their labels name the controls
        for point, config in zip(points, configs, strict=True):
            label = point.experiment.label or config.method
            raw = CONTROL_TRIALS[control](config, label)
            if raw is None:
                continue
            trial = parse_trial_config(raw, source=f"{point.context(source)} (controls: "
                                       f"{control})")
            key = trial_key(trial)
            if key not in seen:
                seen.add(key)
                trials.append(_absolute_paths(trial.model_dump(mode="json"), launch_dir))
                labels.append(f"{label}_budget")
    if spec.share_dense:
        _share_dense_models(trials)
    # Dense first, so that the others find their seed's dense model in the cache; long trials
    # before short ones, so that no long trial is left running alone at the end.
    order = sorted(range(len(trials)), key=lambda i: METHODS.get(trials[i]["method"]).sweep_order)
    grid_keys = list(spec.grid)
    for experiment in spec.experiments:
        grid_keys += [key for key in experiment.grid if key not in grid_keys]
    return SweepPlan(spec=spec, trials=[trials[i] for i in order],
                     labels=[labels[i] for i in order], grid_keys=grid_keys, source=source,
                     plugins=plugins)


def _import_plugins(spec: SweepSpec, source: str, sweep_dir: Path,
                    launch_dir: Path) -> list[Plugin]:
    try:
        load_installed_plugins()
        plugins = resolve_plugins(spec.plugins, sweep_dir, launch_dir)
        import_plugins(plugins)
    except PluginError as error:
        raise PluginError(f"{source}: {error}") from None
    return plugins


def _share_dense_models(trials: list[dict[str, Any]]) -> None:
    """Trials that start from the dense model share it per recipe: one cache entry that keeps
    the weights of every epoch any of them rewinds to."""
    groups: dict[str, set[int]] = {}
    sharing = []
    for trial in trials:
        config = parse_trial_config(trial, check_ignored=False)
        method = METHODS.get(config.method)
        if method.starts_from_dense(config) and not config.dense_model.checkpoint:
            recipe = recipe_hash(config)
            groups.setdefault(recipe, set()).update(
                method.dense_epochs(config) | set(config.dense_model.keep_epochs))
            sharing.append((trial, recipe))
    for trial, recipe in sharing:
        dense = trial["dense_model"]
        dense["cache"] = dense["cache"] or AUTO_DENSE_CACHE
        dense["keep_epochs"] = sorted(groups[recipe])


def shipped_sweeps() -> list[str]:
    """Names of the sweep files shipped in this package (`sweeps/*.yaml`; cluster.yaml is a
    Ray cluster file, not a sweep)."""
    folder = Path(__file__).resolve().parent
    return sorted(p.stem for p in folder.glob("*.yaml") if p.name != "cluster.yaml")


def sweep_path(argument: str) -> Path:
    """The sweep file a command line names: a path, or else the name of a shipped sweep
    (`quickstart` or `quickstart.yaml`); ConfigError naming the shipped ones if neither."""
    path = Path(argument).expanduser()
    if path.exists() or path.parent != Path("."):
        return path
    name = path.name.removesuffix(".yaml")
    if name in shipped_sweeps():
        return Path(__file__).resolve().parent / f"{name}.yaml"
    raise ConfigError(
        f"{argument}: no such file, nor a shipped sweep; shipped: {', '.join(shipped_sweeps())}"
    )


def load_sweep(
    path: str | Path,
    overrides: list[str] | None = None,
    smoke: bool = False,
    launch_dir: Path | None = None,
) -> SweepPlan:
    """Read and expand a sweep file (see `plan_sweep`)."""
    return plan_sweep(read_yaml(path), str(path), overrides, smoke, launch_dir,
                      sweep_dir=Path(path).parent)
