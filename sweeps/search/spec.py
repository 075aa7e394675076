"""The `search:` section of a sweep file: which recipe fields Ray Tune searches, how, and on
what it selects. `sweeps/search/units.py` turns it into the units searched; `sweeps/search/stage.py`
runs them.

```yaml
search:
  space:                                   # dotted trial-config field -> distribution
    train.lr: {loguniform: [0.01, 0.5]}
    train.weight_decay: {choice: [0.0, 5.0e-4]}
  samples: 8                               # configurations tried per unit
  searcher: optuna                         # or random (drawn up front, no extra needed)
  scheduler: asha                          # or none
  seeds: [100]                             # disjoint from the final seeds
  per: level                               # or experiment
```
An experiment may carry `search: {space: ..., per: ..., scheduler: ...}` of its own, which
replaces the shared value.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: What a search may select on: validation metrics of the round rows (trainables/schema.py).
#: A test metric is refused: test accuracy never takes part in a choice.
SELECTION_METRICS = ("val_acc",)
DISTRIBUTIONS = ("uniform", "loguniform", "choice", "randint")


class _Section(BaseModel):
    # Not strict: YAML writes a distribution's bounds as a list, which its tuple fields take.
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


class Distribution(_Section):
    """One searched field's distribution: exactly one of its keys."""

    uniform: tuple[float, float] | None = Field(None, description="[low, high], low < high")
    loguniform: tuple[float, float] | None = Field(
        None, description="[low, high], 0 < low < high; uniform in the logarithm")
    choice: list[Any] | None = Field(None, min_length=1, description="values, each equally likely")
    randint: tuple[int, int] | None = Field(None, description="[low, high], both included")

    @model_validator(mode="after")
    def _one_kind(self) -> Distribution:
        given = [name for name in DISTRIBUTIONS if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"a distribution is exactly one of {', '.join(DISTRIBUTIONS)}; "
                             f"got {', '.join(given) or 'none'}")
        kind = given[0]
        if kind == "choice":
            return self
        low, high = getattr(self, kind)
        if not (math.isfinite(low) and math.isfinite(high)) or not low < high:
            raise ValueError(f"{kind}: [{low}, {high}] needs finite bounds with low < high")
        if kind == "loguniform" and low <= 0:
            raise ValueError(f"loguniform: [{low}, {high}] needs 0 < low (a logarithm's range)")
        return self

    @property
    def kind(self) -> str:
        return next(name for name in DISTRIBUTIONS if getattr(self, name) is not None)

    def values_to_check(self) -> list[Any]:
        """Values that stand for the whole distribution when the config validates it: the
        bounds, or every choice."""
        if self.choice is not None:
            return list(self.choice)
        low, high = getattr(self, self.kind)
        return [low, high]

    def tune_domain(self) -> Any:
        """The distribution as a Ray Tune search-space domain."""
        from ray import tune

        if self.uniform is not None:
            return tune.uniform(*self.uniform)
        if self.loguniform is not None:
            return tune.loguniform(*self.loguniform)
        if self.randint is not None:
            return tune.randint(self.randint[0], self.randint[1] + 1)  # Tune's high is excluded
        return tune.choice(list(self.choice or []))

    def as_json(self) -> dict[str, Any]:
        value = getattr(self, self.kind)
        return {self.kind: list(value)}


Space = dict[str, Distribution]


def dotted_space(space: Any) -> Any:
    """`space` with nested sections written as dotted keys: `{train: {lr: {loguniform: ...}}}`
    (as YAML may nest it, and as `--set search.space.train.lr.loguniform=[...]` writes it) is
    `{"train.lr": {loguniform: ...}}`. A mapping holding a distribution's key is a distribution;
    a later entry for the same field replaces an earlier one."""
    if not isinstance(space, dict):
        return space
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value and not set(value) & set(DISTRIBUTIONS):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            flat.pop(prefix, None)
            flat[prefix] = value

    for key, value in space.items():
        walk(str(key), value)
    return flat


