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
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sweeps.loggers import DEFAULT_LOGGERS, check_installed
from trainables.config import (
    apply_overrides,
    did_you_mean,
    fields_at,
    format_validation_error,
    parse_trial_config,
    read_yaml,
)
from trainables.errors import ConfigError

# Relative paths in trial configs are resolved against the launch directory, because Ray runs
# each trial with its own trial directory as working directory.
_PATH_FIELDS = (
    ("data", "root"),
    ("data", "cache_dir"),
    ("model", "weights_path"),
    ("imp", "dense_checkpoint"),
)
# Placeholder run_sweep replaces with <experiment dir>/dense_cache once the output is known.
AUTO_DENSE_CACHE = "<experiment>/dense_cache"
# What --smoke does to every trial: the same grid shape, a few batches per phase.
SMOKE_OVERRIDES = [
    "train.epochs=1",
    "train.max_batches=2",
    "train.max_eval_batches=2",
    "train.warmup_epochs=0",
    "train.lr_milestones=[]",
    "imp.retrain_epochs=1",
    "prune.score_batches=1",
    "prune.synflow_iterations=5",
]


def _smoke_overrides(spec: SweepSpec, user_overrides: list[str]) -> list[str]:
    """SMOKE_OVERRIDES, with enough epochs for the latest `imp.rewind: epoch:K` in the sweep
    (K + 1): the same number for every trial, so dense trials still match IMP's dense recipe."""
    latest = 0
    for experiment in spec.experiments:
        for point in _grid_points({**spec.grid, **experiment.grid}):
            trial = _raw_trial(spec, experiment, point, user_overrides)
            rewind = str((trial.get("imp") or {}).get("rewind", ""))
            if rewind.startswith("epoch:") and rewind[6:].isdigit():
                latest = max(latest, int(rewind[6:]))
    if latest == 0:
        return SMOKE_OVERRIDES
    return [*SMOKE_OVERRIDES, f"train.epochs={latest + 1}", f"imp.retrain_epochs={latest + 1}"]


_METHOD_ORDER = {"dense": 0, "imp": 1, "snip": 2}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Resources(_Strict):
    cpu: float = Field(1.0, gt=0, description="CPUs per trial (torch threads follow it)")
    gpu: float = Field(0.0, ge=0, description="GPUs per trial; fractions pack trials on a GPU")


class Experiment(_Strict):
    label: str | None = Field(None, min_length=1, description="name in plots and trial names")
    config: dict[str, Any] = Field(default_factory=dict, description="TrialConfig fields")
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="dotted key -> values")


