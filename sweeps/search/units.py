"""What a sweep's `search:` section searches: its units, each checked before Ray starts.

A unit is one search: an experiment at one sparsity level (`per: level`), or an experiment as a
whole (`per: experiment`). Its search trials are the unit's trial at each search seed with a
sampled value for every searched field; the final trials of the unit (the grid's seeds) then
run on the values the search selected.

A method whose levels are the rounds of one trial (iterative IMP, iterative channels: its rows'
`level_by` is `round`) has no trial per level, so it is searched `per: experiment`; it is refused
with `per: level`. A method whose levels are separate trials (SNIP at three target sparsities)
searched `per: experiment` would need each sample run at every level: refused too, with a hint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from pydantic import BaseModel

from sweeps.layers import Layer, SharedFieldUse, compose_trial, nested
from sweeps.search.spec import SearchSpec, Space, space_json
from trainables.config import TrialConfig
from trainables.errors import ConfigError
from trainables.identity import EXECUTION_ROLE, digest, field_role, identity_values
from trainables.methods import METHODS


@dataclass(frozen=True)
class SearchUnit:
    """One search: `template` is the unit's first final trial (the recipe the search changes)."""

    name: str
    label: str
    experiment: int
    per: str
    space: Space
    template: TrialConfig
    scheduler: str = "none"  # asha or none: the experiment's own, else the sweep's

    @property
    def rows_per_trial(self) -> int:
        """Rows a search trial reports when it runs to the end: one per epoch, one per round
        (ASHA's clock is Tune's count of them, `training_iteration`)."""
        method = METHODS.get(self.template.method)
        return method.training_epochs(self.template) + method.round_checkpoints(self.template)

    def fingerprint(self, spec: SearchSpec) -> dict[str, Any]:
        """Everything that decides the unit's selection: compared when a sweep is run again."""
        recipe = json_without_seed(self.template)
        return {"space": space_json(self.space), **spec.settings(),
                "scheduler": self.scheduler, "recipe": digest(recipe)}


def json_without_seed(config: TrialConfig) -> dict[str, Any]:
    """The trial's identity (`trial_key`'s values) with its seed left out: what makes two
    levels one."""
    return {**identity_values(config), "seed": None}


@dataclass(frozen=True)
class UnitPoint:
    """What the planner knows of one grid point: its experiment, label and trial configs as
    written (for the unit's name) and as run (--set and --smoke applied)."""

    experiment: int
    label: str
    written: TrialConfig
    config: TrialConfig
    grid_keys: frozenset[str]
    layers: tuple[Layer, ...]
    context: str


def unit_name(label: str, written: TrialConfig, per: str) -> str:
    """`label` for `per: experiment`, else the label and the level's name parts (`snip_sp0.96`)."""
    if per == "experiment":
        return label
    return "_".join([label, *METHODS.get(written.method).name_parts(written)])


def _level_key(config: TrialConfig) -> str:
    return digest(json_without_seed(config))


def point_units(spec: SearchSpec, experiments_search: Sequence[Any],
                points: Sequence[UnitPoint]) -> list[str | None]:
    """The unit name of each point (None: its experiment searches nothing), made unique where
    two levels would share a name."""
    names: list[str | None] = []
    levels: dict[str, set[str]] = {}
    for point in points:
        own = experiments_search[point.experiment]
        if not spec.space_for(own):
            names.append(None)
            continue
        per = spec.per_for(own)
        name = unit_name(point.label, point.written, per)
        names.append(name)
        if per == "level":
            levels.setdefault(name, set()).add(_level_key(point.written))
    clashing = {name for name, keys in levels.items() if len(keys) > 1}
    return [
        f"{name}_{_level_key(point.written)[:6]}" if name in clashing else name
        for name, point in zip(names, points, strict=True)
    ]


