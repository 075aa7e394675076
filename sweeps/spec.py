"""The sweep file: a base trial config, experiments (method variants) and a grid, with the
resources each trial gets. This module is its schema; `sweeps/plan.py` expands it into trials.

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

from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from sweeps.controls import CONTROLS
from sweeps.loggers import DEFAULT_LOGGERS, LOGGERS, check_installed
from sweeps.search.spec import ExperimentSearch, SearchSpec
from trainables.config import did_you_mean, fields_at, format_validation_error, names_in
from trainables.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Resources(_Strict):
    workers: int = Field(
        1, ge=1, description="data-parallel workers per trial (Ray Train, on one node or "
        "across nodes); with more than 1, cpu and gpu are per worker and train.batch_size is "
        "the global batch (docs/gpu.md)")
    cpu: float = Field(1.0, gt=0, description="CPUs per trial, or per worker with workers > 1 "
                       "(torch threads follow it)")
    gpu: float = Field(0.0, ge=0, description="GPUs per trial, or per worker with workers > 1; "
                       "at most 1, and fractions pack trials on a GPU")

    @field_validator("gpu")
    @classmethod
    def _one_gpu_at_most(cls, gpu: float) -> float:
        # Ray refuses fractions above 1 (1.5) inside tuner.fit; a whole number above 1 would
        # reserve GPUs a process never uses, since each worker trains on one device.
        if gpu > 1:
            whole = "" if gpu.is_integer() else "; Ray accepts fractions only below 1, and "
            raise ValueError(
                f"{gpu:g} GPUs per trial{whole or ': '}each trial process trains on one GPU; "
                f"for {gpu:g} GPUs per trial set workers: {int(gpu) if whole == '' else 2} and "
                "gpu: 1 (data-parallel workers), or use a fraction such as 0.5 to pack trials"
            )
        return gpu

    @model_validator(mode="after")
    def _whole_gpus_for_workers(self) -> Resources:
        # NCCL refuses two ranks of one process group on the same GPU.
        if self.workers > 1 and 0 < self.gpu < 1:
            raise ValueError(f"gpu: {self.gpu:g} with workers: {self.workers}: data-parallel "
                             "workers need a whole GPU each (NCCL runs one rank per GPU)")
        return self

    @property
    def data_parallel(self) -> bool:
        return self.workers > 1

    @property
    def cpus_per_trial(self) -> float:
        return self.cpu * self.workers

    @property
    def gpus_per_trial(self) -> float:
        return self.gpu * self.workers


class Experiment(_Strict):
    label: str | None = Field(None, min_length=1, description="name in plots and trial names")
    config: dict[str, Any] = Field(default_factory=dict, description="TrialConfig fields")
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="dotted key -> values")
    search: ExperimentSearch | None = Field(
        None, description="this experiment's own search space or `per` (see `search`)")


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
    controls: list[str] = Field(
        default_factory=list,
        description="extra trials reviewers ask for: budget_matched_dense = for each experiment "
        "that trains longer than dense (IMP, channels), dense trained for its total epochs",
        json_schema_extra=names_in("control"),
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
        description="experiment tracking: tensorboard (prunetune's events: named curves per epoch "
        "and round, a HParams session per trial), csv, mlflow, wandb, ray_tensorboard (Ray Tune's "
        "raw dump); Ray's JSON logger always",
        json_schema_extra=names_in("logger"),
    )

    search: SearchSpec | None = Field(
        None, description="tune each experiment's recipe on validation accuracy before the "
        "grid's seeds run on the chosen one (docs/sweeps.md, 'Tuned recipes')",
    )

    @model_validator(mode="after")
    def _search_where_declared(self) -> SweepSpec:
        for index, experiment in enumerate(self.experiments):
            if experiment.search is not None and self.search is None:
                raise ValueError(f"experiments[{index}].search needs the sweep's own `search:` "
                                 "section (samples, seeds, ...)")
        return self

    @field_validator("loggers")
    @classmethod
    def _extras_installed(cls, loggers: list[str]) -> list[str]:
        for logger in loggers:
            LOGGERS.check(logger)
        check_installed(loggers)
        return loggers

    @field_validator("controls")
    @classmethod
    def _registered_controls(cls, controls: list[str]) -> list[str]:
        for control in controls:
            CONTROLS.check(control)
        return controls

    @field_validator("grid")
    @classmethod
    def _non_empty_axes(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        _check_axes(grid)
        return grid


def _check_axes(grid: dict[str, list[Any]]) -> None:
    for key, values in grid.items():
        if not values:
            raise ValueError(f"grid axis {key!r} has no values, so the sweep has no trials")


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


def validate_spec(raw: dict[str, Any], source: str) -> SweepSpec:
    """`raw` as a SweepSpec; ConfigError (one line naming the key) if it is not one."""
    try:
        return SweepSpec.model_validate(raw)
    except ValidationError as error:
        raise _sweep_error(error, source) from None


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
