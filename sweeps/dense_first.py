"""Dependency-aware trial order: a trial that starts from its seed's dense model is not started
(holds no CPU or GPU) while another trial of the sweep is training that model.

Trials of one seed and recipe share one dense model (`trainables/methods/dense_model.py`): the
first to need it trains it, the others load it. Started together, the others would block on the
cache's file lock for the whole dense run with their resources reserved. `DenseFirst` is Tune's
grid generator with a hold: of the trials that need one cache entry, the first is released as its
producer and the rest are held back until the producer reports a round (its round 0 is reported
only once the entry is written), or ends without one (then the next held trial takes its place).
Trials that need nothing, or an entry already written, start in grid order meanwhile.

The entries each planned trial needs are this module's, set for the driver's plan
(`plan_entries`): Tune pickles the generator into its state files, which stay small.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.tune.search import BasicVariantGenerator

from sweeps.plan import PlannedTrial, config_text
from trainables.checkpoints import has_checkpoint
from trainables.methods.dense_model import cache_entry

#: config text of a planned trial -> the dense cache entry it starts from (absent: none).
_ENTRIES: dict[str, str] = {}
#: Whether entries can be looked for on disk here (not for a cloud URI experiment).
_LOCAL = [True]


def plan_entries(trials: list[PlannedTrial], local: bool) -> int:
    """Set the entries of the sweep this driver runs; returns how many trials need one."""
    _ENTRIES.clear()
    for trial in trials:
        entry = cache_entry(trial.config)
        if entry is not None:
            _ENTRIES[config_text(trial.raw)] = str(entry)
    _LOCAL[0] = local
    return len(_ENTRIES)


def entry_of(trial: Any) -> str | None:
    """The dense cache entry a Tune trial starts from (None: it needs none)."""
    return _ENTRIES.get(config_text(trial.config.get("trial", {})))


def is_round_row(result: dict[str, Any]) -> bool:
    """A round's row: a trial reports round 0 of a shared dense model after writing it."""
    return result.get("row_type") == "round" or int(result.get("round", 0) or 0) >= 1


class DenseFirst(BasicVariantGenerator):
    """Tune's grid generator that holds back trials whose dense model another trial trains."""

    def __init__(self, max_concurrent: int = 0) -> None:
        super().__init__(max_concurrent=max_concurrent)
        # Tune trials made but not handed to Tune yet, in grid order, with their entries (looked
        # up once: Tune asks for a trial at every step of its loop).
        self._held: list[tuple[Any, str]] = []
        self._producing: dict[str, str] = {}  # trial id -> entry it trains
        self._ready: set[str] = set()  # entries written

    @property
    def held(self) -> int:
        return len(self._held)

    def is_finished(self) -> bool:
        return self._finished and not self._held

    def next_trial(self) -> Any:
        if self.max_concurrent > 0 and len(self._live_trials) >= self.max_concurrent:
            return None
        for trial, entry in self._held:
            if self._may_start(entry):
                self._held.remove((trial, entry))
                return self._start(trial, entry)
        while True:
            trial = super().next_trial()
            if trial is None:
                break
            entry = entry_of(trial)
            if self._may_start(entry):
                return self._start(trial, entry)
            self._live_trials.discard(trial.trial_id)
            self._held.append((trial, entry))
        if self._held and not self._live_trials:
            # Nothing runs that could release them (a state restored without its producer).
            trial, entry = self._held.pop(0)
            self._producing = {key: held for key, held in self._producing.items()
                               if held != entry}
            return self._start(trial, entry)
        return None

    def _may_start(self, entry: str | None) -> bool:
        if entry is None or entry in self._ready:
            return True
        if entry in self._producing.values():
            return False
        if _LOCAL[0] and has_checkpoint(Path(entry)):  # written by an earlier run
            self._ready.add(entry)
        return True  # it reuses the entry, or trains it as the producer

    def _start(self, trial: Any, entry: str | None) -> Any:
        if entry is not None and entry not in self._ready:
            self._producing[trial.trial_id] = entry
        self._live_trials.add(trial.trial_id)
        return trial

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        entry = self._producing.get(trial_id)
        if entry is not None and is_round_row(result):
            self._ready.add(entry)
            del self._producing[trial_id]

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        super().on_trial_complete(trial_id, result, error)
        # A producer that ended without a round frees its entry: the next trial that needs it
        # finds it written, or trains it.
        self._producing.pop(trial_id, None)