class SweepSpec(_Strict):
    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    base: dict[str, Any] = Field(default_factory=dict, description="TrialConfig fields")
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="dotted key -> values")
    experiments: list[Experiment] = Field(default_factory=lambda: [Experiment()], min_length=1)
    resources: Resources = Resources()
    max_concurrent_trials: int | None = Field(None, ge=1)
    max_failures: int = Field(1, ge=0, description="restarts of a crashed trial")
    share_dense: bool = Field(
        True, description="IMP trials reuse the dense model of the same seed and recipe"
    )
    loggers: list[Literal["tensorboard", "csv", "mlflow", "wandb"]] = Field(
        default_factory=lambda: list(DEFAULT_LOGGERS),
        description="experiment tracking through Ray Tune's logger callbacks (JSON always)",
    )

    @field_validator("loggers")
    @classmethod
    def _extras_installed(cls, loggers: list[str]) -> list[str]:
        check_installed(loggers)
        return loggers

    @field_validator("grid")
    @classmethod
    def _non_empty_axes(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        _check_axes(grid)
        return grid


def _check_axes(grid: dict[str, list[Any]]) -> None:
    for key, values in grid.items():
        if not values:
            raise ValueError(f"grid axis {key!r} has no values, so the sweep has no trials")


def _label(experiment: Experiment, trial: dict[str, Any]) -> str:
    if experiment.label:
        return experiment.label
    method = trial.get("method", "dense")
    if method == "snip":
        return trial.get("prune", {}).get("scorer", "snip")
    if method == "imp" and trial.get("imp", {}).get("schedule") == "oneshot":
        return "imp-oneshot"
    return method


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _raw_trial(
    spec: SweepSpec, experiment: Experiment, point: dict[str, Any], overrides: list[str]
) -> dict[str, Any]:
    """One grid point's unvalidated trial mapping: base, then the experiment's config, then the
    point's values, then `overrides`."""
    point_overrides = [_as_override(key, value) for key, value in point.items()]
    return apply_overrides(_deep_merge(spec.base, experiment.config), point_overrides + overrides)


def trial_key(trial: dict[str, Any]) -> str:
    """A trial config's identity (equal configs, equal keys)."""
    return json.dumps(trial, sort_keys=True)


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


def plan_sweep(
    raw: dict[str, Any],
    source: str,
    overrides: list[str] | None = None,
    smoke: bool = False,
    launch_dir: Path | None = None,
) -> SweepPlan:
    """Validate a sweep mapping and expand it into trials; ConfigError (one line) if invalid.

    `overrides` are dotted `key=value` settings: keys naming a sweep field (`name`,
    `resources.gpu`, `max_failures`, ...) change the sweep; all others change every trial,
    after the base, experiment and grid values.
    """
    overrides = list(overrides or [])
    sweep_fields = set(SweepSpec.model_fields)
    sweep_overrides = [o for o in overrides if o.split(".", 1)[0].split("=", 1)[0] in sweep_fields]
    user_overrides = [o for o in overrides if o not in sweep_overrides]
    raw = apply_overrides(raw, sweep_overrides)
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as error:
        raise _sweep_error(error, source) from None
    launch_dir = launch_dir or Path.cwd()

    smoke_overrides = _smoke_overrides(spec, user_overrides) if smoke else []
    trials: list[dict[str, Any]] = []
    labels: list[str] = []
    seen: set[str] = set()
    grid_keys: list[str] = list(spec.grid)
    for index, experiment in enumerate(spec.experiments):
        where = f"experiments[{index}]"
        try:
            _check_axes(experiment.grid)
        except ValueError as error:
            raise ConfigError(f"{source}: {where}.grid: {error}") from None
        grid = {**spec.grid, **experiment.grid}
        grid_keys += [key for key in experiment.grid if key not in grid_keys]
        for point in _grid_points(grid):
            trial = _raw_trial(spec, experiment, point, smoke_overrides + user_overrides)
            point_text = ", ".join(f"{key}={value!r}" for key, value in point.items())
            context = f"{source}: {where}" + (f" at {{{point_text}}}" if point else "")
            config = parse_trial_config(trial, source=context)
            resolved = _absolute_paths(config.model_dump(mode="json"), launch_dir)
            if spec.share_dense and resolved["method"] in ("imp", "dense"):
                resolved["dense_cache"] = resolved.get("dense_cache") or AUTO_DENSE_CACHE
            if resolved["train"]["device"] == "cuda" and spec.resources.gpu == 0:
                raise ConfigError(
                    f"{context}: train.device is 'cuda' but resources.gpu is 0; Ray gives a "
                    "trial no GPU unless resources.gpu asks for one"
                )
            key = trial_key(resolved)
            if key in seen:
                continue  # the same trial from two grid points runs once
            seen.add(key)
            trials.append(resolved)
            labels.append(_label(experiment, resolved))
    if not trials:
        raise ConfigError(f"{source}: the grid expands to zero trials")
    # Dense first, so IMP trials find their seed's dense model in the cache; IMP (the longest
    # trials) before SNIP, so no long trial is left running alone at the end.
    order = sorted(range(len(trials)), key=lambda i: _METHOD_ORDER[trials[i]["method"]])
    trials = [trials[i] for i in order]
    labels = [labels[i] for i in order]
    return SweepPlan(spec=spec, trials=trials, labels=labels, grid_keys=grid_keys, source=source)


def load_sweep(
    path: str | Path,
    overrides: list[str] | None = None,
    smoke: bool = False,
    launch_dir: Path | None = None,
) -> SweepPlan:
    """Read and expand a sweep file (see `plan_sweep`)."""
    return plan_sweep(read_yaml(path), str(path), overrides, smoke, launch_dir)