class ExperimentSearch(_Section):
    """An experiment's own `search:`: what it changes of the shared section."""

    space: Space | None = Field(None, description="replaces the shared space for this experiment")

    @field_validator("space", mode="before")
    @classmethod
    def _dotted(cls, space: Any) -> Any:
        return dotted_space(space)
    per: Literal["level", "experiment"] | None = Field(
        None, description="replaces the shared `per` for this experiment")
    scheduler: Literal["asha", "none"] | None = Field(
        None, description="replaces the shared `scheduler` for this experiment (none: where "
        "early validation accuracy misleads, as at high sparsity)")


class SearchSpec(_Section):
    space: Space = Field(default_factory=dict, description="dotted config field -> distribution")
    samples: int = Field(8, ge=1, description="configurations tried per unit")
    searcher: Literal["optuna", "random"] = Field(
        "optuna", description="optuna: Ray Tune's OptunaSearch (TPE; `pip install "
        "prunetune[search]`); random: configurations drawn up front from a seeded generator")
    scheduler: Literal["asha", "none"] = Field(
        "asha", description="asha: stop search trials behind at a rung (validation accuracy); "
        "none: every sample runs to the end")
    metric: str = Field("val_acc", description="the validation metric selection maximises")
    seeds: list[int] = Field(default_factory=lambda: [100], min_length=1,
                             description="seeds of the search trials, disjoint from the grid's")
    per: Literal["level", "experiment"] = Field(
        "level", description="one search per (experiment, sparsity level), or per experiment")
    grace_rows: int = Field(
        1, ge=1, description="ASHA's first rung, in the trial's rows (one per epoch and round)")
    reduction_factor: float = Field(2.0, gt=1, description="ASHA keeps 1/reduction_factor "
                                    "of the trials at each rung")

    @field_validator("space", mode="before")
    @classmethod
    def _dotted(cls, space: Any) -> Any:
        return dotted_space(space)

    @field_validator("metric")
    @classmethod
    def _validation_metric(cls, metric: str) -> str:
        if metric not in SELECTION_METRICS:
            test = " (a test metric: selecting on it would leak the test set into the recipe)" \
                if metric.startswith("test") else ""
            raise ValueError(f"search.metric {metric!r}{test}; selection uses one of: "
                             f"{', '.join(SELECTION_METRICS)}")
        return metric

    @field_validator("searcher")
    @classmethod
    def _searcher_installed(cls, searcher: str) -> str:
        import importlib.util

        if searcher == "optuna" and importlib.util.find_spec("optuna") is None:
            raise ValueError("searcher: optuna needs Optuna, which is not installed: pip install "
                             "'prunetune[search]' (or -e '.[search]' in a checkout), or use "
                             "searcher: random")
        return searcher

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"search.seeds {seeds} repeats a seed")
        return seeds

    def space_for(self, experiment: ExperimentSearch | None) -> Space:
        if experiment is not None and experiment.space is not None:
            return experiment.space
        return self.space

    def per_for(self, experiment: ExperimentSearch | None) -> str:
        if experiment is not None and experiment.per is not None:
            return experiment.per
        return self.per

    def scheduler_for(self, experiment: ExperimentSearch | None) -> str:
        if experiment is not None and experiment.scheduler is not None:
            return experiment.scheduler
        return self.scheduler

    def settings(self) -> dict[str, Any]:
        """What decides a unit's selection besides its space (compared on a rerun)."""
        return {"samples": self.samples, "searcher": self.searcher,
                "scheduler": self.scheduler, "metric": self.metric, "seeds": list(self.seeds),
                "grace_rows": self.grace_rows, "reduction_factor": self.reduction_factor}


def space_json(space: Space) -> dict[str, Any]:
    return {key: distribution.as_json() for key, distribution in sorted(space.items())}
