"""Freeing what a data-parallel trial's Ray Train workers reserved when Ray Tune ends the trial.

Ray Train (2.60) reserves its workers' CPUs and GPUs in a placement group that its controller
removes when training ends. When Tune stops or fails the trial instead (a scheduler's stop, an
error), the controller dies with the trial and a detached cleaner actor is meant to remove the
group; but the cleaner asks Ray's State API whether the controller lives, and that API needs
Ray's dashboard, which a sweep's local Ray runs without (and `ray[tune]` does not install).
The group then kept its CPUs reserved until Ray shut down (tests/test_data_parallel.py).

So rank 0 records its placement group in the trial directory
(`trainables.data_parallel.record_worker_group`), and the
sweep's `FreeWorkerGroups` callback removes that group whenever Tune ends or restarts the trial.
"""

from __future__ import annotations

from typing import Any

from ray.tune import Callback

from trainables.data_parallel import WORKER_GROUP_FILE


def free_worker_group(filesystem: Any, trial_path: str) -> bool:
    """Remove the placement group a trial's file names, unless Ray removed it already; True
    when one was removed."""
    import json

    from trainables.ray_adapter import remove_placement_group_by_id

    try:
        with filesystem.open_input_stream(f"{trial_path}/{WORKER_GROUP_FILE}") as stream:
            group = json.loads(stream.read())["placement_group"]
    except (OSError, ValueError, KeyError):
        return False
    return remove_placement_group_by_id(group)


class FreeWorkerGroups(Callback):
    """Removes a data-parallel trial's worker group when Tune ends, fails or restarts it."""

    def _free(self, trial: Any) -> None:
        storage = trial.storage
        if free_worker_group(storage.storage_filesystem, storage.trial_fs_path):
            print(f"run_sweep: freed the workers of stopped trial {trial}", flush=True)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._free(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._free(trial)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._free(trial)
