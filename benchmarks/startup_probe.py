"""Run one tree's `sweeps/run_sweep.py` in this process, time-stamping its stages (for
`bench_startup.py`; not a tool for users).

    PRUNETUNE_STARTUP_TRACE=FILE python benchmarks/startup_probe.py TREE/sweeps/run_sweep.py ARGS

Nothing in prunetune knows about this probe. In the driver it wraps run_sweep's stage functions
by name (a name a tree lacks is skipped) and `ray.shutdown`; in the trial it replaces the
trainable with `traced_trainable`, which Ray pickles by reference to this module (its folder is
on PYTHONPATH for the workers too) and which stamps its entry and the first epoch row. Events are
JSON lines {"event", "t" (time.time()), "pid"} appended to FILE.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

STAGES = ("main", "prepare", "_check_dense_checkpoints", "_shared_datasets", "_start_ray",
          "_check_cluster", "_write_sweep_files", "_tuner", "_report")


def stamp(event: str, **extra: Any) -> None:
    with open(os.environ["PRUNETUNE_STARTUP_TRACE"], "a") as trace:
        trace.write(json.dumps({"event": event, "t": time.time(), "pid": os.getpid(), **extra})
                    + "\n")


def _timed(name: str, function: Any) -> Any:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        stamp(f"{name} start")
        try:
            return function(*args, **kwargs)
        finally:
            stamp(f"{name} end")

    return wrapper


def traced_trainable(
    config: dict[str, Any], datasets: dict[str, Any] | None = None, **extra: Any
) -> None:
    """The prunetune trainable, stamping its entry and its first reported epoch; `extra` is
    whatever else the tree's run_sweep passes (`methods` since the plug-in methods)."""
    import psutil

    stamp("trainable entered", worker_started=psutil.Process().create_time())
    from trainables import reporting
    from trainables.tune_trainable import prunetune_trainable

    reporter = reporting.TuneReporter
    # Older trees report each epoch row through `epoch`; newer ones batch rows through `report`.
    hook = "epoch" if hasattr(reporter, "epoch") else "report"
    original = getattr(reporter, hook)

    def first_epoch(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        rows = [args[0]] if hook == "epoch" else args[0]
        epochs = [row for row in rows if row.get("row_type", "epoch") == "epoch"]
        if epochs and not getattr(self, "_probe_stamped", False):
            self._probe_stamped = True
            stamp("first epoch reported", epoch_time_s=epochs[0].get("epoch_time_s"))

    setattr(reporter, hook, first_epoch)
    prunetune_trainable(config, datasets, **extra)


def _trace_trial(tuner: Any) -> Any:
    """Wrap run_sweep._tuner: put `traced_trainable` where run_sweep looks the trainable up,
    and time `ray.shutdown` (ray is imported by then; importing it earlier would move its
    import time into another stage)."""

    @functools.wraps(tuner)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import ray
        import startup_probe  # by reference from the workers, not by value from __main__

        import trainables.tune_trainable as module

        startup_probe.traced_trainable.__name__ = module.prunetune_trainable.__name__
        module.prunetune_trainable = startup_probe.traced_trainable
        ray.shutdown = _timed("ray.shutdown", ray.shutdown)
        from ray._private.node import Node  # Ray internals: each process it stops, timed

        kill = Node._kill_process_type

        def timed_kill(node: Any, process_type: str, *rest: Any, **options: Any) -> Any:
            return _timed(f"stop {process_type}", kill)(node, process_type, *rest, **options)

        Node._kill_process_type = timed_kill
        return tuner(*args, **kwargs)

    return wrapper


def main() -> int:
    stamp("probe started")
    run_sweep_path = Path(sys.argv[1]).resolve()
    sys.path.insert(0, str(run_sweep_path.parents[1]))
    run_sweep = importlib.import_module("sweeps.run_sweep")
    stamp("run_sweep imported")
    for name in STAGES:
        if hasattr(run_sweep, name):
            setattr(run_sweep, name, _timed(name, getattr(run_sweep, name)))
    run_sweep._tuner = _trace_trial(run_sweep._tuner)
    sys.argv = [str(run_sweep_path), *sys.argv[2:]]
    if hasattr(run_sweep, "command"):  # the script's own entry point, where it has one
        run_sweep.command()
    return run_sweep.main()


if __name__ == "__main__":
    sys.exit(main())
