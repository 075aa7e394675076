"""Readable trial (and TensorBoard run) names for Ray Tune's name creators.

Tune pickles the name creators into every trial of its experiment state, with cloudpickle,
which copies whatever the driver script itself defines (run_sweep.py runs as `__main__`). So
the namer lives in this importable module, pickled by reference, and holds nothing itself: the
names are this module's, set for the driver's plan. A namer carrying every trial's config in
every trial made that state grow with the square of the trials (67 KB a trial in the
24-trial quickstart; gigabytes at a thousand).
"""

from __future__ import annotations

from typing import Any

from sweeps.plan import SweepPlan, config_text

#: The readable names of the planned trials of the sweep this driver runs, by config text.
_NAMES: dict[str, str] = {}


class TrialNamer:
    """The planned trials' names, found by the config Ray hands over (`PlannedTrial.raw`)."""

    def __init__(self, plan: SweepPlan) -> None:
        _NAMES.clear()
        _NAMES.update({config_text(trial.raw): trial.name for trial in plan.trials})

    def name(self, trial: Any) -> str:
        return _NAMES[config_text(trial.config.get("trial", {}))]

    def dirname(self, trial: Any) -> str:
        return f"{self.name(trial)}_{trial.trial_id}"