def build_units(spec: SearchSpec, experiments_search: Sequence[Any], points: Sequence[UnitPoint],
                final_seeds: set[int], source: str, smoke: bool = False
                ) -> tuple[list[SearchUnit], list[str | None], list[str]]:
    """The units of a sweep, each point's unit, and notes; ConfigError (one line) for a search
    that cannot be run as written. With `smoke`, a unit whose trials leave ASHA no rung runs
    without it (and a note says so) rather than being refused."""
    overlap = sorted(final_seeds & set(spec.seeds))
    if overlap:
        raise ConfigError(
            f"{source}: search.seeds {overlap} are also final seeds; the final trials must be "
            "fresh seeds the search never saw: choose search seeds outside "
            f"{sorted(final_seeds)}")
    names = point_units(spec, experiments_search, points)
    units: dict[str, SearchUnit] = {}
    levels_of: dict[str, set[str]] = {}
    notes: list[str] = []
    for point, name in zip(points, names, strict=True):
        if name is None:
            continue
        levels_of.setdefault(name, set()).add(_level_key(point.config))
        if name in units:
            continue
        own = experiments_search[point.experiment]
        unit = SearchUnit(name, point.label, point.experiment, spec.per_for(own),
                          spec.space_for(own), point.config, spec.scheduler_for(own))
        if smoke and unit.scheduler == "asha" and not asha_leaves_room(unit, spec):
            unit = replace(unit, scheduler="none")
            notes.append(f"--smoke: unit {name}'s trials are too short for ASHA to stop any; "
                         "its search runs every sample to the end")
        _check_unit(unit, spec, point, source)
        units[name] = unit
    for name, keys in levels_of.items():
        unit = units[name]
        if unit.per == "experiment" and len(keys) > 1:
            raise ConfigError(
                f"{source}: experiments[{unit.experiment}] ({unit.label}) has {len(keys)} levels "
                "that are separate trials; `per: experiment` would need every sample run at "
                "each of them: use search.per: level (one search per level)")
    return list(units.values()), names, notes


def _check_unit(unit: SearchUnit, spec: SearchSpec, point: UnitPoint, source: str) -> None:
    where = f"{source}: experiments[{unit.experiment}].search"
    method = METHODS.get(unit.template.method)
    if unit.per == "level" and method.row_tags(unit.template)["level_by"] == "round":
        raise ConfigError(
            f"{where}: per: level, but {unit.template.method}'s levels are the rounds of one "
            f"trial, not separate trials; set `search: {{per: experiment}}` on experiments"
            f"[{unit.experiment}] (its sample's score is then its last round's validation "
            "accuracy)")
    for key, distribution in unit.space.items():
        if key == "seed":
            raise ConfigError(f"{where}: space searches 'seed'; seeds are set by search.seeds "
                              "and the grid, not selected")
        if key in point.grid_keys:
            raise ConfigError(f"{where}: space field {key!r} is also a grid axis; a field is "
                              "either swept or searched, not both")
        for value in distribution.values_to_check():
            layer = Layer("search.space", nested(key, value))
            compose_trial([*point.layers, layer], f"{where}.space {key}={value!r}",
                          SharedFieldUse())
        _check_decides_result(unit.template, key, where)
    if unit.scheduler == "asha" and not asha_leaves_room(unit, spec):
        raise ConfigError(
            f"{where}: scheduler: asha, but a search trial reports {unit.rows_per_trial} "
            f"rows (epochs and rounds) and ASHA's first rung is row {spec.grace_rows}: "
            "there is no epoch left to save; train longer, or use scheduler: none")


def asha_last_rung(unit: SearchUnit) -> int:
    """The last row at which ASHA may stop a trial (its `max_t`): one before the trial's last
    epoch row, so that a stop always saves at least an epoch."""
    return unit.rows_per_trial - 2


def asha_leaves_room(unit: SearchUnit, spec: SearchSpec) -> bool:
    return asha_last_rung(unit) >= spec.grace_rows


def _check_decides_result(config: TrialConfig, key: str, where: str) -> None:
    parent: Any = config
    *path, last = key.split(".")
    for part in path:
        parent = getattr(parent, part, None)
    if isinstance(parent, BaseModel) and last in type(parent).model_fields and \
            field_role(type(parent), last) == EXECUTION_ROLE:
        raise ConfigError(f"{where}: space field {key!r} decides how a trial runs, not its "
                          "result; search only fields that change the trained model")
